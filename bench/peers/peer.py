"""What the contender scripts share (standard library only: they also run in the peers' venv).

Each script is started by `bench.peers` as `python -m bench.peers.<script> ARGS`, drains the
preloaded input topic doing the equivalent work (`bench.peers.work`) and prints one line
`RESULT {json}` with its own figures: wall and CPU time (all threads, getrusage) from the first
record it handled to the end of its run (last record handled, final commit, stop).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True, help="input topic (preloaded)")
    p.add_argument("--out", required=True, help="output topic of the change records")
    p.add_argument("--group", required=True, help="consumer group / app id")
    p.add_argument("--events", type=int, required=True, help="records in the input topic")
    p.add_argument("--state-dir", default="", help="local state folder (fresh)")
    p.add_argument("--guarantee", default="at_least_once",
                   choices=["at_least_once", "exactly_once"])
    return p.parse_args(argv)


def cpu_s() -> float:
    """CPU seconds (user + system) of this process so far, every thread included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stopwatch:
    """Started by the first record handled; `result()` at the end of the run."""

    def __init__(self) -> None:
        self.wall0 = 0.0
        self.cpu0 = 0.0
        self.handled = 0
        self.changes = 0

    def first(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = cpu_s()

    def result(self, **extra: Any) -> dict[str, Any]:
        return {"records": self.handled, "changes": self.changes,
                "wall_s": time.perf_counter() - self.wall0 if self.wall0 else None,
                "cpu_s": cpu_s() - self.cpu0 if self.wall0 else None, **extra}


def report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)
