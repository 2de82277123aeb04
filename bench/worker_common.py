"""Shared pieces of the worker benchmarks (bench/worker_*.py): topics under a unique prefix, the
event log re-stamped to the present and preloaded into the input topics, worker processes,
consumer-group lag, /metrics and CPU time of processes.

The worker runs with the wall clock, so the generated log (bench.common.event_log: fixed start,
seed 42) is shifted as a whole to end one minute before now: the windows, recency and retention
checks then see the same history as `simulate` does, only moved in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import RESULTS, ROOT, START_MS, event_log
from model.events import TOPIC_FOR_TYPE
from streams.runtime.app import INPUTS, SEGMENT_CHANGES, ensure_topics
from streams.runtime.settings import Settings

DAY_MS = 86_400_000
BOOTSTRAP = "127.0.0.1:9092"
KAFKA_PID_FILE = ROOT / ".state" / "kafka" / "kafka.pid"
LOGS = RESULTS / "cache" / "worker-logs"  # worker stdout/stderr (git-ignored)

Record = tuple[str, bytes, bytes]  # (input topic without prefix, key, value)


def new_prefix(tag: str) -> str:
    """A topic prefix no other run uses: every topic and the consumer group carry it."""
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}-"


def settings_for(prefix: str, bootstrap: str, partitions: int) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ the event log


def load_records(events: int, customers: int, *, seed: int = 42, days: float = 90.0,
                 end_ms: int | None = None) -> list[Record]:
    """The cached generator log as (topic, key, value) records, keyed by customer id, with every
    ts moved so that the last possible instant of the log is one minute before `end_ms` (now)."""
    path = event_log(events, customers, seed=seed, days=days)
    end = int(time.time() * 1000) if end_ms is None else end_ms
    shift = end - 60_000 - (START_MS + int(days * DAY_MS))
    out: list[Record] = []
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            obj = orjson.loads(line)
            obj["ts"] += shift
            out.append((TOPIC_FOR_TYPE[obj["type"]], obj["customer_id"].encode(),
                        orjson.dumps(obj)))
    return out


def per_topic(records: Iterable[Record]) -> dict[str, int]:
    counts = dict.fromkeys(INPUTS, 0)
    for topic, _k, _v in records:
        counts[topic] += 1
    return counts


async def create_topics(settings: Settings) -> None:
    """The worker's topics (streams.runtime.app.ensure_topics: the worker's partition counts)."""
    await ensure_topics(settings)


async def preload(bootstrap: str, prefix: str, records: Sequence[Record], *,
                  linger_ms: int = 20) -> dict[str, float]:
    """Produce the records into `prefix` + topic (key = customer id: the default murmur2
    partitioner puts each customer on its partition), acks=1; waits for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=linger_ms,
                                max_batch_size=256 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value in records:
            pending.append(await producer.send(prefix + topic, value, key=key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    wall = time.perf_counter() - started
    return {"records": len(records), "wall_s": wall, "records_per_s": len(records) / wall}


async def delete_prefixed_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (inputs, internal, outputs and the
    changelog)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


# ------------------------------------------------------------------------------ watching a group


@dataclass
class GroupWatch:
    """Consumer-group lag on the input topics and the segment-changes topic's progress, by
    polling the broker (admin OffsetFetch + ListOffsets): nothing is consumed."""

    bootstrap: str
    prefix: str
    partitions: int
    group: str = ""
    admin: AIOKafkaAdminClient | None = None
    consumer: AIOKafkaConsumer | None = None
    inputs: list[TopicPartition] = field(default_factory=list)
    changes: list[TopicPartition] = field(default_factory=list)

    async def start(self) -> None:
        self.group = self.group or self.prefix + "segmenter"
        self.inputs = [TopicPartition(self.prefix + t, p)
                       for t in INPUTS for p in range(self.partitions)]
        self.changes = [TopicPartition(self.prefix + SEGMENT_CHANGES, p)
                        for p in range(self.partitions)]
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         enable_auto_commit=False)
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def lag(self) -> tuple[int, int]:
        """(records not yet committed by the group, end offsets summed) over the inputs."""
        assert self.admin is not None and self.consumer is not None
        committed = await self.admin.list_consumer_group_offsets(self.group)
        ends = await self.consumer.end_offsets(self.inputs)
        lag = 0
        for tp, end in ends.items():
            c = committed.get(tp)
            done = c.offset if c is not None and c.offset >= 0 else 0
            lag += max(0, end - done)
        return lag, sum(ends.values())

    async def lag_by_partition(self) -> dict[str, tuple[int, int]]:
        """'topic[p]' -> (committed offset or -1, end offset), for partitions with a lag."""
        assert self.admin is not None and self.consumer is not None
        committed = await self.admin.list_consumer_group_offsets(self.group)
        ends = await self.consumer.end_offsets(self.inputs)
        out: dict[str, tuple[int, int]] = {}
        for tp, end in ends.items():
            c = committed.get(tp)
            done = c.offset if c is not None else -1
            if end > max(done, 0):
                out[f"{tp.topic}[{tp.partition}]"] = (done, end)
        return out

    async def changes_end(self) -> dict[TopicPartition, int]:
        assert self.consumer is not None
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(self.changes)
        return ends

    async def first_change_ms(self, ends: dict[TopicPartition, int]) -> int | None:
        """CreateTime of the earliest segment-change record (the worker's send time)."""
        assert self.consumer is not None
        found = await self.consumer.offsets_for_times({tp: 0 for tp, e in ends.items() if e})
        stamps = [o.timestamp for o in found.values() if o is not None]
        return min(stamps) if stamps else None

    async def last_change_ms(self, ends: dict[TopicPartition, int]) -> int | None:
        """CreateTime of the latest segment-change record (read the last record of each
        partition)."""
        tps = [tp for tp, e in ends.items() if e]
        if not tps:
            return None
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                  enable_auto_commit=False)
        await reader.start()
        try:
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, ends[tp] - 1)
            last: dict[TopicPartition, int] = {}
            deadline = time.monotonic() + 10
            while len(last) < len(tps) and time.monotonic() < deadline:
                batch = await reader.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    if msgs:
                        last[tp] = msgs[-1].timestamp
            return max(last.values()) if last else None
        finally:
            await reader.stop()


