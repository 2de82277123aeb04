"""Profile the throughput run (Simulator.feed_lines + finish over the raw JSONL lines) to find the
hot spots. The default size keeps the spec's density (10 events per customer over 90 days) at a
tenth of the events, since a deterministic profiler slows the run down 2-3x.

    python -m bench.profile_engine                      # cProfile -> bench/results/profile.txt
    python -m bench.profile_engine --tool pyinstrument  # sampling, if pyinstrument is installed

Writes a text report (top functions by own time and by cumulative time) and, for cProfile, the
raw stats next to it as profile.pstats (git-ignored; open with `python -m pstats`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS,
    RETAIL,
    command_line,
    default_json,
    event_log,
    machine_info,
    pin_to_one_core,
    rel,
    write_json,
)
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.simulate import Simulator


def _replay(sim: Simulator, log: Path) -> None:
    with open(log, "rb") as f:
        sim.feed_lines(f)
    sim.finish()


def with_cprofile(sim: Simulator, log: Path, top: int, pstats_path: Path) -> str:
    prof = cProfile.Profile()
    prof.enable()
    _replay(sim, log)
    prof.disable()
    prof.dump_stats(str(pstats_path))
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    buf.write(f"== top {top} by own time (tottime) ==\n")
    stats.sort_stats("tottime").print_stats(top)
    buf.write(f"== top {top} by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def with_pyinstrument(sim: Simulator, log: Path) -> str:
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("pyinstrument is not installed: .venv/bin/pip install pyinstrument"
                         ) from None
    profiler = Profiler(interval=0.0005)
    profiler.start()
    _replay(sim, log)
    profiler.stop()
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=float, default=90.0)
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--tool", choices=("cprofile", "pyinstrument"), default="cprofile")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--out", type=Path, default=None,
                    help="report file (default bench/results/profile[-pyinstrument].txt)")
    ap.add_argument("--json", type=Path, default=default_json("profile_engine"),
                    help="where to write the run's facts (command, machine, code)")
    args = ap.parse_args(argv)

    cpu = pin_to_one_core(args.cpu)
    info = machine_info()
    log = event_log(args.events, args.customers, seed=args.seed, days=args.days)
    sim = Simulator(RuleSet(load_rules(args.rules)))
    started = time.perf_counter()
    if args.tool == "cprofile":
        out = args.out or RESULTS / "profile.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        body = with_cprofile(sim, log, args.top, out.with_suffix(".pstats"))
    else:
        out = args.out or RESULTS / "profile-pyinstrument.txt"
        body = with_pyinstrument(sim, log)
    wall = time.perf_counter() - started
    head = (f"# {command_line()}\n# {args.tool} of {rel(log)} with {rel(args.rules)}; "
            f"cpu {cpu}; {info['cpu']}; python {info['python']}; git {info['git_head']}; "
            f"engine {info['engine_digest']}\n# {sim.stats.applied:,} events in {wall:.1f} s "
            f"under the profiler; {sim.stats.changes:,} changes "
            f"({sim.stats.time_changes:,} time-driven)\n\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + body)
    write_json(args.json, {"benchmark": "profile_engine", "command": command_line(), "cpu": cpu,
                           "machine": info, "tool": args.tool, "log": rel(log),
                           "report": rel(out), "wall_s_under_profiler": wall,
                           "events": sim.stats.applied})
    print(head + body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
