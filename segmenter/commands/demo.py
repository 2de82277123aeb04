"""`segmenter demo`: local services, a worker, generated events, segment changes live.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import orjson

from segmenter import local as services
from segmenter.errors import SegmenterError, ServiceError
from segmenter.local.common import process_alive, stop_process, tail
from segmenter.settings import Settings

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "examples" / "retail.yaml"
UNATTENDED_SECONDS = 60.0  # without a terminal and without --seconds, stop after this long


@click.command()
@click.option(
    "--seconds",
    type=float,
    envvar="SEGMENTER_DEMO_SECONDS",
    help="Stop after this many seconds [SEGMENTER_DEMO_SECONDS; default: until Ctrl-C, "
    f"or {UNATTENDED_SECONDS:.0f} s when not run from a terminal].",
)
@click.option("--events", type=click.IntRange(1, 10_000_000), default=3000, show_default=True,
              help="How many generated events to publish.")
@click.option("--customers", type=click.IntRange(1, 1_000_000), default=200, show_default=True,
              help="How many customers the generator invents.")
@click.option("--rate", type=click.FloatRange(0.1, 100_000), default=200.0, show_default=True,
              help="Events per second to publish.")
@click.option("--seed", type=int, default=1, show_default=True, help="Generator seed.")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Rule file [default: the shipped rules/examples/retail.yaml].")
def demo(seconds: float | None, events: int, customers: int, rate: float, seed: int,
         rules_path: Path | None) -> None:
    """Start Kafka, Redis and a worker; publish a realistic generated stream (the last 60
    days of a shop's purchases, e-mail and web activity) and print segment changes live."""
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
            rules = rules_path or DEFAULT_RULES
            with _worker(settings, rules) as worker:
                asyncio.run(_show(settings, Feed(events, customers, rate, seed), seconds,
                                  worker))
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
def _worker(settings: Settings, rules: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker in its own process (own session: Ctrl-C is ours to handle), stopped on exit."""
    log_file = settings.state_dir / "demo" / "worker.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **services.client_env(settings), "SEGMENTER_RULES": str(rules)}
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


@dataclass(frozen=True, slots=True)
class Feed:
    events: int
    customers: int
    rate: float
    seed: int


def describe_change(value: bytes | None) -> str:
    """One line for a segment-change record: entered (+) and exited (-) segments, coloured."""
    try:
        change = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return repr(value)
    if not isinstance(change, dict) or not {"entered", "exited", "segments"} <= set(change):
        return orjson.dumps(change).decode()
    details = change.get("details") or {}
    parts = [click.style(f"+{s}", fg="green", bold=True) for s in change["entered"]]
    parts += [click.style(f"-{s}", fg="red") for s in change["exited"]]
    cause = change.get("cause") or {}
    why = ""
    for sid in change["entered"][:1]:
        terms = (details.get(sid) or {}).get("why") or {}
        why = ", ".join(f"{k}={_short(v)}" for k, v in list(terms.items())[:2])
    kind = cause.get("event_type") or cause.get("kind", "?")
    return (f"#{change.get('seq')}  {' '.join(parts) or '-'}  "
            f"[{kind}]  now in {', '.join(change['segments']) or '-'}"
            + (f"  ({why})" if why else ""))


def _short(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


async def _show(
    settings: Settings, feed: Feed, seconds: float | None, worker: subprocess.Popen[bytes]
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.events import TOPIC_FOR_TYPE, encode_event
    from streams.generator import generate

    out_topic = settings.topic("segment-changes")
    consumer = AIOKafkaConsumer(
        out_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    changes = 0
    try:
        while not consumer.assignment():  # join + fetch positions before publishing
            await consumer.getmany(timeout_ms=200)
        for tp in consumer.assignment():
            await consumer.position(tp)
        days = 60.0
        start = int(time.time() * 1000 - days * 86_400_000)
        stream = generate(customers=feed.customers, events=feed.events, seed=feed.seed,
                          start_ms=start, days=days)
        until = "Ctrl-C to stop" if seconds is None else f"for {seconds:.0f} s"
        click.echo(f"publishing {feed.events} generated events for {feed.customers} customers "
                   f"at {feed.rate:.0f}/s; segment changes from {out_topic} ({until}):")
        deadline = None if seconds is None else time.monotonic() + seconds
        sent = 0
        began = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                log = Path(settings.state_dir / "demo" / "worker.log")
                raise ServiceError("worker", f"exited with code {worker.returncode}", tail(log))
            due = min(feed.events, int((time.monotonic() - began) * feed.rate) + 1)
            for ev in stream:
                await producer.send(settings.topic(TOPIC_FOR_TYPE[ev.type]), encode_event(ev),
                                    key=ev.customer_id.encode())
                sent += 1
                if sent >= due:
                    break
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for msg in messages:
                    changes += 1
                    key = msg.key.decode() if msg.key else ""
                    click.echo(f"<- {key:<12} {describe_change(msg.value)}")
    finally:
        click.echo(f"published {sent} events, saw {changes} segment changes")
        await producer.stop()
        await consumer.stop()
