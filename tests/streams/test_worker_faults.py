"""The worker under faults, for both processing guarantees, on the real broker:

- one worker, wall clock, `kill -9` and restart mid-stream: every input event applied exactly
  once (per customer: the event ids, order count, amount and opens in its state, read from the
  changelog, against the input log);
- rebalance storm: a third worker joins and leaves three times during a 30k-event stream; the
  change records are `simulate`'s;
- broker restart during a stream (a private broker, stopped and started again): the worker
  recovers by itself and nothing is lost.
(Two workers with one killed: tests/streams/test_worker.py.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from model.events import encode_event
from model.state import CustomerState
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.generator import generate
from streams.runtime.app import DEAD_LETTERS, INPUTS, SEGMENT_CHANGES, changelog_topic
from streams.runtime.settings import Settings
from tests.streams.workers import (
    PARTITIONS,
    RETAIL,
    SECOND,
    T0,
    Cluster,
    Collector,
    changes_by_customer,
    check_at_least_once,
    cid_on,
    cluster,
    diff_report,
    ev,
    owned,
    read_states,
    simulate,
    wire,
    write_rules,
)

pytestmark = pytest.mark.integration
GUARANTEES = ["exactly_once", "at_least_once"]
FAST_FAILOVER = "6000"  # SEGMENTER_SESSION_TIMEOUT_MS: the broker's minimum

COUNT_RULES = """\
version: 1
name: faults
settings: {currency: PLN, dedup_horizon: 30d}
segments:
  - {id: buyer, when: "purchase_count(30d) >= 1"}
  - {id: big, when: "purchase_amount(30d) >= 500"}
  - {id: reader, when: "email_opens(30d) >= 2"}
"""


# ------------------------------------------------------------------ what the log says


@dataclass
class Expected:
    """Per customer, what applying each input event exactly once gives."""

    ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    orders: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    amount: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    opens: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, e: Any) -> None:
        self.ids[e.customer_id].add(e.event_id)
        if e.type == "purchase":
            self.orders[e.customer_id] += 1
            self.amount[e.customer_id] += e.amount
        elif e.type == "email_open":
            self.opens[e.customer_id] += 1

    def problems(self, states: dict[str, CustomerState]) -> list[str]:
        out = []
        for cid in sorted(set(self.ids) | set(states)):
            st = states.get(cid)
            if st is None:
                out.append(f"{cid}: no state")
                continue
            opens = sum(b.types.get("email_open", 0) for b in st.buckets.values())
            got = (set(st.dedup), st.lifetime_orders, round(st.lifetime_amount, 2), opens)
            want = (self.ids[cid], self.orders[cid], round(self.amount[cid], 2),
                    self.opens[cid])
            if got != want:
                missing, extra = want[0] - got[0], got[0] - want[0]
                out.append(f"{cid}: orders/amount/opens {got[1:]} != {want[1:]}; "
                           f"{len(missing)} events not applied, {len(extra)} unknown")
        return out


async def wait_caught_up(admin: AIOKafkaAdminClient, c: Cluster, what: str,
                         workers: list[Any], timeout: float = 180.0) -> None:
    """Until the group's committed offsets reach the end of every input partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=c.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(c.topic(t), p) for t in INPUTS for p in range(PARTITIONS)]
        deadline = time.monotonic() + timeout
        while True:
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(c.settings.group_id)
            behind = {tp: end - (committed[tp].offset if tp in committed else 0)
                      for tp, end in ends.items() if end > 0}
            if all(v <= 0 for v in behind.values()):
                return
            if time.monotonic() > deadline or not any(w.alive() for w in workers):
                raise TimeoutError(f"{what}: group still behind {behind}\n{c.logs()}")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


class Stream:
    """Produces events at a steady rate in the background; `sent` counts what was acked."""

    def __init__(self, bootstrap: str, c: Cluster, events: list[Any], rate: float) -> None:
        self.bootstrap, self.c, self.events, self.rate = bootstrap, c, events, rate
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5,
                                    request_timeout_ms=120_000)
        await producer.start()
        try:
            step = max(1, int(self.rate / 20))
            for i in range(0, len(self.events), step):
                started = time.monotonic()
                chunk = self.events[i:i + step]
                futures = [await producer.send(self.c.topic(t), v, key=k)
                           for t, k, v in map(wire, chunk)]
                await asyncio.gather(*futures)
                self.sent += len(chunk)
                await asyncio.sleep(max(0.0, step / self.rate - (time.monotonic() - started)))
        finally:
            await producer.stop()

    def __enter__(self) -> Stream:
        self.task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def until(self, share: float) -> None:
        while self.sent < share * len(self.events):
            assert self.task is not None
            if self.task.done():
                self.task.result()
                return
            await asyncio.sleep(0.05)

    async def done(self) -> None:
        assert self.task is not None
        await self.task


