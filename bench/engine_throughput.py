"""Events/s of the engine in `simulate`, JSON parsing included, on one core.

The spec's run: 1M mixed events (50% web, 35% email, 15% purchases) for 100k customers with
rules/examples/retail.yaml; goal >= 100,000 events/s. The log is generated once (streams.generator,
fixed seed and start) into bench/results/cache/ and then replayed from the file exactly as
`segmenter simulate` does: `Simulator.feed_lines` over the raw lines + `finish()`.

    python -m bench.engine_throughput                          # the spec's run
    python -m bench.engine_throughput --events 100000 --customers 10000   # quick
    python -m bench.engine_throughput --state-size             # + bench.state_size at the end
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RETAIL,
    command_line,
    current_rss_mb,
    default_json,
    event_log,
    loadavg,
    machine_info,
    peak_rss_mb,
    pin_to_one_core,
    progress,
    rel,
    write_json,
)
from model.native import native_status
from streams.runtime.gc_tuning import DEFAULT_THRESHOLD, tune_gc


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def parse_only(path: Path, currency: str) -> dict[str, Any]:
    """The floor under the engine: read + parse_event of every line, nothing else."""
    from model.events import parse_event

    n = 0
    started = time.perf_counter()
    cpu0 = time.process_time()
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                parse_event(raw, currency=currency)
                n += 1
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return {"events": n, "wall_s": wall, "cpu_s": cpu, "events_per_s": n / wall,
            "us_per_event": wall / n * 1e6 if n else 0.0}


def run(log: Path, rules_path: Path, *, quiet: bool = False, state_size: bool = False,
        parse_baseline: bool = True, breakdown: bool = True) -> dict[str, Any]:
    from bench.instrument import TimedEngine
    from rules.loader import load_rules
    from rules.ruleset import RuleSet
    from streams.simulate import Simulator

    rules = RuleSet(load_rules(rules_path))
    total = count_lines(log)
    out: dict[str, Any] = {"log": rel(log), "rules": rel(rules_path), "lines": total,
                           "segments": len(rules.segments)}
    if parse_baseline:
        out["parse_only"] = parse_only(log, rules.settings.currency)
        if not quiet:
            print(f"parse_event alone: {out['parse_only']['events_per_s']:,.0f} events/s",
                  file=sys.stderr)
    gc.collect()
    rss_before = current_rss_mb()
    load_before = loadavg()
    sim = Simulator(rules)
    engine = TimedEngine(rules) if breakdown else None
    if engine is not None:
        sim.engine = engine
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    with open(log, "rb") as f:
        sim.feed_lines(progress(f, total, "simulate", quiet=quiet))
    wall1 = time.perf_counter()
    sim.finish()
    wall2 = time.perf_counter()
    cpu = time.process_time() - cpu0
    wall = wall2 - wall0
    st = sim.stats
    out.update({
        "engine": native_status(),
        "wall_s": wall,
        "feed_s": wall1 - wall0,
        "finish_s": wall2 - wall1,
        "cpu_s": cpu,
        "events_per_s": total / wall,
        "events_per_cpu_s": total / cpu if cpu else 0.0,
        "us_per_event": wall / total * 1e6 if total else 0.0,
        "applied": st.applied,
        "rejected": dict(st.rejected),
        "changes": st.changes,
        "time_changes": st.time_changes,
        "event_changes": st.changes - st.time_changes,
        "customers_in_state": len(sim.states),
        "customers_due": len(sim.index),
        "rss_before_mb": rss_before,
        "rss_after_mb": current_rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(loadavg()),
    })
    if engine is not None:
        out["breakdown_us_per_event"] = {
            "apply": engine.apply_s / total * 1e6,
            "timers": engine.fire_s / total * 1e6,
            "parse_and_simulator": (wall - engine.apply_s - engine.fire_s) / total * 1e6,
        }
        out["timer_fires"] = engine.fires
    if state_size:
        from bench.state_size import measure

        out["state"] = measure(sim.states)
    return out


def print_report(r: dict[str, Any]) -> None:
    print(f"log                  {r['log']} ({r['lines']:,} lines)")
    print(f"rules                {r['rules']} ({r['segments']} segments)")
    print(f"engine               {r.get('engine', '?')}")
    if "parse_only" in r:
        p = r["parse_only"]
        print(f"parse_event alone    {p['events_per_s']:,.0f} events/s "
              f"({p['us_per_event']:.1f} us/event)")
    print(f"simulate             {r['events_per_s']:,.0f} events/s wall "
          f"({r['us_per_event']:.1f} us/event), {r['events_per_cpu_s']:,.0f} events/CPU-s")
    print(f"time                 {r['wall_s']:.1f} s wall (feed {r['feed_s']:.1f} s, "
          f"finish {r['finish_s']:.1f} s), {r['cpu_s']:.1f} s CPU")
    if "breakdown_us_per_event" in r:
        b = r["breakdown_us_per_event"]
        print(f"us per event         Engine.apply {b['apply']:.1f}, Engine.fire (timers) "
              f"{b['timers']:.1f} ({r['timer_fires']:,} fires), parsing + Simulator "
              f"{b['parse_and_simulator']:.1f}")
    print(f"applied / rejected   {r['applied']:,} / {sum(r['rejected'].values()):,}")
    print(f"changes              {r['changes']:,} ({r['time_changes']:,} time-driven)")
    print(f"customers            {r['customers_in_state']:,} in state, "
          f"{r['customers_due']:,} with a timer")
    print(f"memory               peak RSS {r['peak_rss_mb']:,.0f} MB "
          f"(before the run {r['rss_before_mb']:,.0f} MB)")
    la, lb = r["loadavg_before"], r["loadavg_after"]
    print(f"load average         {la[0]:.2f} before, {lb[0]:.2f} after")
    if "state" in r:
        from bench.state_size import print_report as print_state

        print_state(r["state"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    ap.add_argument("--customers", type=int, default=100_000, help="customers in the log")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=float, default=90.0, help="period the log covers")
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--log", type=Path, default=None,
                    help="replay this JSONL file instead of the generated one")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--state-size", action="store_true",
                    help="also measure encode_state bytes per customer after the run")
    ap.add_argument("--no-parse-baseline", action="store_true",
                    help="skip the parse_event-only pass")
    ap.add_argument("--no-breakdown", action="store_true",
                    help="do not time Engine.apply / Engine.fire separately (~0.2%% overhead)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--gc-threshold", type=int, default=DEFAULT_THRESHOLD,
                    help="the GC's young-generation threshold, as simulate sets it "
                         "(streams/runtime/gc_tuning.py); 0 = CPython's defaults")
    ap.add_argument("--json", type=Path, default=default_json("engine_throughput"))
    args = ap.parse_args(argv)

    cpu = pin_to_one_core(args.cpu)
    info = machine_info()
    log = args.log or event_log(args.events, args.customers, seed=args.seed, days=args.days,
                                quiet=args.quiet)
    gc_thresholds = tune_gc(args.gc_threshold)
    result = run(log, args.rules, quiet=args.quiet, state_size=args.state_size,
                 parse_baseline=not args.no_parse_baseline, breakdown=not args.no_breakdown)
    print_report(result)
    write_json(args.json, {"benchmark": "engine_throughput", "command": command_line(),
                           "cpu": cpu, "machine": info, "events": args.events,
                           "customers": args.customers, "seed": args.seed, "days": args.days,
                           "gc_thresholds": gc_thresholds, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
