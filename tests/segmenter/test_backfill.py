"""`segmenter backfill` on the real broker: 100 days of history loaded into a new app before its
worker goes live; the worker starts from those states and fires nothing from the past."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from model.changes import format_ts
from model.events import encode_event
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.generator import generate
from streams.runtime.app import INPUTS, SEGMENT_CHANGES, changelog_topic
from streams.simulate import Simulator
from tests.streams.workers import (
    DAY,
    PARTITIONS,
    RETAIL,
    Collector,
    cluster,
    ev,
    owned,
    produce,
    read_states,
    sentinels,
    wire,
)

pytestmark = pytest.mark.integration
TIERS = {"vip", "growth", "potential", "low_value"}  # retail.yaml's tier group


def backfill_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segmenter.cli", "backfill", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300, check=False)


async def test_backfill_loads_history_that_the_worker_continues_without_firing(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    until = (int(time.time() * 1000) // 1000) * 1000
    events = list(generate(customers=200, events=4000, seed=21, start_ms=until - 100 * DAY,
                           days=99))
    log = tmp_path / "history.jsonl"
    log.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    rules = RuleSet(load_rules(RETAIL))
    want_changes: list[dict] = []
    ref = Simulator(rules, until=until,
                    on_change=lambda ch: want_changes.append(orjson.loads(ch.to_json())))
    for e in events:
        ref.feed(e)
    ref.finish()
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_CLOCK="wall") as c:
        # already in the input topics: part of the history, not read again by the workers
        await produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in map(wire, events[:5])])
        done = backfill_cli(c.env, "--rules", str(RETAIL), "--events", str(log),
                            "--until", format_ts(until))
        assert done.returncode == 0, done.stderr
        assert f"backfilled {len(ref.states)} customers" in done.stderr, done.stderr
        states = await read_states(kafka_bootstrap, changelog_topic(c.settings))
        assert states == ref.states
        committed = await kafka_admin.list_consumer_group_offsets(c.settings.group_id)
        assert sum(o.offset for tp, o in committed.items()
                   if tp.topic.removeprefix(c.prefix) in INPUTS) == 5
        async with Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
            await col.wait("the quiet history", lambda: len(col.records) >= len(want_changes))
            history = [r.json for r in col.records]
            assert all(ch.pop("quiet") is True for ch in history)
            by_customer = sorted(history, key=lambda ch: (ch["customer_id"], ch["seq"]))
            assert by_customer == sorted(want_changes,
                                         key=lambda ch: (ch["customer_id"], ch["seq"]))
            w = c.start("--rules", str(RETAIL), name="live")
            await col.wait("the worker assigned", lambda: owned(w) == set(range(PARTITIONS)),
                           workers=[w])
            # a backfilled customer in no tier: a 9000 PLN purchase puts them in one, whatever
            # the hour `until` falls in (a customer already VIP may see no change at all)
            buyer = min(cid for cid, st in ref.states.items() if not TIERS & st.members.keys())
            purchase = ev("purchase", buyer, until + 1000, amount=9000.0)
            # (on a copy: the engine updates the state it is given)
            assert ref.engine.apply(copy.deepcopy(ref.states[buyer]), purchase,
                                    until + 1000).changes
            await produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in [wire(purchase)]])
            await col.wait("the live change",
                           lambda: any(r.json["customer_id"] == buyer and not r.json.get("quiet")
                                       for r in col.records[len(history):]), workers=[w])
            # then a new customer on every partition: once each one's change is read, whatever
            # the worker fired before (past timers would fire first) has been read too
            marks = sentinels(PARTITIONS, until + 2000)
            await produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in map(wire, marks)])
            ids = {m.customer_id for m in marks}
            await col.wait("a change of each partition's sentinel",
                           lambda: ids <= {r.json["customer_id"]
                                           for r in col.records[len(history):]}, workers=[w])
            live = [r.json for r in col.records[len(history):]
                    if r.json["customer_id"] not in ids]
        assert await w.stop() == 0, w.tail()
        again = backfill_cli(c.env, "--rules", str(RETAIL), "--events", str(log))
    assert next(ch["seq"] for ch in live if ch["customer_id"] == buyer) == \
        ref.states[buyer].seq + 1
    # nothing from the past fires: any other change is a timer due after `until`
    for ch in live:
        if ch["customer_id"] != buyer:
            assert ch["cause"]["kind"] == "time" and ch["at"] > format_ts(until), ch
    assert again.returncode != 0
    assert "already holds customer states" in again.stderr, again.stderr
