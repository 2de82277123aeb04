"""How much of a window read is memory: the same read over a few states (they stay in the CPU's
caches) and over many (each read finds its state cold, as an event does in a worker with 100k
customers).

    python -m bench.state_locality                   # retail rules, the engine's 100k-event log
    python -m bench.state_locality --buckets 8 10    # states with 8 to 10 buckets

Builds the states with `simulate`, then for N states read in turn times one 365-day window sum
(`rules.functions._sums`, the read behind purchase_amount/purchase_count) per state, cache of
the evaluation context cleared each time. Also reports the Python objects per state (strings
and numbers included), what a flatter state layout would reduce.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RETAIL,
    command_line,
    default_json,
    event_log,
    machine_info,
    pin_to_one_core,
    rel,
    write_json,
)
from model.state import CustomerState
from rules.context import Ctx
from rules.functions import _sums
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.simulate import Simulator


def objects_in(st: CustomerState) -> int:
    """Objects reachable from the state (classes excluded)."""
    seen: set[int] = set()
    todo: list[Any] = [st]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        todo.extend(r for r in gc.get_referents(o) if not isinstance(r, type))
    return len(seen)


def time_reads(states: list[CustomerState], rules: RuleSet, nb: int, reads: int) -> float:
    """µs per window sum, reading the states in turn until `reads` reads are done."""
    r = rules.settings.resolution_ms
    ctxs = [Ctx(st, st.last_eval or 0, r, st.cands, rules.groups_before) for st in states]

    def one_pass() -> None:
        for c in ctxs:
            c.cache.clear()
            _sums(c, nb)

    passes = max(1, reads // len(ctxs))
    return timeit.timeit(one_pass, number=passes) / passes / len(ctxs) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--buckets", type=int, nargs=2, default=(4, 12), metavar=("MIN", "MAX"),
                    help="read states with this many buckets (default 4 to 12)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 2000, 0],
                    help="numbers of states read in turn (0: all that qualify)")
    ap.add_argument("--reads", type=int, default=200_000, help="window sums per size")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--json", type=Path, default=default_json("state_locality"))
    args = ap.parse_args(argv)

    cpu = pin_to_one_core(args.cpu)
    log = event_log(args.events, args.customers)
    rules = RuleSet(load_rules(args.rules))
    sim = Simulator(rules)
    with open(log, "rb") as f:
        sim.feed_lines(f)
    lo, hi = args.buckets
    states = [st for st in sim.states.values() if lo <= len(st.buckets) <= hi]
    if not states:
        raise SystemExit(f"no state with {lo} to {hi} buckets in {rel(log)}")
    nb = rules.settings.rfm.window_ms // rules.settings.resolution_ms
    print(f"# {command_line()}\n# {rel(log)}, {rel(args.rules)}; cpu {cpu}; "
          f"{len(states):,} states with {lo}-{hi} buckets "
          f"(mean {statistics.mean(len(s.buckets) for s in states):.1f})")
    rows = []
    for n in args.sizes:
        chosen = states if n <= 0 or n > len(states) else states[:n]
        us = time_reads(chosen, rules, nb, args.reads)
        rows.append({"states": len(chosen), "us_per_read": us})
        print(f"{len(chosen):7,d} states read in turn: {us:5.2f} µs per {nb}-bucket window sum")
    objects = statistics.mean(objects_in(s) for s in states[:500])
    print(f"objects per state (strings and numbers included): {objects:.0f}")
    write_json(args.json, {"benchmark": "state_locality", "command": command_line(), "cpu": cpu,
                           "machine": machine_info(), "log": rel(log),
                           "rules": rel(args.rules), "window_buckets": nb, "rows": rows,
                           "objects_per_state": objects})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
