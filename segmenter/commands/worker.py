"""`segmenter worker`: run one worker process of the consumer group (streams/runtime/)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from model.errors import SegmenterError
from streams.runtime.settings import STORES, Settings


@click.command()
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers [SEGMENTER_KAFKA_BOOTSTRAP].")
@click.option("--redis-url", help="Redis URL [SEGMENTER_REDIS_URL].")
@click.option(
    "--topic-prefix", help="Prefix for every topic and the group id [SEGMENTER_TOPIC_PREFIX]."
)
@click.option(
    "--app-id", help="App id = consumer group (before the prefix) [SEGMENTER_APP_ID]."
)
@click.option("--worker-id", help="This worker's name [SEGMENTER_WORKER_ID; host-pid].")
@click.option("--web-port", type=int, help="Web/metrics port, 0 = off [SEGMENTER_WEB_PORT].")
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
    help="Processing guarantee [SEGMENTER_PROCESSING_GUARANTEE; exactly_once].",
)
@click.option("--store", type=click.Choice(STORES), help="State store [SEGMENTER_STORE; memory://].")
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
    """Run one worker process until SIGTERM / Ctrl-C (blocks)."""
    import asyncio

    from streams.runtime.app import ensure_topics, worker_datadir
    from streams.runtime.gc_tuning import tune_gc

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kafka_log = logging.getLogger("aiokafka")
    kafka_log.setLevel(max(logging.WARNING, logging.getLogger().level))
    for handler in logging.getLogger().handlers:
        handler.addFilter(Throttle())
    worker_datadir(settings).mkdir(parents=True, exist_ok=True)
    tune_gc(settings.gc_threshold)
    try:
        seed = None
        if settings.rules_path is not None:
            from rules.loader import load_rules_text
            from rules.ruleset import RuleSet
            from streams.runtime.rules_topic import Seed

            try:
                text = settings.rules_path.read_text()
            except OSError as exc:
                raise click.ClickException(
                    f"cannot read the rule file {settings.rules_path}: {exc.strerror}") from exc
            seed = Seed(RuleSet(load_rules_text(text, source=str(settings.rules_path))), text,
                        settings.rules_path.name)
        asyncio.run(ensure_topics(settings))
        asyncio.run(_run(settings, seed))
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc


class Throttle(logging.Filter):
    """aiokafka logs every failed connection attempt (hundreds a second while a broker is
    down): each of its messages is shown at most once per `seconds`, with a count of those
    held back."""

    def __init__(self, seconds: float = 10.0) -> None:
        super().__init__()
        self.seconds = seconds
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        key = f"{record.name}:{record.msg}"
        last, held = self._last.get(key, (0.0, 0))
        if record.created - last < self.seconds:
            self._last[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.seconds:.0f} s)"
        self._last[key] = (record.created, 0)
        return True


async def _run(settings: Settings, seed: Any) -> None:
    from prometheus_client import CollectorRegistry

    from connectors.audience_web import AudienceRoutes
    from streams.runtime.metrics import Metrics
    from streams.runtime.web import serve
    from streams.runtime.worker import Worker

    worker = Worker(settings, Metrics(CollectorRegistry()), seed)
    # the audience routes (members, size history, overlap from the Redis view) live in
    # connectors/: the CLI hands them to the worker's web server (streams/ never imports them)
    await serve(worker, [AudienceRoutes(worker)])


if __name__ == "__main__":  # `python -m segmenter.commands.worker` (used by the demo and tests)
    worker()