def live_events(customers: int, count: int, seed: int) -> list[Any]:
    """Purchases and e-mail opens stamped around now (the wall clock)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(count):
        cid = f"live-{rng.randrange(customers)}"
        if rng.random() < 0.6:
            out.append(ev("purchase", cid, now - 60 * SECOND + i,
                          amount=float(rng.randrange(10, 300))))
        else:
            out.append(ev("email_open", cid, now - 60 * SECOND + i))
    return out


def seqs_problems(changes: dict[str, list[dict[str, Any]]], repeats: bool) -> list[str]:
    """seq contiguous from 1 per customer; a repeated seq only when `repeats` are allowed."""
    out = []
    for cid, chs in changes.items():
        seqs = [c["seq"] for c in chs]
        if sorted(set(seqs)) != list(range(1, max(seqs) + 1)):
            out.append(f"{cid}: seqs {seqs}")
        elif not repeats and len(seqs) != len(set(seqs)):
            out.append(f"{cid}: repeated seqs {seqs}")
    return out


# ------------------------------------------------------------------ 2. kill -9 and restart


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_kill_9_and_restart_of_a_single_worker_applies_every_event_once(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path,
    guarantee: str,
) -> None:
    rules_path, _ = write_rules(tmp_path, "faults", COUNT_RULES)
    events = live_events(customers=150, count=3000, seed=7)
    expected = Expected()
    for e in events:
        expected.add(e)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_CLOCK="wall", SEGMENTER_PROCESSING_GUARANTEE=guarantee,
                       SEGMENTER_SESSION_TIMEOUT_MS=FAST_FAILOVER) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES), c.topic(DEAD_LETTERS)) as col:
        first = c.start("--rules", str(rules_path), name="solo")
        await col.wait("the worker assigned", lambda: bool(owned(first)), workers=[first])
        with Stream(kafka_bootstrap, c, events, rate=300) as stream:
            await stream.until(0.35)
            await first.kill()
            killed_at = stream.sent
            second = c.start("--rules", str(rules_path), name="solo")
            await stream.done()
        await wait_caught_up(kafka_admin, c, "after the restart", [second])
        await col.settle(1.0)
        states = await read_states(kafka_bootstrap, changelog_topic(c.settings))
        changes = changes_by_customer(col.of(c.topic(SEGMENT_CHANGES)))
        dead = [r.json for r in col.of(c.topic(DEAD_LETTERS))]
    print(f"{guarantee}: killed after {killed_at} of {len(events)} events; "
          f"{len(dead)} dead letters {[d['reason'] for d in dead][:5]}")
    problems = expected.problems(states)
    assert not problems, f"{len(problems)} customers wrong:\n" + "\n".join(problems[:10])
    assert not seqs_problems(changes, repeats=guarantee == "at_least_once")
    if guarantee == "exactly_once":
        assert dead == []  # nothing was read twice
    else:  # a repeat is refused by the event-id dedup, never applied twice
        assert {d["reason"] for d in dead} <= {"duplicate"}, dead[:3]
    for cid, st in states.items():  # the last change of each customer is its state
        if cid in changes:
            assert changes[cid][-1]["segments"] == sorted(st.members), cid


# ------------------------------------------------------------------ 3. rebalance storm


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_rebalance_storm_during_a_stream_gives_simulates_changes(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path,
    guarantee: str,
) -> None:
    """Purchases only (one topic: their order on a partition is the order they were sent, so
    the event clock is deterministic however records are fetched), 30k of them at 1,200/s;
    workers a and b all along, c joins and leaves three times."""
    events = [e for e in generate(customers=3000, events=230_000, seed=8, start_ms=T0, days=30)
              if e.type == "purchase"][:30_000]
    events += [ev("purchase", cid_on(p, PARTITIONS, "sentinel"), events[-1].ts,
                  event_id=f"sentinel-{p}") for p in range(PARTITIONS)]
    rules = RuleSet(load_rules(RETAIL))
    ref = simulate(rules, [encode_event(e) for e in events])
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_PROCESSING_GUARANTEE=guarantee,
                       SEGMENTER_SESSION_TIMEOUT_MS=FAST_FAILOVER) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        a = c.start("--rules", str(RETAIL), name="a")
        b = c.start("--rules", str(RETAIL), name="b")
        await col.wait("a and b assigned", lambda: bool(owned(a)) and bool(owned(b)),
                       workers=[a, b])
        with Stream(kafka_bootstrap, c, events, rate=1200) as stream:
            for round_ in range(3):
                third = c.start("--rules", str(RETAIL), name="c")
                await col.wait(f"c assigned (round {round_ + 1})",
                               lambda: bool(owned(third)),  # noqa: B023 (awaited right here)
                               workers=[a, b, third])
                await asyncio.sleep(1.5)
                assert await third.stop() == 0, third.tail()
                await col.wait("a and b sharing everything again",
                               lambda: owned(a) | owned(b) == set(range(PARTITIONS)),
                               workers=[a, b])
            storm_done = stream.sent
            await stream.done()
        await col.wait(f"{ref.total} changes",
                       lambda: len({(r.key, r.json["seq"]) for r in col.records}) >= ref.total,
                       workers=[a, b], quiet=20.0)
        await col.settle(2.0)
        got = changes_by_customer(col.records)
    print(f"{guarantee}: storm over after {storm_done} of {len(events)} events; "
          f"{len(col.records)} changes, {ref.total} expected")
    assert storm_done < len(events)  # the storm happened during the stream
    if guarantee == "exactly_once":
        assert got == ref.changes, diff_report(got, ref.changes)
    else:
        check_at_least_once(got, ref.changes)


# ------------------------------------------------------------------ 4. broker restart


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[tuple[str, Callable[[], Any]]]:
    """A broker of our own (other ports, its own data), and a function that kills it (-9)
    and starts it again."""
    import os
    import signal

    from segmenter.local import kafka as local_kafka
    from segmenter.local.common import read_pid
    from tests.streams.workers import free_port

    port = free_port()
    settings = Settings.from_env(env={}, kafka_port=port, kafka_controller_port=free_port(),
                                 state_dir=tmp_path / "broker")
    await asyncio.to_thread(local_kafka.start, settings)

    async def restart() -> None:
        pid = read_pid(local_kafka.KafkaLayout.for_settings(settings).pid_file)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(local_kafka.start, settings)

    try:
        yield f"127.0.0.1:{port}", restart
    finally:
        await asyncio.to_thread(local_kafka.stop, settings)


@pytest.mark.parametrize("guarantee", GUARANTEES)
async def test_broker_restart_during_a_stream_loses_nothing(
    private_broker: tuple[str, Callable[[], Any]], unique: str, tmp_path: Path, guarantee: str,
) -> None:
    bootstrap, restart = private_broker
    rules_path, _ = write_rules(tmp_path, "faults", COUNT_RULES)
    events = live_events(customers=100, count=2000, seed=9)
    expected = Expected()
    for e in events:
        expected.add(e)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with cluster(bootstrap, admin, f"{unique}.", tmp_path, SEGMENTER_CLOCK="wall",
                           SEGMENTER_PROCESSING_GUARANTEE=guarantee,
                           tolerate_tracebacks=True) as c:
            w = c.start("--rules", str(rules_path), name="steady")
            with Stream(bootstrap, c, events, rate=200) as stream:
                await stream.until(0.3)
                await restart()  # the stream's producer waits and retries meanwhile
                await stream.done()
            await wait_caught_up(admin, c, "after the broker restart", [w])
            assert w.alive(), w.tail()
            states = await read_states(bootstrap, changelog_topic(c.settings))
            async with Collector(bootstrap, c.topic(SEGMENT_CHANGES)) as col:
                await col.settle(2.0)
                changes = changes_by_customer(col.records)
            restarts = w.log_text().count("commit failed")
    finally:
        await admin.close()
    print(f"{guarantee}: {restarts} failed commits around the broker restart")
    problems = expected.problems(states)
    assert not problems, f"{len(problems)} customers wrong:\n" + "\n".join(problems[:10])
    assert not seqs_problems(changes, repeats=guarantee == "at_least_once")
