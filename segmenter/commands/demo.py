"""`segmenter demo`: local services, a worker, the Redis view and the dashboard, generated
events, segment changes live.

Every run is a fresh demo shop: its topics carry their own prefix (`demo-<run>.`) and its Redis
view its own key prefix (`demo-<run>:`), so a second run shows the same story as the first
(the same 200 customers entering their segments), not an already segmented base that ignores
the replayed events. Everything this command starts (Kafka, Redis, the worker, the Redis view,
the dashboard) it stops again on exit, Ctrl-C included, and it deletes the run's topics and
keys; services that already ran are left running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import orjson

from model.errors import SegmenterError, ServiceError
from segmenter import local as services
from segmenter.local.common import port_open, process_alive, stop_process, tail
from streams.runtime.settings import Settings

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "examples" / "retail.yaml"
UNATTENDED_SECONDS = 60.0  # without a terminal and without --seconds, stop after this long
DASHBOARD_PORT = 8050
READY_SECONDS = 30.0  # how long the dashboard may take to print its address
_DASHBOARD_LINE = re.compile(r"dashboard on (http://\S+)")


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
@click.option("--dashboard-port", type=click.IntRange(0, 65535), default=DASHBOARD_PORT,
              show_default=True, envvar="SEGMENTER_DASHBOARD_PORT",
              help="Port of the dashboard, 0: any free one [SEGMENTER_DASHBOARD_PORT].")
def demo(seconds: float | None, events: int, customers: int, rate: float, seed: int,
         rules_path: Path | None, dashboard_port: int) -> None:
    """Start Kafka, Redis, a worker, the Redis view and the dashboard; publish a realistic
    generated stream (the last 60 days of a shop's purchases, e-mail and web activity) and
    print segment changes live. Each run is a fresh shop (its own topics and keys, deleted at
    the end)."""
    if seconds is None and not sys.stdin.isatty():
        seconds = UNATTENDED_SECONDS
    # SIGTERM (kill, a supervisor) stops the demo like Ctrl-C: with the clean-up
    signal.signal(signal.SIGTERM, _interrupt)
    # aiokafka logs transient states (leaders of new topics settling) as errors; it retries them
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    stopping: list[str] = []
    try:
        base = Settings.from_env()
        with services.running_services(base) as started:
            stopping = [s.name for s in started if s.started_now]
            for state in started:
                click.echo(state.describe())
            leftover = _leftover_run(base)
            if leftover is not None:
                click.echo(f"removing the topics and keys of an earlier demo run that did not "
                           f"finish ({leftover.topic_prefix}*)")
                asyncio.run(_remove_run(base, leftover))
            run = DemoRun.new(base)
            settings = run.settings(base)
            if settings.web_port:
                settings = settings.with_overrides(
                    web_port=_free_if_taken("the worker's Query API", settings.web_port))
            dashboard_port = _free_if_taken("the dashboard", dashboard_port)
            with ExitStack() as stack:
                # unwound in reverse: the processes stop, then the run's topics and keys go;
                # a Ctrl-C or SIGTERM during the clean-up is ignored until it is done
                stack.callback(_heed_stops)
                _record_run(base, run)
                stack.callback(_cleanup, base, run)
                asyncio.run(_ensure_topics(settings))
                click.echo(f"demo shop {run.name}: topics {run.topic_prefix}*, Redis keys "
                           f"{run.redis_prefix}* (deleted when the demo ends)")
                rules = rules_path or DEFAULT_RULES
                env = {**os.environ, **services.client_env(settings), **run.env(),
                       "SEGMENTER_RULES": str(rules), "SEGMENTER_WEB_PORT": str(settings.web_port)}
                worker = stack.enter_context(_process(
                    settings, "worker", [sys.executable, "-m", "segmenter.commands.worker"],
                    env))
                click.echo(f"worker: Query API on http://127.0.0.1:{settings.web_port}/v1/segments"
                           if settings.web_port else "worker: Query API off (SEGMENTER_WEB_PORT=0)")
                view = stack.enter_context(_process(
                    settings, "redis-view", [*_cli(), "redis", "run"], env))
                click.echo(f"redis view: {_public_url(settings.redis_url)}, keys "
                           f"{run.redis_prefix}* (e.g. `segmenter redis show cust-000001 --prefix "
                           f"{run.redis_prefix}`)")
                board = stack.enter_context(_process(
                    settings, "dashboard",
                    [*_cli(), "dashboard", "--port", str(dashboard_port)], env))
                url = _dashboard_url(settings, board)
                click.echo(click.style(f"dashboard: {url}", bold=True))
                asyncio.run(_show(settings, Feed(events, customers, rate, seed), seconds,
                                  {"worker": worker, "redis-view": view, "dashboard": board}))
    except KeyboardInterrupt:
        click.echo("\ninterrupted.")
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if stopping:
            click.echo(f"stopped {' and '.join(stopping)} (started by this demo)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _ignore_stops() -> None:
    """Ctrl-C and SIGTERM must not cut the clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _heed_stops() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


@dataclass(frozen=True, slots=True)
class DemoRun:
    """The namespace of one demo run: topic prefix, Redis key prefix."""

    name: str
    topic_prefix: str
    redis_prefix: str

    @classmethod
    def new(cls, base: Settings) -> DemoRun:
        name = f"demo-{secrets.token_hex(4)}"
        return cls(name, f"{base.topic_prefix}{name}.", f"{name}:")

    def settings(self, base: Settings) -> Settings:
        return base.with_overrides(topic_prefix=self.topic_prefix, redis_prefix=self.redis_prefix)

    def env(self) -> dict[str, str]:
        return {"SEGMENTER_TOPIC_PREFIX": self.topic_prefix,
                "SEGMENTER_REDIS_PREFIX": self.redis_prefix}


def _run_file(base: Settings) -> Path:
    return base.state_dir / "demo" / "run.json"


def _record_run(base: Settings, run: DemoRun) -> None:
    """Remember the run before creating anything, so that a run killed before its clean-up is
    cleaned up by the next one."""
    path = _run_file(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"name": run.name, "topic_prefix": run.topic_prefix,
                                   "redis_prefix": run.redis_prefix}))


