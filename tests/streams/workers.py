"""Shared by the worker tests on the real broker: worker subprocesses, a cluster of them per
test (one prefix = one app id = one group), a background collector of output records, event
factories, `simulate` of a log, and the checks that compare the two.

Every wait polls until the expected records are there or a generous limit runs out, and a
failure prints the tail of each worker's log.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from model.codec import decode_state
from model.events import TOPIC_FOR_TYPE, encode_event, new_event
from model.state import CustomerState
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from streams.generator import generate
from streams.runtime.app import (
    ensure_topics,
)
from streams.runtime.records import partition_for
from streams.runtime.settings import Settings
from streams.simulate import Simulator

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
                  ensure: bool = True, tolerate_tracebacks: bool = False,
                  **kw: Any) -> AsyncIterator[Cluster]:
    """A Cluster whose topics exist (created the worker's way, unless `ensure` is False: a
    consumer asking for a missing topic would have the broker create it with 1 partition)."""
    c = Cluster(bootstrap, prefix, tmp, **kw)
    try:
        if ensure:
            await c.ensure_topics()
        yield c
        crashed = [w.name for w in c.workers if (not tolerate_tracebacks and
                   "Traceback (most recent call last)" in w.log_text())
                   or "exception was never retrieved" in w.log_text()]
        assert not crashed, f"worker(s) {crashed} logged an unhandled exception"
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
    """Reads topics from the beginning in the background (no group, read_committed).

    Records with a null value (the tombstone after each erasure on segment-changes) go to
    `tombstones` (value b""), every other record to `records`."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[Record] = []
        self.tombstones: list[Record] = []
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
                        if m.value is None:
                            self.tombstones.append(Record(m.topic, m.partition, m.offset,
                                                          m.key, b"", m.timestamp, now))
                            continue
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
                   workers: Iterable[Worker] = (), quiet: float | None = None) -> None:
        """Poll until done() (or raise TimeoutError saying what and how far it got). A worker
        that died unexpectedly ends the wait early; so does, without an error, `quiet` seconds
        without a new record (the assertions that follow then say what is missing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        workers = list(workers)
        count, since = len(self.records), loop.time()
        while not done():
            if len(self.records) != count:
                count, since = len(self.records), loop.time()
            elif quiet is not None and loop.time() - since > quiet:
                return
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


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """Send (topic, key, value) records (default partitioner: murmur2 of the key, as the
    worker expects) and wait for every acknowledgement; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    n = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
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
        from model.events import Attributes
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
    """Each customer's segments after its last change (in partition order: after an erasure
    the seq starts again at 1)."""
    return {cid: chs[-1]["segments"] for cid, chs in changes.items()}


def consumer_view(changes: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Each customer's segments as an at-least-once consumer sees them: a record whose seq is
    not greater than the last one applied is a repeat and dropped (no erasures here)."""
    out: dict[str, list[str]] = {}
    for cid, chs in changes.items():
        last = 0
        for c in chs:
            if c["seq"] > last:
                last, out[cid] = c["seq"], c["segments"]
    return out


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


def generated(customers: int, events: int, seed: int, days: float = 30.0,
              erasures: bool = False) -> list[Any]:
    evs = list(generate(customers=customers, events=events, seed=seed, start_ms=T0, days=days,
                        erasures=erasures))
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


def owned(w: Worker, topic: str = "") -> set[int]:
    """The partitions in the worker's latest assignment (its log line "tasks now: [...]")."""
    text = w.log_text()
    at = text.rfind("tasks now: [")
    if at < 0:
        return set()
    inside = text[at + len("tasks now: ["):].split("]", 1)[0]
    return {int(x) for x in inside.split(",") if x.strip()}


def split_between(workers: list[Worker], topic: str, partitions: int) -> bool:
    """Does every worker own some partitions of `topic`, all of them together, none twice?"""
    sets = [owned(w, topic) for w in workers]
    return all(sets) and sorted(p for s in sets for p in s) == list(range(partitions))


# ------------------------------------------------------------------ small rule files


def rules_text(name: str, segments: str, settings: str = "currency: PLN") -> str:
    return f"version: 1\nname: {name}\nsettings: {{{settings}}}\nsegments:\n{segments}"


# a rule version and its successor: `reader` removed, `big` added
ROLL_V1 = rules_text("rollout", """\
  - {id: buyer, when: "purchase_count(30d) >= 1"}
  - {id: reader, when: "email_opens(30d) >= 1"}
""")
ROLL_V2 = rules_text("rollout", """\
  - {id: buyer, when: "purchase_count(30d) >= 1"}
  - {id: big, when: "purchase_amount(30d) >= 150"}
""")


def write_rules(tmp: Path, name: str, text: str) -> tuple[Path, RuleSet]:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path, RuleSet(load_rules_text(text))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    return await asyncio.to_thread(get)


async def wait_rules_version(port: int, version: str, worker: Worker,
                             timeout: float = WAIT) -> None:
    """Poll /readyz until the worker is ready with `version` in force."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body: Any = None
    while loop.time() < deadline:
        status, raw = await http_get(port, "/readyz")
        body = orjson.loads(raw) if raw else None
        if status == 200 and body and body.get("rules_version") == version:
            return
        if not worker.alive():
            break
        await asyncio.sleep(0.1)
    raise TimeoutError(f"rules {version} not in force: last /readyz {body}")


def iso(ms: int) -> str:
    from model.changes import format_ts

    return format_ts(ms)




async def read_states(bootstrap: str, topic: str) -> dict[str, CustomerState]:
    """The latest committed state of every customer in a changelog."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        raw: dict[bytes, bytes | None] = {}
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    if m.key is not None and not m.key.startswith(b"\x00"):
                        raw[m.key] = m.value
        return {k.decode(): decode_state(v) for k, v in raw.items() if v is not None}
    finally:
        await consumer.stop()
