"""`segmenter webhooks ...`: POST matching segment changes to HTTP endpoints."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click

from connectors.common import (
    SEGMENT_CHANGES,
    WEBHOOK_DEAD_LETTERS,
    ensure_topics,
    install_stop_signals,
    run_command,
    settings_from_flags,
    settings_options,
    setup_logging,
    start_metrics_server,
)
from connectors.webhooks import ConnectorsConfig, load_connectors_config, run_webhooks
from model.errors import ConnectorConfigError
from streams.runtime.metrics import Metrics

log = logging.getLogger(__name__)

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar="SEGMENTER_CONNECTORS", default="connectors.yaml", show_default=True,
    help="The connectors file (YAML) listing the endpoints [SEGMENTER_CONNECTORS].")


def _load(path: Path) -> ConnectorsConfig:
    try:
        return load_connectors_config(path)
    except ConnectorConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


@click.group()
def webhooks() -> None:
    """Deliver segment changes to HTTP endpoints (signed, retried, ordered per customer)."""


@webhooks.command()
@config_option
def check(config_path: Path) -> None:
    """Check the connectors file: print each endpoint, or every problem (exit 1)."""
    config = _load(config_path)
    if not config.webhooks:
        click.echo(f"{config_path}: OK, no webhooks")
        return
    for ep in config.webhooks:
        segments = ", ".join(sorted(ep.segments)) or "all"
        groups = ", ".join(sorted(ep.groups))
        scope = f"segments {segments}" + (f", groups {groups}" if groups else "")
        click.echo(f"{ep.name}: {ep.safe_url} ({scope}; on {', '.join(sorted(ep.on))}; "
                   f"timeout {ep.timeout:g} s, {ep.max_attempts} attempts, "
                   f"TLS verification {'on' if ep.verify_tls else 'OFF'})")


@webhooks.command()
@settings_options
@config_option
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Serve Prometheus metrics on this port, on SEGMENTER_WEB_BIND (0: off).")
def run(config_path: Path, metrics_port: int, **flags: Any) -> None:
    """Deliver matching changes until Ctrl-C / SIGTERM.

    Each endpoint reads `<prefix>segment-changes` in its own consumer group
    (`<prefix>segmenter-webhooks.<name>`); changes that fail every attempt go to
    `<prefix>segmenter-webhook-dead-letters`."""
    settings = settings_from_flags(flags)
    setup_logging(settings.log_level)
    config = _load(config_path)
    if not config.webhooks:
        raise click.ClickException(f"{config_path}: no webhooks to run")
    from prometheus_client import CollectorRegistry

    metrics = Metrics(CollectorRegistry())
    start_metrics_server(metrics_port, metrics.registry, settings.web_bind)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        topic = settings.topic(SEGMENT_CHANGES)
        dead = settings.topic(WEBHOOK_DEAD_LETTERS)
        await ensure_topics(settings, [topic, dead])
        log.info("delivering %s to %d endpoint(s): %s", topic, len(config.webhooks),
                 ", ".join(ep.name for ep in config.webhooks))
        await run_webhooks(settings, config, topic=topic, dead_letter_topic=dead, stop=stop,
                           metrics=metrics)

    run_command(main)