def _leftover_run(base: Settings) -> DemoRun | None:
    try:
        data = orjson.loads(_run_file(base).read_bytes())
        run = DemoRun(str(data["name"]), str(data["topic_prefix"]), str(data["redis_prefix"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    # only a namespace this command made: never delete topics or keys of anything else
    if not re.fullmatch(r"demo-[0-9a-f]{8}", run.name) or not run.topic_prefix.endswith(
            f"{run.name}.") or run.redis_prefix != f"{run.name}:":
        return None
    return run


def _cleanup(base: Settings, run: DemoRun) -> None:
    """Delete the run's topics and keys; on success forget the run, else the next run retries."""
    _ignore_stops()
    try:
        asyncio.run(_remove_run(base, run))
    except Exception as exc:
        click.echo(f"could not delete the topics {run.topic_prefix}* and keys "
                   f"{run.redis_prefix}*: {exc} (the next demo run retries)", err=True)
        return
    _run_file(base).unlink(missing_ok=True)
    click.echo(f"demo shop {run.name}: topics and Redis keys deleted")


async def _remove_run(base: Settings, run: DemoRun) -> None:
    """Delete the run's topics (every topic with its prefix) and Redis keys."""
    import redis.asyncio as aioredis
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka_bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(run.topic_prefix)]
        if topics:
            await admin.delete_topics(topics)
        deadline = time.monotonic() + 20
        while topics and time.monotonic() < deadline:  # deletion completes asynchronously
            await asyncio.sleep(0.2)
            topics = [t for t in await admin.list_topics() if t.startswith(run.topic_prefix)]
    finally:
        await admin.close()
    client = aioredis.Redis.from_url(base.redis_url, socket_connect_timeout=5,
                                     socket_timeout=30)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{_glob_escape(run.redis_prefix)}*",
                                          count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _public_url(url: str) -> str:
    """The URL without a password."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


def _free_if_taken(what: str, port: int) -> int:
    """`port`, or a free one (said) when something already listens on it; 0 stays 0."""
    if not port or not port_open("127.0.0.1", port):
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    click.echo(f"port {port} is taken: {what} uses {free}")
    return free


def _cli() -> list[str]:
    return [sys.executable, "-m", "segmenter.cli"]


async def _ensure_topics(settings: Settings) -> None:
    from streams.runtime.app import ensure_topics

    await ensure_topics(settings)


@contextmanager
def _process(settings: Settings, name: str, argv: Sequence[str], env: dict[str, str]
             ) -> Iterator[subprocess.Popen[bytes]]:
    """A process of the demo (own session: Ctrl-C is ours to handle), its output in
    .state/demo/<name>.log, stopped on exit."""
    log_file = _log_file(settings, name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    click.echo(f"{name}: started (pid {process.pid}, log {log_file})")
    try:
        yield process
    finally:
        _ignore_stops()
        if process_alive(process.pid):
            stop_process(process.pid, timeout=30)
        process.wait()
        click.echo(f"{name}: stopped")


def _log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "demo" / f"{name}.log"


def _dashboard_url(settings: Settings, board: subprocess.Popen[bytes]) -> str:
    """The address the dashboard printed once it listens."""
    log_file = _log_file(settings, "dashboard")
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        found = _DASHBOARD_LINE.search(log_file.read_text(errors="replace"))
        if found:
            return found.group(1)
        if board.poll() is not None:
            raise ServiceError("dashboard", f"exited with code {board.returncode}",
                               tail(log_file))
        time.sleep(0.1)
    raise ServiceError("dashboard", f"did not listen within {READY_SECONDS:.0f} s",
                       tail(log_file))


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
    settings: Settings, feed: Feed, seconds: float | None,
    processes: dict[str, subprocess.Popen[bytes]],
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from model.events import TOPIC_FOR_TYPE, encode_event
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
            for name, process in processes.items():
                if process.poll() is not None:
                    raise ServiceError(name, f"exited with code {process.returncode}",
                                       tail(_log_file(settings, name)))
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
                    if msg.value is None:  # the tombstone after an erasure: not a change
                        continue
                    changes += 1
                    key = msg.key.decode() if msg.key else ""
                    click.echo(f"<- {key:<12} {describe_change(msg.value)}")
    finally:
        click.echo(f"published {sent} events, saw {changes} segment changes")
        await producer.stop()
        await consumer.stop()
