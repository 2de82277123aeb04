"""`segmenter demo`: local services, a worker, a few demo purchases, segment changes live.

Everything this command starts (Kafka, Redis, the worker) it stops again on exit, Ctrl-C
included; services that already ran are left running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from segmenter import local as services
from segmenter.errors import SegmenterError, ServiceError
from segmenter.local.common import process_alive, stop_process, tail
from segmenter.settings import Settings

CUSTOMERS = ("c-1001", "c-1002", "c-1003")
UNATTENDED_SECONDS = 60.0  # without a terminal and without --seconds, stop after this long


@click.command()
@click.option(
    "--seconds",
    type=float,
    envvar="SEGMENTER_DEMO_SECONDS",
    help="Stop after this many seconds [SEGMENTER_DEMO_SECONDS; default: until Ctrl-C, "
    f"or {UNATTENDED_SECONDS:.0f} s when not run from a terminal].",
)
@click.option(
    "--events",
    type=click.IntRange(1, 10_000),
    default=6,
    show_default=True,
    help="How many demo purchases to publish.",
)
def demo(seconds: float | None, events: int) -> None:
    """Start Kafka, Redis and a worker, publish demo purchases, print segment changes."""
    if seconds is None and not sys.stdin.isatty():
        seconds = UNATTENDED_SECONDS
    # aiokafka logs transient states (leaders of new topics settling) as errors; it retries them
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stopping: list[str] = []
    try:
        settings = Settings.from_env()
        with services.running_services(settings) as started:
            stopping = [s.name for s in started if s.started_now]
            for state in started:
                click.echo(state.describe())
            asyncio.run(_ensure_topics(settings))
            with _worker(settings) as worker:
                asyncio.run(_show(settings, events, seconds, worker))
    except KeyboardInterrupt:
        click.echo("\ninterrupted.")
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if stopping:
            click.echo(f"stopped {' and '.join(stopping)} (started by this demo)")


async def _ensure_topics(settings: Settings) -> None:
    from streams.app import ensure_topics

    await ensure_topics(settings)


@contextmanager
def _worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """A worker in its own process (own session: Ctrl-C is ours to handle), stopped on exit."""
    log_file = settings.state_dir / "demo" / "worker.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **services.client_env(settings), "SEGMENTER_WEB_PORT": "0"}
    argv = [sys.executable, "-m", "segmenter.commands.worker"]
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    click.echo(f"worker: started (pid {process.pid}, log {log_file})")
    try:
        yield process
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        if process_alive(process.pid):
            stop_process(process.pid, timeout=30)
        process.wait()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        click.echo("worker: stopped")


def demo_purchase(customer_id: str, n: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "event_id": str(uuid.uuid4()),
        "type": "purchase",
        "customer_id": customer_id,
        "ts": now,
        "order_id": f"o-{n}",
        "amount": round(10.0 + 7.5 * n, 2),
        "currency": "EUR",
    }


def describe_change(value: bytes | None) -> str:
    """One line for a segment-change record: what changed, else the raw JSON."""
    try:
        change = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return repr(value)
    if not isinstance(change, dict) or not {"entered", "exited", "segments"} <= set(change):
        return orjson.dumps(change).decode()
    parts = [
        f"entered {change['entered'] or '-'}",
        f"exited {change['exited'] or '-'}",
        f"now in {change['segments'] or '-'}",
    ]
    cause = change.get("cause")
    if isinstance(cause, dict) and cause.get("event_id"):
        parts.append(f"(event {cause['event_id']})")
    if change.get("placeholder"):
        parts.append("[placeholder until the engine lands]")
    return "  ".join(parts)


async def _show(
    settings: Settings, events: int, seconds: float | None, worker: subprocess.Popen[bytes]
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    out_topic = settings.topic("segment-changes")
    consumer = AIOKafkaConsumer(
        out_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():  # join + fetch positions before publishing
            await consumer.getmany(timeout_ms=200)
        for tp in consumer.assignment():
            await consumer.position(tp)
        for n in range(events):
            event = demo_purchase(CUSTOMERS[n % len(CUSTOMERS)], n)
            await producer.send_and_wait(
                settings.topic("purchases"),
                orjson.dumps(event),
                key=event["customer_id"].encode(),
            )
            click.echo(
                f"-> {settings.topic('purchases')}  {event['customer_id']}  "
                f"{event['amount']} {event['currency']}"
            )
        until = "Ctrl-C to stop" if seconds is None else f"for {seconds:.0f} s"
        click.echo(f"waiting for segment changes on {out_topic} ({until}) ...")
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                log = Path(settings.state_dir / "demo" / "worker.log")
                raise ServiceError("worker", f"exited with code {worker.returncode}", tail(log))
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for msg in messages:
                    key = msg.key.decode() if msg.key else ""
                    click.echo(f"<- {out_topic}  {key}  {describe_change(msg.value)}")
    finally:
        await producer.stop()
        await consumer.stop()
