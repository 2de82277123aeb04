"""`segmenter redis ...`: the Redis read model of current segments (see docs/redis.md)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from connectors.common import (
    SEGMENT_CHANGES,
    ensure_topics,
    install_stop_signals,
    run_command,
    settings_from_flags,
    settings_options,
    setup_logging,
    start_metrics_server,
)
from connectors.redis_view import (
    DEFAULT_FEED_MAX,
    DEFAULT_HISTORY_MAX,
    DEFAULT_PREFIX,
    DEFAULT_STATS_TTL,
    RebuildSummary,
    RedisView,
    ViewConsumer,
    rebuild_view,
    rule_file_groups,
    rule_file_metadata,
)
from model.errors import SegmenterError
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)


def view_options(func: Any) -> Any:
    options = [
        click.option("--prefix", envvar="SEGMENTER_REDIS_PREFIX", default=DEFAULT_PREFIX,
                     show_default=True, help="Prefix of every key of the view "
                     "[SEGMENTER_REDIS_PREFIX]."),
        click.option("--rules", "rules_path", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="SEGMENTER_RULES", help="Rule file: display metadata and groups of "
                     "segments a change does not describe (a view started mid-stream) "
                     "[SEGMENTER_RULES]."),
        click.option("--feed-max", type=click.IntRange(min=0), default=DEFAULT_FEED_MAX,
                     show_default=True, help="Length of the list of latest changes."),
        click.option("--history-max", type=click.IntRange(min=0), default=DEFAULT_HISTORY_MAX,
                     show_default=True, help="Length of each customer's change history."),
        click.option("--stats-ttl", type=click.IntRange(min=0), default=DEFAULT_STATS_TTL,
                     show_default=True, help="Seconds the per-minute counters live (0: none)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_view(client: Any, flags: dict[str, Any], metrics: Metrics | None) -> RedisView:
    metadata: dict[str, Any] = {}
    groups: dict[str, str] = {}
    default_pipeline: str | None = None
    rules_path = flags.get("rules_path")
    if rules_path is not None:
        from rules.loader import load_rules

        try:
            rule_file = load_rules(rules_path)
        except (SegmenterError, OSError) as exc:
            raise click.ClickException(f"cannot load rule file {rules_path}: {exc}") from exc
        metadata, groups = rule_file_metadata(rule_file), rule_file_groups(rule_file)
        default_pipeline = next((p.id for p in rule_file.pipelines if p.default), None)
    view = RedisView(client, prefix=flags["prefix"], feed_max=flags["feed_max"],
                     history_max=flags["history_max"], stats_ttl=flags["stats_ttl"],
                     fallback_metadata=metadata, segment_groups=groups, metrics=metrics)
    view.default_pipeline = default_pipeline
    return view


def redis_client(settings: Settings) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5,
                                   socket_timeout=30, health_check_interval=30)


@click.group()
def redis() -> None:
    """Keep and inspect the Redis view of every customer's current segments."""


@redis.command()
@settings_options
@view_options
@click.option("--group", "group_id", help="Consumer group [<topic prefix>segmenter-redis-view]; "
              "give each view (key prefix) its own.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Serve Prometheus metrics on this port, on SEGMENTER_WEB_BIND (0: off).")
def run(**flags: Any) -> None:
    """Keep the view up to date from the segment-changes topic until Ctrl-C / SIGTERM.

    Offsets are committed only after Redis has the writes; while Redis is down the writes are
    retried with backoff, and nothing is lost."""
    settings = settings_from_flags(flags)
    setup_logging(settings.log_level)
    from prometheus_client import CollectorRegistry

    metrics = Metrics(CollectorRegistry())
    start_metrics_server(flags["metrics_port"], metrics.registry, settings.web_bind)
    group_id = flags["group_id"] or settings.topic("segmenter-redis-view")

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        topic = settings.topic(SEGMENT_CHANGES)
        await ensure_topics(settings, [topic])
        client = redis_client(settings)
        try:
            view = build_view(client, flags, metrics)
            log.info("keeping redis view %r from %s (group %s)", view.keys.prefix, topic,
                     group_id)
            consumer = ViewConsumer(settings, view, topic, group_id, metrics)
            await consumer.run(stop)
            log.info("stopped: %s", dict(consumer.counts))
        finally:
            await client.aclose()

    run_command(main)


@redis.command()
@settings_options
@view_options
def rebuild(**flags: Any) -> None:
    """Wipe the view (every key under the prefix) and rebuild it from the segment-changes topic,
    from the beginning up to its current end; then print a summary and exit.

    Stop `segmenter redis run` for the same prefix first (or rebuild under another prefix)."""
    settings = settings_from_flags(flags)
    setup_logging(settings.log_level)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)

    async def main() -> RebuildSummary:
        client = redis_client(settings)
        try:
            view = build_view(client, flags, None)
            with Progress(TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(),
                          console=console, transient=True,
                          disable=not console.is_terminal) as bar:
                task = bar.add_task("rebuild", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                return await rebuild_view(settings, view, settings.topic(SEGMENT_CHANGES),
                                          progress=progress)
        finally:
            await client.aclose()

    summary: RebuildSummary = run_command(main)
    o = summary.outcomes
    click.echo(f"rebuilt {flags['prefix']!r} from {summary.records} change records in "
               f"{summary.seconds:.1f}s: {o['applied']} applied, {o['stale']} stale, "
               f"{o['erased']} erasures, {o['invalid']} invalid; deleted {summary.deleted_keys} "
               f"old keys")
    for segment, size in sorted(summary.sizes.items()):
        click.echo(f"  {segment}: {size}")


@redis.command()
@settings_options
@click.option("--prefix", envvar="SEGMENTER_REDIS_PREFIX", default=DEFAULT_PREFIX,
              show_default=True, help="Prefix of the view's keys [SEGMENTER_REDIS_PREFIX].")
@click.argument("customer_id")
def show(customer_id: str, **flags: Any) -> None:
    """Print one customer's entry of the view as JSON (exit 1 if the view does not have it)."""
    settings = settings_from_flags(flags)

    async def main() -> dict[str, Any] | None:
        client = redis_client(settings)
        try:
            view = RedisView(client, prefix=flags["prefix"])
            customer = await view.customer(customer_id)
            if customer is None:
                return None
            return {"customer_id": customer.customer_id, "seq": customer.seq,
                    "rules_version": customer.rules_version,
                    "updated_at": customer.updated_at, "segments": customer.segments,
                    "groups": customer.groups,
                    "history": await view.history(customer_id, 10)}
        finally:
            await client.aclose()

    found = run_command(main)
    if found is None:
        click.echo(f"{customer_id}: not in the view", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
