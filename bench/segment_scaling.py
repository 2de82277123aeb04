"""Cost per event with 25 vs 250 segments when an event touches ~10% of them, with incremental
evaluation on and off.

Rule files are generated as YAML text and loaded with `rules.loader.load_rules_text`. There are
10 "slots", one event type each (7 web types, email_sent, email_open, purchase); segment i reads
only the type of slot i % 10, through one of three shapes (a windowed count; a count and a
`days_since_last` recency, which needs a time-crossing search; two windows of the same type).
The event stream uses exactly those 10 types, uniformly, so an event makes ~10% of the segments
dirty. A third file, "250 (25 hot)", has the 25 segments of the small file plus 225 that read
types the stream never has: the same ~2.5 dirty segments per event among 250.

Per configuration: a warm-up replays `--warmup` events (untimed, incremental), the customer
states are snapshotted with the codec, then `--events` more are timed with `Simulator.feed`
(Event objects: no JSON parsing; timers that fall due in between are fired and counted), once
with the engine as is and once with `RuleSet.dirty_for_type` overridden to return every segment
(no incremental evaluation), each from the same snapshot. `--repeat` keeps the fastest run.

    python -m bench.segment_scaling
    python -m bench.segment_scaling --customers 500 --warmup 5000 --events 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    START_MS,
    command_line,
    default_json,
    loadavg,
    machine_info,
    pin_to_one_core,
    write_json,
)
from bench.instrument import TimedEngine
from model.codec import decode_state, encode_state
from model.events import Event, new_event
from rules.loader import load_rules_text
from rules.model import DAY_MS
from rules.ruleset import CompiledSegment, RuleSet
from streams.simulate import Simulator

HOT_TYPES = ("page_view", "product_view", "add_to_cart", "checkout_started", "form_submit",
             "download", "search", "email_sent", "email_open", "purchase")
# Types the stream never carries (for the "25 hot" file); purchase_* would also read refunds.
COLD_TYPES = ("email_click", "email_bounce", "email_delivered", "email_unsubscribe",
              "profile_update")
WINDOWS_D = (1, 2, 3, 7, 14, 30, 60, 90)


def segment_when(i: int, etype: str) -> str:
    """The `when` of segment i reading only `etype` (three shapes, varied windows)."""
    rnd = random.Random(i)
    w = rnd.choice(WINDOWS_D)
    k = rnd.randint(1, 4)
    shape = (i // 10) % 3
    if etype == "purchase":
        if shape == 0:
            return f"purchase_amount({w}d) >= {rnd.choice((100, 250, 500, 1000))}"
        if shape == 1:
            return (f"purchase_count({w}d) >= {k} "
                    f"and days_since_last_purchase() <= {rnd.choice((3, 7, 14, 30))}")
        w2 = min(d for d in WINDOWS_D if d * 2 >= w) if w > 1 else 1
        return f"purchase_count({max(w, 2)}d) >= {k} and purchase_count({w2}d) == 0"
    if shape == 0:
        return f'count("{etype}", {w}d) >= {k}'
    if shape == 1:
        return (f'count("{etype}", {w}d) >= {k} '
                f'and days_since_last("{etype}") <= {rnd.choice((1, 3, 7, 14))}')
    w2 = max(1, w // 4)
    return f'count("{etype}", {max(w, 2)}d) >= {k} and count("{etype}", {w2}d) < {k}'


def rule_text(n: int, hot: int | None = None) -> str:
    """A rule file with n segments; with `hot`, only the first `hot` read the stream's types."""
    lines = ["version: 1", f"name: synthetic-{n}", "settings:", "  currency: PLN", "segments:"]
    for i in range(n):
        if hot is None or i < hot:
            etype = HOT_TYPES[i % len(HOT_TYPES)]
        else:
            etype = COLD_TYPES[i % len(COLD_TYPES)]
        when = segment_when(i, etype).replace("'", "''")
        lines += [f"  - id: s{i:03d}_{etype}", f"    when: '{when}'"]
    return "\n".join(lines) + "\n"


def make_events(customers: int, n: int, seed: int, start_ms: int,
                days: float) -> list[Event]:
    """n events, uniform over customers and HOT_TYPES, spread evenly over `days`."""
    rnd = random.Random(seed)
    step = days * DAY_MS / max(1, n)
    out = []
    for i in range(n):
        cid = f"cust-{rnd.randrange(customers):06d}"
        etype = HOT_TYPES[rnd.randrange(len(HOT_TYPES))]
        ts = start_ms + int(i * step)
        eid = f"ev-{seed}-{i}"
        if etype == "purchase":
            ev = new_event(eid, cid, etype, ts, round(rnd.uniform(10, 600), 2), "PLN",
                           f"o-{seed}-{i}")
        else:
            ev = new_event(eid, cid, etype, ts, session_id=f"s-{cid}-{i // 50}")
        out.append(ev)
    return out


class FullRuleSet(RuleSet):
    """Incremental evaluation off: every event makes every segment dirty."""

    def dirty_for_type(self, event_type: str, *args: Any, **kwargs: Any
                       ) -> tuple[CompiledSegment, ...]:
        return self.segments


