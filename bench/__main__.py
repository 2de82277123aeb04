"""Run every engine benchmark and write bench/results/engine.md.

    python -m bench                 # the spec's sizes (~5 minutes on a 2-core box)
    python -m bench --quick         # small sizes, ~1 minute, into bench/results/quick/
    python -m bench --no-profile    # skip the cProfile run
    python -m bench --report-only   # rebuild engine.md from the JSON files already there

Each benchmark runs in its own process (own CPU pinning, own peak RSS) and writes a JSON file
next to the report; the report lists the exact command of each.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, machine_info, rel

FULL: dict[str, list[str]] = {
    "engine_throughput": ["--state-size"],
    "segment_scaling": [],
    "timers": [],
    "profile_engine": [],
}
QUICK: dict[str, list[str]] = {
    "engine_throughput": ["--events", "100000", "--customers", "10000", "--state-size"],
    "segment_scaling": ["--customers", "500", "--warmup", "5000", "--events", "2000",
                        "--repeat", "1"],
    "timers": ["--burst-customers", "5000", "--drain-events", "50000",
               "--drain-customers", "5000"],
    "profile_engine": ["--events", "50000", "--customers", "5000"],
}
GOAL_EVENTS_PER_S = 100_000


def run_step(name: str, args: list[str], out: Path, cpu: int | None) -> float:
    cmd = [sys.executable, "-m", f"bench.{name}", *args]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if name == "profile_engine":
        cmd += ["--out", rel(out / "profile.txt")]
    cmd += ["--json", rel(out / f"{name}.json")]
    print(f"==> {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    took = time.perf_counter() - started
    print(f"    ({took:.0f} s)", file=sys.stderr, flush=True)
    return took


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _profile_top(path: Path, top: int = 10) -> list[str]:
    """Markdown rows of the top functions by own time from a cProfile dump."""
    if not path.exists():
        return []
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    out = ["| # | function | calls | own s | own % | cumulative s |",
           "|---|---|---:|---:|---:|---:|"]
    for i, ((file, line, func), (_cc, nc, tt, ct, _callers)) in enumerate(rows, 1):
        where = f"{rel(Path(file)) if file.startswith('/') else file}:{line}({func})"
        out.append(f"| {i} | `{where}` | {nc:,} | {tt:.2f} | {tt / total:.0%} | {ct:.2f} |")
    return out


def _code_line(out: Path, info: dict[str, Any]) -> str:
    """The code each benchmark ran: the work tree moves while others edit it."""
    seen: dict[tuple[str, str], list[str]] = {}
    for name in FULL:
        r = _load(out, name)
        if r is not None:
            m = r["machine"]
            seen.setdefault((m["git_head"], m["engine_digest"]), []).append(name)
    if not seen:
        seen[(info["git_head"], info["engine_digest"])] = []
    parts = [f"git HEAD {head}, engine digest {digest}"
             + (f" ({', '.join(names)})" if len(seen) > 1 else "")
             for (head, digest), names in seen.items()]
    note = ("; **the engine changed between benchmarks**" if len({d for _, d in seen}) > 1
            else "")
    return ("; ".join(parts) + note + ". The digest is a sha256 of the engine files "
            "(bench.common.ENGINE_FILES) as they were on disk, since the work tree may differ "
            "from HEAD.")


def _load_line(r: dict[str, Any]) -> str:
    before = r.get("loadavg_before") or r.get("machine", {}).get("loadavg") or [float("nan")]
    after = r.get("loadavg_after") or [float("nan")]
    return f"{before[0]:.2f} → {after[0]:.2f}"


def write_report(out: Path, took: dict[str, float], info: dict[str, Any]) -> Path:
    th = _load(out, "engine_throughput")
    sc = _load(out, "segment_scaling")
    tm = _load(out, "timers")
    lines = [
        "# Engine benchmarks",
        "",
        f"Written by `python -m bench` on {info['started']}. Speed goals are reported figures, "
        "never test assertions. Each benchmark runs in its own process pinned to one CPU "
        "(`os.sched_setaffinity`); see bench/README.md for what each one measures.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {info['cpu']} ({info['cpus_online']} online, {info['cpus_allowed']} allowed"
        " to this process; shared with other work) |",
        f"| Python | {info['implementation']} {info['python']}, orjson {info['orjson']} |",
        f"| Platform | {info['platform']} |",
        f"| Code | {_code_line(out, info)} |",
        f"| Load average at start | {' / '.join(f'{x:.2f}' for x in info['loadavg'])} "
        "(1 / 5 / 15 min) |",
        "",
        "Wall-clock figures on a shared 2-core machine are noisy; CPU-time figures "
        "(`time.process_time`) are given next to them where it matters: when CPU time is well "
        "below wall time, another process was running on the pinned core.",
        "",
        "## Summary",
        "",
        "| Measure | Result | Goal |",
        "|---|---|---|",
    ]
    if th:
        eps = th["events_per_s"]
        status = ("met" if eps >= GOAL_EVENTS_PER_S
                  else f"**not met**: {eps / GOAL_EVENTS_PER_S:.1%} of it")
        lines.append(f"| `simulate` throughput, {th['lines']:,} events / {th['customers']:,} "
                     f"customers, JSON parsing included | {_n(eps)} events/s "
                     f"({_n(th['events_per_cpu_s'])} per CPU-s) | ≥ 100,000 events/s: "
                     f"{status} |")
    if sc:
        by = {c["config"]: c for c in sc["configs"]}
        if "25" in by and "250" in by:
            a, b = by["25"], by["250"]
            lines.append(
                f"| Cost per event, 25 → 250 segments, ~10% touched | incremental "
                f"{a['incremental']['us_per_event']:.0f} → {b['incremental']['us_per_event']:.0f}"
                f" µs (apply alone {a['incremental']['apply_us_per_event']:.0f} → "
                f"{b['incremental']['apply_us_per_event']:.0f}); all segments "
                f"{a['full']['us_per_event']:.0f} → {b['full']['us_per_event']:.0f} µs "
                "| nearly flat with incremental |")
        if "250 (25 hot)" in by:
            h = by["250 (25 hot)"]
            lines.append(f"| Cost per event, 250 segments of which 25 read the stream | "
                         f"{h['incremental']['us_per_event']:.0f} µs incremental, "
                         f"{h['full']['us_per_event']:.0f} µs all segments | |")
    if tm:
        lines.append(f"| Timer firing (burst / drain) | {_n(tm['burst']['fires_per_s'])} / "
                     f"{_n(tm['drain']['fires_per_s'])} fires/s | |")
    if th and "state" in th:
        s = th["state"]
        lines.append(f"| State bytes per customer after the run | mean {_n(s['bytes_mean'])}, "
                     f"p50 {_n(s['bytes_p50'])}, p99 {_n(s['bytes_p99'])}, max "
                     f"{_n(s['bytes_max'])} | |")
    lines.append("")

    if th:
        lines += [
            "## Throughput of `simulate`",
            "",
            f"`{th['command']}` ({took.get('engine_throughput', 0):.0f} s in all)",
            "",
            f"Log: {th['lines']:,} events (generate_raw, seed {th['seed']}, {th['days']:g} days, "
            "mix 50% web / 35% email / 15% purchases+refunds), "
            f"{th['customers']:,} customers, rules `{th['rules']}` ({th['segments']} segments). "
            "Timed: `Simulator.feed_lines` over the file's lines + `finish()`.",
            "",
            "| | |",
            "|---|---|",
            f"| events/s (wall) | **{_n(th['events_per_s'])}** ({th['us_per_event']:.1f} µs/event)"
            " |",
            f"| events/s (CPU time) | {_n(th['events_per_cpu_s'])} |",
            f"| time | {th['wall_s']:.1f} s wall (feed {th['feed_s']:.1f} s, finish "
            f"{th['finish_s']:.2f} s), {th['cpu_s']:.1f} s CPU |",
        ]
        if "breakdown_us_per_event" in th:
            b = th["breakdown_us_per_event"]
            lines.append(f"| µs per event: inside `Engine.apply` / inside `Engine.fire` (timers, "
                         f"{th['timer_fires']:,} fires) / parsing + Simulator | "
                         f"{b['apply']:.1f} / {b['timers']:.1f} / "
                         f"{b['parse_and_simulator']:.1f} |")
        if "parse_only" in th:
            p = th["parse_only"]
            lines.append(f"| parse_event alone (read + orjson + validation) | "
                         f"{_n(p['events_per_s'])} events/s ({p['us_per_event']:.1f} µs/event) |")
        rejected = sum(th["rejected"].values())
        lines += [
            f"| applied / rejected | {th['applied']:,} / {rejected:,} |",
            f"| segment changes | {th['changes']:,} ({th['event_changes']:,} event-driven, "
            f"{th['time_changes']:,} time-driven) |",
            f"| customers in state / with a timer | {th['customers_in_state']:,} / "
            f"{th['customers_due']:,} |",
            f"| peak RSS | {_n(th['peak_rss_mb'])} MB (before the replay "
            f"{_n(th['rss_before_mb'])} MB) |",
            f"| load average (1 min) | {_load_line(th)} |",
            "",
        ]
    if th and "state" in th:
        s = th["state"]
        shares = ", ".join(f"{k} {v:.0%}" for k, v in s["share_of_bytes"].items())
        lines += [
            "## State size",
            "",
            f"`model.codec.encode_state` of every customer at the end of the run above "
            f"({s['customers']:,} customers).",
            "",
            "| mean | p50 | p90 | p99 | max | total |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {_n(s['bytes_mean'])} B | {_n(s['bytes_p50'])} B | {_n(s['bytes_p90'])} B | "
            f"{_n(s['bytes_p99'])} B | {_n(s['bytes_max'])} B | {s['bytes_total'] / 1e6:.1f} MB |",
            "",
            f"{s['buckets_mean']:.1f} buckets and {s['dedup_entries_mean']:.1f} dedup entries per "
            f"customer on average; encode_state takes {s['encode_us_per_customer']:.1f} µs per "
            f"customer. Bytes by part (approximate): {shares}.",
            "",
        ]
    if sc:
        lines += [
            "## Segment scaling",
            "",
            f"`{sc['command']}` ({took.get('segment_scaling', 0):.0f} s)",
            "",
            f"Synthetic rule files; {sc['customers']:,} customers, {sc['warmup']:,} warm-up "
            f"events then {sc['events']:,} timed events over {sc['days']:g} days "
            "(Event objects: no JSON parsing; due timers are fired in between and counted). "
            "\"all segments\" = `RuleSet.dirty_for_type` overridden to return every segment. "
            f"Fastest of {sc['repeat']} run(s) per cell.",
            "",
            "µs per event: *total* = the whole `Simulator.feed`; *apply* = inside `Engine.apply`"
            " (fold + re-evaluate the dirty segments); *timers* = inside `Engine.fire` for the "
            "customers that fell due before the event (the same work in both modes).",
            "",
            "| rule file | segments | dirty per event | incremental: total (CPU) | apply "
            "| apply per dirty segment | timers | timer fires per event | all segments: total "
            "| apply | gain (total) | gain (apply) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in sc["configs"]:
            i, f = c["incremental"], c["full"]
            lines.append(
                f"| {c['config']} | {c['segments']} | {c['dirty_per_event']:.1f} "
                f"({c['dirty_fraction']:.0%}) | {i['us_per_event']:.0f} "
                f"({i['us_per_event_cpu']:.0f}) | {i['apply_us_per_event']:.0f} | "
                f"{i['apply_us_per_event'] / c['dirty_per_event']:.1f} | "
                f"{i['timers_us_per_event']:.0f} | "
                f"{i['fires_per_event']:.2f} | {f['us_per_event']:.0f} | "
                f"{f['apply_us_per_event']:.0f} | {c['incremental_speedup']:.1f}× | "
                f"{f['apply_us_per_event'] / i['apply_us_per_event']:.1f}× |")
        lines += ["", f"Load average (1 min) after: {sc['loadavg_after'][0]:.2f}.", ""]
    if tm:
        lines += [
            "## Timer firing",
            "",
            f"`{tm['command']}` ({took.get('timers', 0):.0f} s)",
            "",
            "Timed: `Simulator.advance` (DueIndex pops + `Engine.fire` + settling); the time "
            "inside `Engine.fire` is measured separately.",
            "",
            "| scenario | customers | fires | time-driven changes | s | fires/s | µs/fire | "
            "of which Engine.fire |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, what in (("burst", "burst: one add_to_cart each, clock +400 d"),
                           ("drain", "drain: generator population, +400 d in 1 h ticks")):
            s = tm[name]
            lines.append(f"| {what} | {s['customers']:,} | {s['fires']:,} | "
                         f"{s['time_changes']:,} | {s['wall_s']:.2f} | {_n(s['fires_per_s'])} | "
                         f"{s['us_per_fire']:.1f} | {s['engine_fire_us_per_fire']:.1f} |")
        lines += ["", f"Load average (1 min) after: {tm['loadavg_after'][0]:.2f}.", ""]
    prof = _profile_top(out / "profile.pstats")
    head: list[str] = []
    if prof and (out / "profile.txt").exists():
        head = (out / "profile.txt").read_text().splitlines()[:3]
        lines += ["## Profile (cProfile, top 10 by own time)", ""]
        lines += [f"    {h.lstrip('# ')}" for h in head]
        lines += ["", *prof, "",
                  f"Full listing: `{rel(out / 'profile.txt')}`. cProfile inflates the cost of "
                  "small Python functions; shares, not absolute times, are what count.", ""]
    lines += ["## Commands", "", "```"]
    for r in (th, sc, tm):
        if r:
            lines.append(r["command"])
    pr = _load(out, "profile_engine")
    if pr:
        lines.append(pr["command"])
    lines += ["```", ""]
    path = out / "engine.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes, into results/quick/")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    ap.add_argument("--only", nargs="*", choices=sorted(FULL), help="run only these")
    ap.add_argument("--report-only", action="store_true", help="only rebuild engine.md")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin each benchmark to")
    ap.add_argument("--out", type=Path, default=None, help="results directory")
    args = ap.parse_args(argv)

    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    plan = QUICK if args.quick else FULL
    info = machine_info()
    if args.report_only:  # describe the machine as the benchmarks saw it
        runs = [r for r in (_load(out, n) for n in plan) if r is not None]
        if runs:
            info = runs[0]["machine"]
    took: dict[str, float] = {}
    if not args.report_only:
        for name, step_args in plan.items():
            if args.only and name not in args.only:
                continue
            if name == "profile_engine" and args.no_profile:
                continue
            took[name] = run_step(name, step_args, out, args.cpu)
    info["loadavg_end"] = list(os.getloadavg())
    path = write_report(out, took, info)
    print(f"==> wrote {rel(path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
