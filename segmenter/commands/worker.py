"""`segmenter worker`: run the Faust application (one worker process of the consumer group)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from segmenter.errors import SegmenterError
from segmenter.settings import STORES, Settings


@click.command()
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers [SEGMENTER_KAFKA_BOOTSTRAP].")
@click.option("--redis-url", help="Redis URL [SEGMENTER_REDIS_URL].")
@click.option(
    "--topic-prefix", help="Prefix for every topic and the group id [SEGMENTER_TOPIC_PREFIX]."
)
@click.option(
    "--app-id", help="Faust app id = consumer group (before the prefix) [SEGMENTER_APP_ID]."
)
@click.option("--worker-id", help="This worker's name [SEGMENTER_WORKER_ID; host-pid].")
@click.option("--web-port", type=int, help="Faust web/metrics port, 0 = off [SEGMENTER_WEB_PORT].")
@click.option("--web-bind", help="Web server address [SEGMENTER_WEB_BIND; 127.0.0.1].")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Local state folder [SEGMENTER_STATE_DIR; ./.state].",
)
@click.option(
    "--clock", type=click.Choice(["wall", "event"]), help="Time source [SEGMENTER_CLOCK]."
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rule file [SEGMENTER_RULES].",
)
@click.option(
    "--processing-guarantee",
    type=click.Choice(["at_least_once", "exactly_once"]),
    help="Faust processing guarantee [SEGMENTER_PROCESSING_GUARANTEE].",
)
@click.option("--store", type=click.Choice(STORES), help="Table store [SEGMENTER_STORE].")
@click.option("--partitions", type=int, help="Partitions of created topics [SEGMENTER_PARTITIONS].")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level [SEGMENTER_LOG_LEVEL].",
)
def worker(**flags: Any) -> None:
    """Run a stream-processing worker until Ctrl-C / SIGTERM.

    Consumes the input topics and writes segment changes to `<prefix>segment-changes`.
    Start several with the same app id to share the partitions.
    """
    try:
        settings = Settings.from_env(**flags)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    run_worker(settings)


def run_worker(settings: Settings) -> None:
    """Build the app and run it in this process (blocks; exits the process when done)."""
    import asyncio

    import faust  # heavy: only for this command
    from prometheus_client import CollectorRegistry

    from segmenter.metrics import Metrics
    from streams.app import create_app, ensure_topics, worker_datadir

    worker_datadir(settings).parent.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(ensure_topics(settings))
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        app = create_app(settings, Metrics(CollectorRegistry()))
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


if __name__ == "__main__":  # `python -m segmenter.commands.worker` (used by the demo and tests)
    worker()
