"""The streaming worker on the real broker (issue 4, "Tests on the real broker" 1-6).

Every test runs real `python -m segmenter.commands.worker` processes against the local Kafka,
with its own topic prefix (so its own topics and consumer group) and its own state folder.
Changes are read back from `<prefix>segment-changes` by a background collector; every wait polls
until the expected records are there or a generous limit runs out, and a failure prints the tail
of each worker's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from rules.loader import load_rules, load_rules_text
from rules.ruleset import RuleSet
from segmenter.commands.rules import publish_rules
from segmenter.settings import Settings
from streams.app import (
    DEAD_LETTERS,
    INPUTS,
    PARTITIONED,
    RULES,
    SEGMENT_CHANGES,
    ensure_topics,
)
from streams.events import TOPIC_FOR_TYPE, encode_event, new_event
from streams.generator import generate
from streams.processor import partition_for
from streams.simulate import Simulator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RETAIL = ROOT / "rules" / "examples" / "retail.yaml"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WAIT = 120.0  # safety limit of one wait (never a speed assertion)
PARTITIONS = 4


# ------------------------------------------------------------------ workers


@dataclass
class Worker:
    """One worker subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"--- {self.name}: no log ---"
        return f"--- {self.name} (exit {self.process.poll()}) log tail ---\n" + "\n".join(text)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (SIGKILL after `timeout`); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        return self.process.returncode

    async def kill(self) -> None:
        """kill -9."""
        if self.process.poll() is None:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)


class Cluster:
    """The workers, topics and settings of one test (one prefix = one app id = one group)."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, partitions: int = PARTITIONS,
                 **env: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.tmp = tmp
        self.partitions = partitions
        self.env: dict[str, str] = {
            "SEGMENTER_KAFKA_BOOTSTRAP": bootstrap,
            "SEGMENTER_TOPIC_PREFIX": prefix,
            "SEGMENTER_STATE_DIR": str(tmp / "state"),
            "SEGMENTER_WEB_PORT": "0",
            "SEGMENTER_PARTITIONS": str(partitions),
            "SEGMENTER_CLOCK": "event",
            "SEGMENTER_LOG_LEVEL": "info",
            **env,
        }
        self.settings = Settings.from_env(env=self.env)
        self.workers: list[Worker] = []

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def ensure_topics(self) -> None:
        await ensure_topics(self.settings)

    def start(self, *args: str, name: str | None = None, **env: str) -> Worker:
        name = name or f"worker{len(self.workers) + 1}"
        log = self.tmp / f"{name}.{len(self.workers)}.log"
        out = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "segmenter.commands.worker", *args],
            env={**os.environ, **self.env, "SEGMENTER_WORKER_ID": name, **env},
            cwd=self.tmp,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(w.tail() for w in self.workers)

    async def close(self, admin: AIOKafkaAdminClient) -> None:
        for w in self.workers:
            await w.stop()
        try:
            existing = set(await admin.list_topics())
            mine = [t for t in existing if t.startswith(self.prefix)]
            if mine:
                await admin.delete_topics(mine)
        except Exception:  # cleanup must not hide the test's own failure
            pass


@contextlib.asynccontextmanager
async def cluster(bootstrap: str, admin: AIOKafkaAdminClient, prefix: str, tmp: Path,
                  **kw: Any) -> AsyncIterator[Cluster]:
    c = Cluster(bootstrap, prefix, tmp, **kw)
    try:
        yield c
    except BaseException:
        print(c.logs())  # pytest shows it with the failure
        raise
    finally:
        await c.close(admin)


# ------------------------------------------------------------------ records in and out


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int  # Kafka record timestamp (ms)
    received: float  # time.time() when read

    @property
    def json(self) -> Any:
        return orjson.loads(self.value)


class Collector:
    """Reads topics from the beginning in the background (no group, read_committed)."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[Record] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.error: BaseException | None = None

    async def __aenter__(self) -> Collector:
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", metadata_max_age_ms=1000)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._consumer is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.time()
                for msgs in batch.values():
                    for m in msgs:
                        self.records.append(Record(m.topic, m.partition, m.offset, m.key,
                                                   m.value, m.timestamp, now))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # reported by wait()
            self.error = exc
            raise

    def of(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]

    async def wait(self, what: str, done: Callable[[], bool], timeout: float = WAIT,
                   workers: Iterable[Worker] = ()) -> None:
        """Poll until done() (or raise TimeoutError saying what and how far it got). A worker
        that died unexpectedly ends the wait early."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        workers = list(workers)
        while not done():
            if self.error is not None:
                raise RuntimeError(f"collector failed: {self.error!r}")
            dead = [w for w in workers if not w.alive()]
            if dead or loop.time() > deadline:
                why = f"worker(s) {[w.name for w in dead]} exited" if dead else \
                    f"{timeout:.0f} s passed"
                raise TimeoutError(f"waiting for {what}: {why}; {len(self.records)} records "
                                   f"read")
            await asyncio.sleep(0.1)

    async def settle(self, quiet: float = 2.0) -> None:
        """Wait until nothing new arrived for `quiet` seconds."""
        n = -1
        while n != len(self.records):
            n = len(self.records)
            await asyncio.sleep(quiet)


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes]],
                  *, partition: Callable[[str, bytes | None], int | None] | None = None) -> int:
    """Send (topic, key, value) records (default partitioner: murmur2 of the key, as the
    worker expects) and wait for every acknowledgement; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    n = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value in records:
            p = partition(topic, key) if partition is not None else None
            pending.append(await producer.send(topic, value, key=key, partition=p))
            n += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