@dataclass(slots=True)
class Snapshot:
    clock: int | None
    states: dict[str, bytes]


def snapshot(sim: Simulator) -> Snapshot:
    return Snapshot(sim.clock, {cid: encode_state(st) for cid, st in sim.states.items()})


def restore(rules: RuleSet, snap: Snapshot) -> tuple[Simulator, TimedEngine]:
    sim = Simulator(rules)
    engine = TimedEngine(rules)
    sim.engine = engine
    for cid, data in snap.states.items():
        st = decode_state(data)
        sim.states[cid] = st
        sim.index.set(cid, st.next_due)
    sim.clock = snap.clock
    return sim, engine


def timed_feed(rules: RuleSet, snap: Snapshot, events: list[Event]) -> dict[str, Any]:
    sim, engine = restore(rules, snap)
    feed = sim.feed
    started = time.perf_counter()
    cpu0 = time.process_time()
    for ev in events:
        feed(ev)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    n = len(events)
    return {"wall_s": wall, "cpu_s": cpu, "us_per_event": wall / n * 1e6,
            "us_per_event_cpu": cpu / n * 1e6,
            "apply_us_per_event": engine.apply_s / n * 1e6,
            "timers_us_per_event": engine.fire_s / n * 1e6,
            "fires": engine.fires, "fires_per_event": engine.fires / n,
            "us_per_fire": engine.fire_s / engine.fires * 1e6 if engine.fires else 0.0,
            "changes": sim.stats.changes, "time_changes": sim.stats.time_changes}


def best_of(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["us_per_event"])


def run_config(name: str, text: str, customers: int, warmup: list[Event], timed: list[Event],
               repeat: int, quiet: bool) -> dict[str, Any]:
    rule_file = load_rules_text(text, source=f"<{name}>")
    inc = RuleSet(rule_file)
    full = FullRuleSet(rule_file)
    sim = Simulator(inc)
    started = time.perf_counter()
    for ev in warmup:
        sim.feed(ev)
    warm_s = time.perf_counter() - started
    snap = snapshot(sim)
    dirty = sum(len(inc.dirty_for_type(ev.type)) for ev in timed) / len(timed)
    out: dict[str, Any] = {
        "config": name, "segments": len(inc.segments), "dirty_per_event": dirty,
        "dirty_fraction": dirty / len(inc.segments), "warmup_s": warm_s,
        "customers_in_state": len(snap.states),
        "incremental": best_of(timed_feed(inc, snap, timed) for _ in range(repeat)),
        "full": best_of(timed_feed(full, snap, timed) for _ in range(repeat)),
    }
    out["incremental_speedup"] = (out["full"]["us_per_event"]
                                  / out["incremental"]["us_per_event"])
    if not quiet:
        print(f"  {name}: incremental {out['incremental']['us_per_event']:.1f} us/event, "
              f"full {out['full']['us_per_event']:.1f} us/event", file=sys.stderr)
    return out


def print_report(r: dict[str, Any]) -> None:
    print("us per event: total (apply + timers + simulator); fires = timer fires per event")
    print(f"{'config':<13} {'segs':>4} {'dirty':>5} | {'incremental':>11} {'apply':>7} "
          f"{'timers':>7} {'fires':>5} | {'all segs':>9} {'apply':>7} | {'gain':>5}")
    for c in r["configs"]:
        i, f = c["incremental"], c["full"]
        print(f"{c['config']:<13} {c['segments']:>4} {c['dirty_per_event']:>5.1f} | "
              f"{i['us_per_event']:>11.1f} {i['apply_us_per_event']:>7.1f} "
              f"{i['timers_us_per_event']:>7.1f} {i['fires_per_event']:>5.2f} | "
              f"{f['us_per_event']:>9.1f} {f['apply_us_per_event']:>7.1f} | "
              f"{c['incremental_speedup']:>4.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--customers", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=12_000, help="untimed events first")
    ap.add_argument("--events", type=int, default=3_000, help="timed events")
    ap.add_argument("--days", type=float, default=60.0, help="period of warm-up + timed events")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per mode (fastest kept)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--json", type=Path, default=default_json("segment_scaling"))
    args = ap.parse_args(argv)

    cpu = pin_to_one_core(args.cpu)
    info = machine_info()
    events = make_events(args.customers, args.warmup + args.events, args.seed, START_MS,
                         args.days)
    warmup, timed = events[: args.warmup], events[args.warmup:]
    configs = [("25", rule_text(25)), ("250", rule_text(250)),
               ("250 (25 hot)", rule_text(250, hot=25))]
    results = [run_config(name, text, args.customers, warmup, timed, args.repeat, args.quiet)
               for name, text in configs]
    report = {"benchmark": "segment_scaling", "command": command_line(), "cpu": cpu,
              "machine": info, "customers": args.customers, "warmup": args.warmup,
              "events": args.events, "days": args.days, "repeat": args.repeat,
              "configs": results, "loadavg_after": list(loadavg())}
    print_report(report)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
