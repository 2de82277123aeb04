"""`segmenter local up|down|status|run`: the local Kafka broker and Redis."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from model.errors import SegmenterError
from segmenter import local as services
from streams.runtime.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
SERVICE_CHOICE = click.Choice(services.SERVICES)


def service_options(func: F) -> F:
    """Flags shared by every `local` subcommand; each overrides its SEGMENTER_* variable."""
    options = [
        click.option(
            "--kafka-port", type=int, help="Local broker port [SEGMENTER_KAFKA_PORT; 9092]."
        ),
        click.option(
            "--kafka-controller-port",
            type=int,
            help="Local KRaft controller port [SEGMENTER_KAFKA_CONTROLLER_PORT; kafka port + 1].",
        ),
        click.option(
            "--redis-port", type=int, help="Local Redis port [SEGMENTER_REDIS_PORT; 6379]."
        ),
        click.option(
            "--state-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where data, logs and pid files live [SEGMENTER_STATE_DIR; ./.state].",
        ),
        click.option(
            "--timeout",
            "startup_timeout",
            type=float,
            help="Seconds to wait for a service to start [SEGMENTER_STARTUP_TIMEOUT; 90].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_settings(**flags: Any) -> Settings:
    try:
        return Settings.from_env(**flags)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def local() -> None:
    """Run a local Apache Kafka broker and Redis for development, tests and the demo.

    Kafka's jars are fetched once with Maven into ~/.m2 (deploy/local/pom.xml); Debian's
    redis-server is installed when missing (as root). With SEGMENTER_KAFKA_BOOTSTRAP or
    SEGMENTER_REDIS_URL set, that service is external and nothing local is started for it.
    """
    # Probing a broker that is not up yet is expected here; aiokafka would log each attempt.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@local.command()
@click.argument("names", nargs=-1, type=SERVICE_CHOICE)
@service_options
def up(names: tuple[str, ...], **flags: Any) -> None:
    """Start Kafka and Redis (or only NAMES) unless they already run; wait until they answer."""
    settings = build_settings(**flags)
    try:
        started = services.up(settings, names or services.SERVICES)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    for status in started:
        click.echo(status.describe())


@local.command()
@click.argument("names", nargs=-1, type=SERVICE_CHOICE)
@service_options
def down(names: tuple[str, ...], **flags: Any) -> None:
    """Stop Kafka and Redis (or only NAMES), but only the ones this project started."""
    settings = build_settings(**flags)
    stopped = services.down(settings, names or services.SERVICES)
    for name in names or services.SERVICES:
        click.echo(f"{name}: {'stopped' if name in stopped else 'nothing of ours to stop'}")


@local.command()
@service_options
def status(**flags: Any) -> None:
    """Tell what runs, on which ports, which versions, and who started it."""
    settings = build_settings(**flags)
    for state in services.status(settings):
        click.echo(state.describe())
    click.echo(f"state folder: {settings.state_dir}")


@local.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@service_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], **flags: Any) -> None:
    """Start the services, run COMMAND with SEGMENTER_KAFKA_BOOTSTRAP and SEGMENTER_REDIS_URL
    exported, then stop the services this call started. Exits with COMMAND's exit code.

    Example: segmenter local run -- pytest -x
    """
    settings = build_settings(**flags)
    env = {**os.environ, **services.client_env(settings)}
    try:
        with services.running_services(settings) as started:
            for state in started:
                click.echo(state.describe())
            click.echo(f"$ {' '.join(command)}", err=True)
            code = _run_child(list(command), env)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def _run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run a child in the foreground; Ctrl-C reaches it (same process group) and we wait."""
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        raise click.ClickException(f"cannot run {argv[0]!r}: {exc}") from exc
    interrupts = 0
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # The child got the same SIGINT: let it finish, then clean up. A second Ctrl-C
            # terminates it, a third kills it.
            interrupts += 1
            if interrupts == 2:
                child.terminate()
            elif interrupts > 2:
                child.kill()