def wire(ev: Any) -> tuple[str, bytes, bytes]:
    """An Event as a (topic, key, value) record on its own input topic."""
    return TOPIC_FOR_TYPE[ev.type], ev.customer_id.encode(), encode_event(ev)


def ev(type: str, cid: str, ts: int, **fields: Any) -> Any:
    """A valid event (PLN for purchases)."""
    eid = fields.pop("event_id", None) or f"{type[:3]}-{uuid.uuid4().hex[:12]}"
    if type in ("purchase", "refund"):
        fields.setdefault("amount", 100.0)
        fields.setdefault("currency", "PLN")
    if type == "profile_update":
        from streams.events import Attributes
        fields["attributes"] = Attributes(fields.get("attributes") or {})
    return new_event(eid, cid, type, ts, **fields)


def cid_on(partition: int, partitions: int, label: str) -> str:
    """A customer id that the default partitioner puts on `partition`."""
    for i in range(10_000):
        cid = f"{label}-{i}"
        if partition_for(cid.encode(), partitions) == partition:
            return cid
    raise AssertionError("no id found")  # pragma: no cover


def changes_by_customer(records: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        value = r.json
        assert r.key is not None and r.key.decode() == value["customer_id"], r
        out[value["customer_id"]].append(value)
    return dict(out)


def transitions(changes: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["seq"], c["at"], c["cause"]["kind"], tuple(c["entered"]), tuple(c["exited"]))
            for c in changes]


