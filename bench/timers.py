"""Timer firing throughput: customers with due instants, the clock advanced, fires/s.

Two scenarios with rules/examples/retail.yaml, both timing `Simulator.advance` (DueIndex pops +
`Engine.fire` + settling the outcome); the time inside `Engine.fire` is reported separately.

- burst: `--burst-customers` customers each send one add_to_cart within the same hour (untimed
  set-up); then the clock jumps 400 days ahead in one `advance`. Every customer has the same
  timers: cart_abandoner's 2-day window (the same instant for all), new_customer's 30 days and
  the instants in between that the rules ask for (4 fires per customer with retail.yaml).
- drain: the realistic population of the generator (`--drain-events` over `--drain-customers`,
  90 days, replayed untimed); then the clock moves on 400 days in 1-hour ticks, like a worker's
  punctuation, until every timer has fired (windows slide out, recency thresholds pass).

    python -m bench.timers
    python -m bench.timers --burst-customers 5000 --drain-events 20000 --drain-customers 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RETAIL,
    START_MS,
    command_line,
    default_json,
    event_log,
    loadavg,
    machine_info,
    pin_to_one_core,
    rel,
    write_json,
)
from bench.instrument import TimedEngine
from model.events import new_event
from rules.loader import load_rules
from rules.model import DAY_MS, HOUR_MS
from rules.ruleset import RuleSet
from streams.simulate import Simulator


def _simulator(rules: RuleSet) -> tuple[Simulator, TimedEngine]:
    sim = Simulator(rules)
    engine = TimedEngine(rules)
    sim.engine = engine
    return sim, engine


def _timed_advance(sim: Simulator, engine: TimedEngine, end: int, tick: int | None
                   ) -> dict[str, Any]:
    assert sim.clock is not None
    changes0, time0 = sim.stats.changes, sim.stats.time_changes
    due0 = len(sim.index)
    fires0, fire_s0 = engine.fires, engine.fire_s
    t = sim.clock
    started = time.perf_counter()
    cpu0 = time.process_time()
    if tick is None:
        sim.advance(end)
    else:
        while t < end:
            t = min(end, t + tick)
            sim.advance(t)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    fires = engine.fires - fires0
    in_fire = engine.fire_s - fire_s0
    return {
        "customers_with_timer": due0, "customers_with_timer_after": len(sim.index),
        "fires": fires, "time_changes": sim.stats.time_changes - time0,
        "changes": sim.stats.changes - changes0, "wall_s": wall, "cpu_s": cpu,
        "fires_per_s": fires / wall if wall else 0.0,
        "us_per_fire": wall / fires * 1e6 if fires else 0.0,
        "engine_fire_us_per_fire": in_fire / fires * 1e6 if fires else 0.0,
        "engine_fire_share": in_fire / wall if wall else 0.0,
    }


def burst(rules: RuleSet, customers: int) -> dict[str, Any]:
    sim, engine = _simulator(rules)
    step = max(1, HOUR_MS // max(1, customers))
    for i in range(customers):
        sim.feed(new_event(f"ev-b-{i}", f"cust-{i:07d}", "add_to_cart", START_MS + i * step,
                           session_id=f"s-{i}", sku="EL-00001", category="electronics"))
    out = _timed_advance(sim, engine, START_MS + 400 * DAY_MS, None)
    out["customers"] = customers
    return out


def drain(rules: RuleSet, events: int, customers: int, quiet: bool) -> dict[str, Any]:
    log = event_log(events, customers, quiet=quiet)
    sim, engine = _simulator(rules)
    with open(log, "rb") as f:
        sim.feed_lines(f)
    assert sim.clock is not None
    setup_fires = engine.fires
    out = _timed_advance(sim, engine, sim.clock + 400 * DAY_MS, HOUR_MS)
    out.update({"log": rel(log), "events": events, "customers": len(sim.states),
                "fires_during_replay": setup_fires})
    return out


def print_report(r: dict[str, Any]) -> None:
    for name in ("burst", "drain"):
        s = r[name]
        print(f"{name:<6} {s['customers']:>7,} customers  {s['fires']:>8,} fires "
              f"({s['time_changes']:,} changes) in {s['wall_s']:.2f} s: "
              f"{s['fires_per_s']:>9,.0f} fires/s, {s['us_per_fire']:.1f} us/fire "
              f"({s['engine_fire_us_per_fire']:.1f} in Engine.fire)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--burst-customers", type=int, default=30_000)
    ap.add_argument("--drain-events", type=int, default=100_000)
    ap.add_argument("--drain-customers", type=int, default=10_000)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--json", type=Path, default=default_json("timers"))
    args = ap.parse_args(argv)

    cpu = pin_to_one_core(args.cpu)
    info = machine_info()
    rules = RuleSet(load_rules(args.rules))
    report = {"benchmark": "timers", "command": command_line(), "cpu": cpu, "machine": info,
              "rules": rel(args.rules),
              "burst": burst(rules, args.burst_customers),
              "drain": drain(rules, args.drain_events, args.drain_customers, args.quiet),
              "loadavg_after": list(loadavg())}
    print_report(report)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
