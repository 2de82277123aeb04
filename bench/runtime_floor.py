"""The worker with an engine that does nothing: what the runtime itself costs per record.

`python -m bench.runtime_floor` takes the worker's flags and environment (like
`python -m segmenter.commands.worker`); every record is decoded, checked for its partition and
handed to a stub engine that keeps an empty state per customer (so each commit still writes one
changelog record per customer touched) and emits one change record per new customer. Used by
`python -m bench.worker_throughput --floor`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry

from model.changes import CAUSE_EVENT, Cause, SegmentChange
from model.events import Event
from model.state import CustomerState
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.engine import Engine, Outcome
from streams.runtime.app import ensure_topics, worker_datadir
from streams.runtime.gc_tuning import tune_gc
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from streams.runtime.web import serve
from streams.runtime.worker import Worker


class StubEngine(Engine):
    """An Engine (the compiled task takes nothing else) whose calls do no work."""

    def apply(self, st: CustomerState | None, ev: Event, now: int) -> Outcome:
        if st is not None:
            return Outcome(st)
        # a new customer: one change record (about one per ten inputs in the bench's log)
        st = CustomerState(ev.customer_id, rules_version=self.rules.version, seq=1)
        return Outcome(st, (SegmentChange(ev.customer_id, 1, now, Cause(CAUSE_EVENT),
                                          self.rules.version, ("seen",), (), ("seen",)),))

    def fire(self, st: CustomerState, t: int) -> Outcome:
        return Outcome(st)

    def reevaluate(self, st: CustomerState, now: int, quiet: bool = False,
                   previous: Any = None) -> Outcome:
        st.rules_version = self.rules.version
        return Outcome(st)


async def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert settings.rules_path is not None, "set SEGMENTER_RULES"
    rules = RuleSet(load_rules(settings.rules_path))
    worker_datadir(settings).mkdir(parents=True, exist_ok=True)
    tune_gc(settings.gc_threshold)  # as segmenter worker does
    await ensure_topics(settings)
    worker = Worker(settings, Metrics(CollectorRegistry()), None)
    worker.use_rules(rules)
    assert worker.rulebook is not None
    worker.rulebook.engine = StubEngine(rules)
    await serve(worker)

if __name__ == "__main__":
    out = os.environ.get("SEGMENTER_BENCH_PROFILE")  # a cProfile of the whole run, to this file
    if not out:
        asyncio.run(main())
    else:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            asyncio.run(main())
        finally:
            prof.disable()
            prof.dump_stats(out)
