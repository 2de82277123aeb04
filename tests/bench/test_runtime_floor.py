"""bench.runtime_floor's stub engine runs in the worker's task (compiled or not): the task
takes an Engine, so the stub must be one, and it must still leave one changelog record per
customer and one change record per new customer (what the floor measures)."""

from __future__ import annotations

import orjson

from bench.runtime_floor import StubEngine
from model.events import encode_event
from tests.factories import T0, purchase
from tests.streams.runtime.test_task import Feed, cid_on, new_task, rules


def test_the_stub_engine_runs_in_a_task_and_does_only_the_runtimes_work() -> None:
    task, feed = new_task(), Feed()
    task.rulebook.engine = StubEngine(rules())
    cid = cid_on(0)
    task.add("purchases", [feed.rec("purchases", encode_event(purchase(T0, 10, cid))),
                           feed.rec("purchases", encode_event(purchase(T0 + 1, 500, cid)))],
             T0 + 1)
    pending = task.take()
    assert [orjson.loads(v or b"")["entered"] for _, v in pending.changes] == [["seen"]]
    assert pending.dirty == {cid} and pending.offsets == {"purchases": 2}
    [(key, value)] = task.store.changelog_records(pending.dirty)
    assert key == cid.encode() and value is not None