def final_segments(changes: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Each customer's segments after its change with the highest seq."""
    return {cid: max(chs, key=lambda c: c["seq"])["segments"] for cid, chs in changes.items()}


@dataclass
class Reference:
    """What `segmenter simulate` makes of a log: changes per customer and final segments."""

    changes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    segments: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0


def simulate(rules: RuleSet, raw: Iterable[bytes]) -> Reference:
    ref = Reference()
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def on_change(ch: Any) -> None:
        per[ch.customer_id].append(orjson.loads(ch.to_json()))

    sim = Simulator(rules, on_change=on_change)
    for line in raw:
        sim.feed_raw(line)
    sim.finish()
    ref.changes = dict(per)
    ref.total = sum(len(v) for v in per.values())
    ref.segments = {cid: sorted(st.members) for cid, st in sim.states.items()}
    return ref


def diff_report(got: dict[str, list[dict[str, Any]]], want: dict[str, list[dict[str, Any]]],
                limit: int = 5) -> str:
    bad = sorted(c for c in set(got) | set(want)
                 if transitions(got.get(c, [])) != transitions(want.get(c, [])))
    lines = [f"{len(bad)} customers differ"]
    for cid in bad[:limit]:
        lines.append(f"{cid}:\n  worker:   {transitions(got.get(cid, []))}\n"
                     f"  simulate: {transitions(want.get(cid, []))}")
    return "\n".join(lines)


def sentinels(partitions: int, ts: int) -> list[Any]:
    """One page view per partition at `ts`: moves every partition's event clock to the end."""
    return [ev("page_view", cid_on(p, partitions, "sentinel"), ts, event_id=f"sentinel-{p}")
            for p in range(partitions)]


def generated(customers: int, events: int, seed: int, days: float = 30.0) -> list[Any]:
    evs = list(generate(customers=customers, events=events, seed=seed, start_ms=T0, days=days))
    return evs + sentinels(PARTITIONS, evs[-1].ts)


def check_at_least_once(got: dict[str, list[dict[str, Any]]],
                        want: dict[str, list[dict[str, Any]]]) -> int:
    """Per customer: seq contiguous from 1, the same changes as `want`, repeats only of an
    identical change. Returns the number of duplicates."""
    duplicates = 0
    problems: list[str] = []
    for cid in sorted(set(got) | set(want)):
        seen: dict[int, dict[str, Any]] = {}
        for c in got.get(cid, []):
            prev = seen.get(c["seq"])
            if prev is None:
                seen[c["seq"]] = c
            elif prev == c:
                duplicates += 1
            else:
                problems.append(f"{cid}: seq {c['seq']} twice with different content:\n"
                                f"  {prev}\n  {c}")
        seqs = sorted(seen)
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{cid}: seqs not contiguous from 1: {seqs}")
        unique = [seen[s] for s in seqs]
        if transitions(unique) != transitions(want.get(cid, [])):
            problems.append(f"{cid}: worker {transitions(unique)}\n"
                            f"  simulate {transitions(want.get(cid, []))}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:8])
    return duplicates


# ------------------------------------------------------------------ 1. equivalence


EQ_CUSTOMERS = 6_000  # 5,117 of them have events
EQ_EVENTS = 50_000


async def test_worker_with_event_clock_matches_simulate(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    """>= 50k generated events for >= 5k customers, produced first, then one worker with the
    event clock: exactly the changes (every field) and final segments of `simulate`."""
    events = generated(EQ_CUSTOMERS, EQ_EVENTS, seed=4)
    raw = [encode_event(e) for e in events]
    ref = simulate(RuleSet(load_rules(RETAIL)), raw)
    assert len({e.customer_id for e in events}) >= 5_000
    assert ref.total > 10_000 and any(
        c["cause"]["kind"] == "time" for chs in ref.changes.values() for c in chs)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c:
        await c.ensure_topics()
        started = time.perf_counter()
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, events)))
        produced = time.perf_counter()
        async with Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
            w = c.start("--rules", str(RETAIL))
            await col.wait(f"{ref.total} changes", lambda: len(col.records) >= ref.total,
                           timeout=180, workers=[w])
            done = time.perf_counter()
            await col.settle(1.5)
            got = changes_by_customer(col.records)
        print(f"equivalence: {len(events)} events produced in {produced - started:.1f} s, "
              f"{ref.total} changes out after {done - produced:.1f} s")
        assert len(col.records) == ref.total, diff_report(got, ref.changes)
        assert got == ref.changes, diff_report(got, ref.changes)
        assert final_segments(got) == {cid: ref.segments.get(cid, []) for cid in got}


# ------------------------------------------------------------------ 2. crash


FAST_FAILOVER = {  # Faust reads these from the environment (over the app's own settings)
    "BROKER_SESSION_TIMEOUT": "6",  # the broker's group.min.session.timeout.ms
    "BROKER_HEARTBEAT_INTERVAL": "1",
}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kill_9_of_one_of_two_workers_loses_no_change(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path,
    guarantee: str,
) -> None:
    """Two workers share the partitions; one is killed with SIGKILL mid-stream; the survivor
    takes its partitions over. Per customer: seq contiguous from 1, every change of `simulate`
    there, repeats only of identical changes (none with exactly-once)."""
    events = generated(1_500, 15_000, seed=5)
    ref = simulate(RuleSet(load_rules(RETAIL)), [encode_event(e) for e in events])
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_PROCESSING_GUARANTEE=guarantee, **FAST_FAILOVER) as c:
        await c.ensure_topics()
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, events)))
        async with Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
            a = c.start("--rules", str(RETAIL), name="a")
            b = c.start("--rules", str(RETAIL), name="b")
            # both own partitions (a rebalance with two members) and changes are flowing
            await col.wait("both workers assigned", lambda: _owns(a) and _owns(b),
                           workers=[a, b])
            await col.wait("some changes", lambda: len(col.records) >= ref.total // 5,
                           workers=[a, b])
            await a.kill()
            killed_at = len(col.records)
            await col.wait(f"{ref.total} distinct changes",
                           lambda: len({(r.key, r.json["seq"]) for r in col.records})
                           >= ref.total, timeout=180, workers=[b])
            await col.settle(2.0)
        got = changes_by_customer(col.records)
        duplicates = check_at_least_once(got, ref.changes)
        print(f"{guarantee}: {ref.total} changes, {killed_at} out at the kill, "
              f"{duplicates} duplicates")
        assert b.alive(), b.tail()
        if guarantee == "exactly_once":
            assert duplicates == 0
        assert final_segments(got) == {cid: ref.segments.get(cid, []) for cid in got}


def _owns(w: Worker) -> bool:
    """Has the worker been assigned input partitions in a group of two?"""
    return "app consumers id 2" in w.log_text()
