"""Assemble bench/results/worker.md from the JSON files of the worker benchmarks, optionally
running them first (each in its own process, one after the other).

    python -m bench.worker_report                # rebuild worker.md from the JSON files
    python -m bench.worker_report --run          # throughput, latency (2,000, 1,000, 500/s),
                                                 # profile, then the report (~10 min)
    python -m bench.worker_report --run --quick  # small sizes, into bench/results/quick/
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, rel


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_all(quick: bool) -> None:
    out = RESULTS / "quick" if quick else RESULTS
    q = ["--quick"] if quick else []
    steps = [
        ["bench.worker_throughput", *q, "--floor"],
        ["bench.worker_throughput", *q, "--events", "50000" if quick else "100000",
         "--workers", "1", "--no-simulate", "--what-if", "SEGMENTER_COMMIT_INTERVAL_MS=1000",
         "--json", rel(out / "worker_throughput_whatif.json")],
        ["bench.worker_latency", *q],
        ["bench.worker_latency", *q, "--rate", "1000", "--json",
         rel(out / "worker_latency_1000.json")],
        ["bench.worker_latency", *q, "--rate", "500", "--json",
         rel(out / "worker_latency_500.json")],
    ]
    for step in steps:
        print("$ python -m " + " ".join(step), file=sys.stderr)
        subprocess.run([sys.executable, "-m", *step], cwd=ROOT, check=True)


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "n/a" if x is None or x != x else format(x, spec)


def machine_section(m: dict[str, Any]) -> list[str]:
    return [
        "## Machine", "",
        "| | |", "|---|---|",
        f"| CPU | {m['cpu']} ({m['cpus_online']} online, shared by the Kafka broker, the "
        "worker(s), this benchmark and other users of the machine) |",
        f"| Python | {m['implementation']} {m['python']}, orjson {m['orjson']} |",
        f"| Platform | {m['platform']} |",
        f"| Code | git HEAD {m['git_head']}, engine digest {m['engine_digest']} "
        "(work tree as run) |",
        f"| Load average at start | {' / '.join(f'{x:.2f}' for x in m['loadavg'])} |",
        "",
    ]


def throughput_section(t: dict[str, Any], whatif: dict[str, Any] | None) -> list[str]:
    lines = ["## Throughput: preloaded topics until lag 0", "",
             f"`{t['command']}` ({t['total_s']:.0f} s in all)", "",
             f"{t['events']:,} events (generator log, seed {t['seed']}, {t['days']:g} days, "
             f"moved to end now) for {t['customers']:,} customers, {t['partitions']} partitions "
             f"per topic, keyed by customer id; per topic: "
             + ", ".join(f"{k} {v:,}" for k, v in t["per_topic"].items())
             + f". Rules `{t['rules']}`, wall clock, at_least_once, memory store.", ""]
    lines += ["| | events/s | notes |", "|---|---|---|"]
    for mode, c in t["ceiling"].items():
        what = {"raw": "bytes only", "orjson": "+ orjson.loads of each value",
                "parse_event": "+ model.events.parse_event (the worker's parser)"}[mode]
        lines.append(f"| ceiling: bare aiokafka consumer group, {what} | "
                     f"**{fmt(c['events_per_s'])}** | {fmt(c['events_per_s_with_join'])} with "
                     f"the {c['join_s']:.2f} s group join; {fmt(c['events_per_cpu_s'])} per "
                     "CPU-s of the consumer |")
    if "simulate" in t:
        s = t["simulate"]
        lines.append(f"| `simulate` of the same log (engine alone, no Kafka, event clock) | "
                     f"**{fmt(s['events_per_s'])}** | {fmt(s['events_per_cpu_s'])} per CPU-s |")
    raw = t["ceiling"]["raw"]["events_per_s"]
    for n, r in t["runs"].items():
        if "error" in r:
            lines.append(f"| {n} worker process(es) | failed | {r['error']} |")
            continue
        if r.get("worker_env"):
            continue
        acc = r["cpu_account"]
        lines.append(
            f"| {n} worker process(es), from the first segment change to "
            f"{'lag 0' if r.get('events_per_s_lag0') else 'the last record handled'} | "
            f"**{fmt(r['events_per_s'])}** | {r['ratio_to_raw_ceiling']:.2%} of the raw ceiling, "
            f"{r['ratio_to_orjson_ceiling']:.2%} of the orjson one; "
            f"{fmt(r['events_per_s_with_startup'])} with the {r['startup_s']:.1f} s startup; "
            f"{r['wall_s']:.1f} s; CPU-s: worker(s) "
            + " + ".join(f"{x:.1f}" for x in r["worker_cpu_s"])
            + f", Kafka {acc['kafka_s']:.1f}, other processes {acc['others_s']:.1f} "
            f"(machine {acc['machine_busy_share']:.0%} busy)"
            + ("; **lag never reached 0**: committed offset stuck on "
               + ", ".join(f"{k} at {c:,} of {e:,}" for k, (c, e) in r["lag_by_partition"].items())
               + " after every record was handled: timed to the moment the workers' "
               "events_consumed counters reached N" if r.get("commit_stuck") else "")
            + " |")
    runs = [(r, False) for r in t["runs"].values() if r.get("worker_env")]
    if whatif:
        runs += [(r, True) for r in whatif["runs"].values()]
    for r, separate in runs:
        if "events_per_s" not in r:
            continue
        env = ", ".join(f"`{k}={v}`" for k, v in r.get("worker_env", {}).items())
        floor = r.get("worker_env", {}).get("BENCH_FLOOR")
        if floor:
            label = ("**floor**: `bench.runtime_floor` (the same worker, its engine replaced "
                     "by a stub: an empty state per customer, a change record per new customer)")
        else:
            label = f"{r['workers']} worker" + (f" with {env}" if env else "")
        where = (f"separate run of {whatif['events']:,} events: `{whatif['command']}`"
                 if separate and whatif else "what-if, same run")
        lines.append(f"| {label} | {fmt(r['events_per_s'])} | "
                     f"{r['ratio_to_raw_ceiling']:.2%} of the raw ceiling; {where}; Kafka "
                     f"{r['cpu_account']['kafka_s']:.1f} CPU-s, other processes "
                     f"{r['cpu_account']['others_s']:.1f} |")
    goal = max((r.get("events_per_s", 0) for r in t["runs"].values()
                if not r.get("worker_env")), default=0) / raw
    lines += ["", f"Goal: the worker reaches ≥ 50% of the bare ceiling: **not met** "
              f"({goal:.2%} at best)." if goal < 0.5 else "Goal ≥ 50%: met.", ""]
    m1 = t["runs"].get("1", {}).get("metrics")
    if m1:
        floor_m = next((r.get("metrics") for r in t["runs"].values()
                        if r.get("worker_env", {}).get("BENCH_FLOOR")), None)
        lines += [
            f"The 1-worker run's `/metrics`: `segmenter_engine_evaluation_seconds` (the "
            "runtime's step after each fetch: decode and validation, the engine, output queued "
            "for the next commit, timers; observed once per fetch as the time per record "
            f"handled) gives {fmt(m1['evaluation_us_per_record'], ',.1f')} µs per record on "
            f"average over {fmt(m1['evaluations'])} fetches; × "
            f"{fmt(m1['events_consumed'])} records consumed ≈ "
            f"{_eval_share(m1, t['runs']['1']):.0%} of the worker process's CPU time (whole "
            "process, start-up included)"
            + (f"; the floor worker's same step: "
               f"{fmt(floor_m['evaluation_us_per_record'], ',.1f')} µs per record"
               if floor_m else "")
            + f". Change records by cause {m1['change_records']}; timer ticks "
            f"{fmt(m1['timer_ticks'])}.", ""]
    return lines


def _eval_share(m: dict[str, Any], run: dict[str, Any]) -> float:
    """Mean per-record step time × records consumed over the worker's CPU-s (an estimate: the
    histogram holds one per-record average per fetch, not the total time)."""
    cpu = sum(run.get("worker_cpu_s", []))
    us = m.get("evaluation_us_per_record", float("nan"))
    return us * m.get("events_consumed", 0) / 1e6 / cpu if cpu else float("nan")


def latency_section(lats: list[dict[str, Any]]) -> list[str]:
    lines = ["## Event-to-change latency at a fixed offered load", ""]
    lines += ["| offered | achieved | changes measured | p50 | p95 | p99 | max | p50 by 5 s of "
              "sending | worker CPU / Kafka / others | command |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in lats:
        s = r["latency_ms_record_ts"]
        a = r["cpu_account"]
        slices = ", ".join(f"{v:.0f}" for v in r["p50_ms_by_5s_of_sending"].values())
        lines.append(
            f"| {fmt(r['rate'])}/s, {r['warmup_s']:g} s warm-up + {r['duration_s']:g} s | "
            f"{fmt(r['offer']['achieved_rate'])}/s | {s['count']:,} | {fmt(s['p50'])} ms | "
            f"{fmt(s['p95'])} ms | {fmt(s['p99'])} ms | {fmt(s['max'])} ms | {slices} ms | "
            f"{a['workers_s'][0] / a['wall_s']:.0%} / {a['kafka_s'] / a['wall_s']:.0%} / "
            f"{a['others_s'] / a['wall_s']:.0%} of a core | `{r['command']}` |")
    lines += ["", "Latency = CreateTime of the segment-change record (stamped by the worker's "
              "producer when it sends) − CreateTime of the input record (stamped by this "
              "benchmark's producer at the send call, acks=1, linger 5 ms). Only changes with "
              "cause.kind = \"event\" for events sent after the warm-up count. Measured at the "
              "receiving end instead (receive time here − send, by a `read_committed` consumer, so "
              "including the wait for the worker's transaction to commit): JSON "
              "`latency_ms_receive`.", ""]
    return lines


def render(t: dict[str, Any] | None, lats: list[dict[str, Any]],
           whatif: dict[str, Any] | None, notes: str) -> str:
    first = t or (lats[0] if lats else None)
    lines = ["# Worker benchmarks (Kafka + the worker runtime, end to end)", "",
             f"Written by `python -m bench.worker_report` on {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
             ". Issue 4's measures: reported figures, never test assertions. See bench/README.md "
             "(worker section) for what each module does.", ""]
    if first:
        lines += machine_section(first["machine"])
    if t:
        lines += throughput_section(t, whatif)
    if lats:
        lines += latency_section(lats)
    if notes:
        lines += ["## Notes", "", notes.rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--run", action="store_true", help="run the benchmarks first")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--notes", type=Path, default=None,
                    help="a Markdown file appended as the Notes section")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.run:
        run_all(args.quick)
    src = RESULTS / "quick" if args.quick else RESULTS
    t = load(src / "worker_throughput.json")
    whatif = load(src / "worker_throughput_whatif.json")
    lats = sorted((x for x in (load(f) for f in src.glob("worker_latency*.json")) if x),
                  key=lambda r: -r["rate"])
    notes = args.notes.read_text() if args.notes else ""
    out = args.out or src / "worker.md"
    out.write_text(render(t, lats, whatif, notes))
    print(f"wrote {rel(out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
