"""`segmenter ingest run`: the HTTP ingest endpoint (`POST /v1/events`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from connectors.common import (
    ensure_topics,
    install_stop_signals,
    make_producer,
    run_command,
    settings_from_flags,
    settings_options,
    setup_logging,
)
from connectors.events import event_rules, input_topics
from connectors.ingest import DEFAULT_MAX_BYTES, EVENTS_PATH, create_ingest_app, serve_ingest
from model.errors import SegmenterError
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)
STOP_TIMEOUT = 10.0  # seconds the producer may take to send what it holds when stopping


@click.group()
def ingest() -> None:
    """Accept events over HTTP and produce them to Kafka."""


@ingest.command()
@settings_options
@click.option("--host", envvar="SEGMENTER_INGEST_HOST", default=None,
              help="Address to listen on [SEGMENTER_INGEST_HOST; else SEGMENTER_WEB_BIND, "
              "127.0.0.1]; 0.0.0.0 for every interface (containers).")
@click.option("--port", envvar="SEGMENTER_INGEST_PORT", type=click.IntRange(1, 65535),
              default=8080, show_default=True, help="Port [SEGMENTER_INGEST_PORT].")
@click.option("--token", envvar="SEGMENTER_INGEST_TOKEN", default=None,
              help="Bearer token clients must send [SEGMENTER_INGEST_TOKEN; else "
              "SEGMENTER_API_TOKEN; neither: no authentication].")
@click.option("--max-bytes", envvar="SEGMENTER_INGEST_MAX_BYTES", type=click.IntRange(min=1),
              default=DEFAULT_MAX_BYTES, show_default=True,
              help="Largest request body accepted (413 above) [SEGMENTER_INGEST_MAX_BYTES].")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SEGMENTER_RULES", help="Rule file: its currency and clock limits are "
              "checked [SEGMENTER_RULES].")
@click.option("--currency", help="Currency of purchases, when no rule file is given.")
@click.option("--clock", type=click.Choice(["wall", "event"]), default=None,
              help="The workers' clock [SEGMENTER_CLOCK]: with 'wall', events too old or too "
              "far in the future are rejected here already.")
def run(host: str | None, port: int, token: str | None, max_bytes: int, rules_path: Path | None,
        currency: str | None, clock: str | None, **flags: Any) -> None:
    """Serve POST /v1/events until Ctrl-C / SIGTERM (also GET /healthz and GET /metrics)."""
    settings = settings_from_flags(flags)
    if clock is not None:
        settings = settings.with_overrides(clock=clock)
    setup_logging(settings.log_level)
    host = host or settings.web_bind
    token = token or settings.api_token or None
    try:
        rules = event_rules(rules_path, currency)
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    run_command(lambda: serve(settings, host, port, token or None, max_bytes, rules.currency,
                              rules.retention_ms, rules.future_tolerance_ms))


async def serve(settings: Settings, host: str, port: int, token: str | None, max_bytes: int,
                currency: str, retention_ms: int, future_tolerance_ms: int) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from streams.runtime.metrics import Metrics

    stop = asyncio.Event()
    install_stop_signals(stop)
    await ensure_topics(settings, input_topics(settings))
    producer = make_producer(settings)
    await producer.start()
    runner: web.AppRunner | None = None
    try:
        app = create_ingest_app(settings, producer, Metrics(CollectorRegistry()), token,
                                max_bytes, currency, retention_ms=retention_ms,
                                future_tolerance_ms=future_tolerance_ms)
        runner = await serve_ingest(app, host, port,
                                    header_timeout=settings.web_header_timeout)
        log.info("ingest on http://%s:%d%s (auth %s, max %d bytes, currency %s; timeouts: "
                 "headers %g s, body %g s, Kafka acknowledgment %g s)", host, port, EVENTS_PATH,
                 "on" if token else "off", max_bytes, currency, settings.web_header_timeout,
                 settings.ingest_body_timeout, settings.ingest_ack_timeout)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        try:  # with Kafka down the producer would wait for it forever
            await asyncio.wait_for(producer.stop(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("ingest: Kafka did not take the last events within %g s; stopped "
                        "without them (their clients were answered 503)", STOP_TIMEOUT)
