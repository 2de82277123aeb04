"""A live worker with rules/examples/predictive.yaml on the real broker (issue 15): a customer
who stops buying enters "likely to churn" at the exact millisecond P(alive) falls below 0.3,
with no event of their own: with the event clock exactly as `simulate` (every change of every
field), with the wall clock within a second of that instant."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from model.events import encode_event
from rules.loader import load_rules
from rules.models.bgnbd import p_alive, p_alive_age_at
from rules.models.file import BgNbdModel
from rules.ruleset import RuleSet
from streams.runtime.app import SEGMENT_CHANGES
from streams.runtime.records import partition_for
from tests.streams.workers import (
    DAY,
    HOUR,
    MINUTE,
    PARTITIONS,
    SECOND,
    T0,
    Collector,
    Record,
    changes_by_customer,
    cid_on,
    cluster,
    diff_report,
    ev,
    iso,
    owned,
    produce,
    simulate,
    wire,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PREDICTIVE = ROOT / "rules" / "examples" / "predictive.yaml"
# 3 purchase days (the two at 3 days on one UTC day unless the first is in a day's last minute)
BUYS = (0, 3 * DAY, 3 * DAY + MINUTE, 6 * DAY + HOUR)


def churn_offset(rules: RuleSet) -> int:
    """ms from the first purchase to the first instant P(alive) < 0.3 after BUYS."""
    m = rules.settings.models["churn"]
    assert isinstance(m, BgNbdModel)
    x, t_x = 2.0, BUYS[-1] / m.unit_ms
    T = p_alive_age_at(m.params, 0.3, x, t_x)
    assert T is not None
    t = int(T * m.unit_ms) - 5
    while p_alive(m.params, x, t_x, t / m.unit_ms) < 0.3:
        t -= 1
    while p_alive(m.params, x, t_x, t / m.unit_ms) >= 0.3:
        t += 1
    return t


def purchases(cid: str, first: int) -> list[object]:
    return [ev("purchase", cid, first + d, amount=50.0, currency="USD") for d in BUYS]


async def test_likely_to_churn_at_the_exact_instant_with_the_event_clock(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    rules = RuleSet(load_rules(PREDICTIVE))
    churner = "churner"
    p = partition_for(churner.encode(), PARTITIONS)
    at = T0 + churn_offset(rules)
    events = [*purchases(churner, T0),
              ev("page_view", cid_on(p, PARTITIONS, "clock"), at + DAY)]
    raw = [encode_event(e) for e in events]
    ref = simulate(rules, raw)
    entered = [c for c in ref.changes[churner] if "likely_to_churn" in c["entered"]]
    assert [(c["at"], c["cause"]) for c in entered] == [(iso(at), {"kind": "time"})]
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       tolerate_tracebacks=True) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        w = c.start("--rules", str(PREDICTIVE))
        await produce(kafka_bootstrap, [(c.topic(t), k, v) for t, k, v in map(wire, events)])
        await col.wait(f"{ref.total} changes", lambda: len(col.records) >= ref.total,
                       workers=[w], timeout=120)
        await col.settle(1.0)
    got = changes_by_customer(col.records)
    assert got == ref.changes, diff_report(got, ref.changes)
    why = entered[0]["details"]["likely_to_churn"]["why"]
    assert why["p_alive()"] < 0.3 and why["p_alive() inputs"]["x"] == 2


async def test_likely_to_churn_within_a_second_with_the_wall_clock(
    kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str, tmp_path: Path
) -> None:
    rules = RuleSet(load_rules(PREDICTIVE))
    offset = churn_offset(rules)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_CLOCK="wall", tolerate_tracebacks=True) as c, \
            Collector(kafka_bootstrap, c.topic(SEGMENT_CHANGES)) as col:
        w = c.start("--rules", str(PREDICTIVE))
        await col.wait("the worker assigned", lambda: bool(owned(w, c.topic("purchases"))),
                       workers=[w])
        await asyncio.sleep(1.0)
        now = int(time.time() * 1000)
        first = now + 8 * SECOND - offset  # the crossing 8 s ahead
        if first % DAY > DAY - 2 * MINUTE:  # keep the purchases at 3 days on one UTC day
            first += 2 * MINUTE
        due = first + offset
        await produce(kafka_bootstrap, [(c.topic(t), k, v)
                                        for t, k, v in map(wire, purchases("wall", first))])

        def change() -> Record | None:
            return next((r for r in col.records if r.key == b"wall"
                         and "likely_to_churn" in r.json["entered"]), None)

        await col.wait("likely_to_churn", lambda: change() is not None,
                       timeout=(due - now) / 1000 + 30, workers=[w])
    record = change()
    assert record is not None
    assert record.json["at"] == iso(due) and record.json["cause"] == {"kind": "time"}
    assert 0 <= record.timestamp - due <= 1000, record.timestamp - due