async def consumed(ports: Sequence[int]) -> float:
    """segmenter_events_consumed summed over the workers' /metrics (input records handled)."""
    scrapes = await asyncio.gather(*(asyncio.to_thread(scrape, p) for p in ports),
                                   return_exceptions=True)
    return metric_sum([m for m in scrapes if isinstance(m, dict)],
                      "segmenter_events_consumed_total")


async def wait_for_drain(watch: GroupWatch, started: float, *, limit_s: float,
                         poll_s: float = 0.2, ports: Sequence[int] = (), expected: int = 0,
                         grace_s: float = 15.0, check: Callable[[], None] | None = None
                         ) -> dict[str, Any]:
    """Poll until the group's lag on the inputs is 0 (or `limit_s` after `started`, a
    time.time()). Returns when processing started (first segment-change record), when lag 0 was
    seen, and the lag over time. With the workers' web `ports` and `expected`, also when their
    events_consumed counters reached `expected` (every record handled; a duplicate after a
    rebalance counts too); if lag 0 has not come `grace_s` later, the committed offsets are
    stuck and it gives up waiting for them."""
    first_ms: int | None = None
    consumed_at: float | None = None
    samples: list[tuple[float, int]] = []
    total = 0
    last_scrape = 0.0
    out: dict[str, Any] = {}
    while True:
        if check is not None:
            check()
        now = time.time()
        try:
            lag, total = await watch.lag()
        except Exception:  # the group may not exist yet
            lag = -1
        samples.append((round(now - started, 3), lag))
        if first_ms is None:
            ends = await watch.changes_end()
            if any(ends.values()):
                first_ms = await watch.first_change_ms(ends)
        if ports and expected and consumed_at is None and now - last_scrape >= 0.5:
            last_scrape = now
            if await consumed(ports) >= expected:
                consumed_at = now
        out = {"first_change_at": first_ms / 1000 if first_ms else None,
               "consumed_at": consumed_at,
               "lag_samples": samples[:: max(1, len(samples) // 200)]}
        if lag == 0 and total > 0 and first_ms is not None:
            return {**out, "drained": True, "lag0_at": now}
        if (now - started > limit_s
                or (consumed_at is not None and now - consumed_at > grace_s)):
            return {**out, "drained": False, "lag0_at": None, "last_lag": lag}
        await asyncio.sleep(poll_s)


# ------------------------------------------------------------------------------ worker processes


def worker_env(prefix: str, *, bootstrap: str, partitions: int, state_dir: Path, web_port: int,
               rules: Path, worker_id: str, guarantee: str = "at_least_once",
               log_level: str = "info") -> dict[str, str]:
    return {
        "SEGMENTER_KAFKA_BOOTSTRAP": bootstrap,
        "SEGMENTER_TOPIC_PREFIX": prefix,
        "SEGMENTER_PARTITIONS": str(partitions),
        "SEGMENTER_STATE_DIR": str(state_dir),
        "SEGMENTER_WEB_PORT": str(web_port),
        "SEGMENTER_RULES": str(rules),
        "SEGMENTER_CLOCK": "wall",
        "SEGMENTER_WORKER_ID": worker_id,
        "SEGMENTER_PROCESSING_GUARANTEE": guarantee,
        "SEGMENTER_LOG_LEVEL": log_level,
    }


@contextlib.asynccontextmanager
async def worker_process(env: dict[str, str], log_file: Path,
                         module: str = "segmenter.commands.worker"
                         ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`python -m MODULE` with `env` added (tests.kafka_helpers.worker_process, with the module
    as a parameter); SIGTERM, then SIGKILL after 30 s, on exit."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env},
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


@contextlib.asynccontextmanager
async def workers(prefix: str, count: int, *, bootstrap: str, partitions: int, rules: Path,
                  web: bool = True, guarantee: str = "at_least_once",
                  module: str = "segmenter.commands.worker", extra_env: dict[str, str] | None = None
                  ) -> AsyncIterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """`count` worker processes of one group (distinct SEGMENTER_WORKER_ID, own web port, one
    temporary state folder), stopped with SIGTERM on exit. Yields (process, web port or 0)."""
    state_dir = Path(tempfile.mkdtemp(prefix="segmenter-bench-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            out: list[tuple[subprocess.Popen[bytes], int]] = []
            for i in range(count):
                port = free_port() if web else 0
                env = worker_env(prefix, bootstrap=bootstrap, partitions=partitions,
                                 state_dir=state_dir, web_port=port, rules=rules,
                                 worker_id=f"w{i + 1}", guarantee=guarantee)
                proc = await stack.enter_async_context(
                    worker_process({**env, **(extra_env or {})}, LOGS / f"{prefix}w{i + 1}.log",
                                   module))
                out.append((proc, port))
            yield out
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far (nan when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan"), float("nan")
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (nan when it is gone)."""
    return sum(cpu_times(pid))


def kafka_pid() -> int | None:
    try:
        pid = int(KAFKA_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """A worker's /metrics as {'name{label="v",...}': value} (histogram parts included)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def metric_sum(metrics: Iterable[dict[str, float]], name: str, **labels: str) -> float:
    """Sum of the samples called `name` (with these label values) over several scrapes."""
    total = 0.0
    for m in metrics:
        for key, value in m.items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
    return total


def engine_split(metrics: list[dict[str, float]], wall_s: float, cpu_s: float) -> dict[str, Any]:
    """What the worker's histograms say: time inside Processor.on_input/on_tick (parse, state
    decode/encode, engine: segmenter_engine_evaluation_seconds) against the process's CPU time."""
    eval_s = metric_sum(metrics, "segmenter_engine_evaluation_seconds_sum")
    evals = metric_sum(metrics, "segmenter_engine_evaluation_seconds_count")
    consumed = metric_sum(metrics, "segmenter_events_consumed_total")
    by_cause = {c: metric_sum(metrics, "segmenter_change_records_total", cause=c)
                for c in ("event", "time", "rules", "erasure")}
    return {
        "evaluations": evals,
        "events_consumed": consumed,
        "timer_ticks": metric_sum(metrics, "segmenter_timer_ticks_total"),
        "rekeyed": metric_sum(metrics, "segmenter_rekeyed_total"),
        "rejected": metric_sum(metrics, "segmenter_events_rejected_total"),
        "change_records": by_cause,
        "evaluation_s": eval_s,
        "evaluation_us_per_record": eval_s / evals * 1e6 if evals else float("nan"),
        "evaluation_share_of_cpu": eval_s / cpu_s if cpu_s else float("nan"),
        "evaluation_share_of_wall": eval_s / wall_s if wall_s else float("nan"),
    }


async def wait_ready(port: int, limit_s: float = 90.0) -> float:
    """Poll /readyz until 200; returns the seconds it took."""
    started = time.monotonic()

    def get() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return int(r.status)
        except Exception:
            return 0

    while time.monotonic() - started < limit_s:
        if await asyncio.to_thread(get) == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"worker on port {port} not ready after {limit_s:.0f} s")


def machine_busy_s() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    tck = os.sysconf("SC_CLK_TCK")
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / tck, idle / tck


class CpuAccount:
    """Where the machine's CPU went between start() and stop(): the worker processes, the Kafka
    broker, this benchmark process, and everything else (other users of the shared machine)."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.kafka = kafka_pid()
        self._t0 = 0.0
        self._m0 = (0.0, 0.0)
        self._w0: list[float] = []
        self._k0 = 0.0
        self._s0 = 0.0

    def start(self) -> None:
        self._t0 = time.time()
        self._m0 = machine_busy_s()
        self._w0 = [cpu_seconds(p) for p in self.pids]
        self._k0 = cpu_seconds(self.kafka) if self.kafka else float("nan")
        self._s0 = sum(os.times()[:2])

    def stop(self) -> dict[str, Any]:
        wall = time.time() - self._t0
        busy, idle = machine_busy_s()
        workers = [cpu_seconds(p) - w for p, w in zip(self.pids, self._w0, strict=True)]
        kafka = (cpu_seconds(self.kafka) - self._k0) if self.kafka else float("nan")
        me = sum(os.times()[:2]) - self._s0
        total = busy - self._m0[0]
        known = sum(workers) + (kafka if kafka == kafka else 0.0) + me
        return {"wall_s": wall, "cores": os.cpu_count(), "machine_busy_s": total,
                "machine_idle_s": idle - self._m0[1], "workers_s": workers, "kafka_s": kafka,
                "bench_s": me, "others_s": max(0.0, total - known),
                "machine_busy_share": total / (wall * (os.cpu_count() or 1)) if wall else 0.0}
