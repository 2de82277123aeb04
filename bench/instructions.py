"""Instructions per event of the engine (`simulate` over a log), counted by valgrind's
callgrind: the A/B measure for a noisy machine.

Wall-clock and CPU-time figures of the same code scattered by ±15% between back-to-back runs on
this project's shared VM; the count of executed instructions does not. The replay is the
throughput run's (`Simulator.feed_lines` + `finish` over the raw lines), once over the log and
once over an empty log, whose count (interpreter start-up, imports, rule loading) is subtracted,
after a plain run that caches every module's bytecode (compiling is not counted).
With `--rev`, the same for `git archive REV` in parallel (one process per core).

    python -m bench.instructions --rules rules/examples/retail.yaml --log LOG.jsonl
    python -m bench.instructions --rules R --log L --rev 8559187    # before vs the working tree

Needs valgrind (Debian: `apt-get install valgrind`). callgrind runs the interpreter ~50x
slower: 20k-100k events are plenty (a 100k-event log takes ~5 minutes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
_REPLAY = """
import sys
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.runtime.gc_tuning import tune_gc
from streams.simulate import Simulator

sim = Simulator(RuleSet(load_rules(sys.argv[1])))
tune_gc()
with open(sys.argv[2], "rb") as f:
    sim.feed_lines(f)
sim.finish()
"""
_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def count(tree: Path, rules: Path, log: Path) -> int:
    """Instructions callgrind counts for the replay of `log` with the code in `tree`."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", _REPLAY, str(rules), str(log)],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, check=False)
    found = _COLLECTED.search(out.stderr)
    if out.returncode or found is None:
        raise SystemExit(f"valgrind failed in {tree} (exit {out.returncode}):\n"
                         + out.stderr.decode(errors="replace")[-2000:])
    return int(found.group(1))


def warm(tree: Path, rules: Path, log: Path) -> None:
    """The replay once without valgrind, so that every module it imports (lazily too) has its
    bytecode cached: otherwise the first counted run compiles what changed (a fresh `git
    archive` tree: everything, ~17k instructions per event of a 20k-event log) and the
    difference of the two counts is not the replay's."""
    subprocess.run([sys.executable, "-c", _REPLAY, str(rules), str(log)], cwd=tree,
                   env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                   capture_output=True, check=True)


def per_event(tree: Path, rules: Path, log: Path, empty: Path) -> float:
    lines = sum(1 for line in log.open("rb") if line.strip())
    if not lines:
        raise SystemExit(f"{log}: no events")
    warm(tree, rules, log)
    return (count(tree, rules, log) - count(tree, rules, empty)) / lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.instructions",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rules", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="JSONL events (as for simulate)")
    p.add_argument("--rev", default="", help="also count `git archive REV`, in parallel")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    rules, log = args.rules.resolve(), args.log.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.jsonl"
        empty.write_bytes(b"")
        trees = {"working tree": ROOT}
        if args.rev:
            tree = Path(tmp) / "rev"
            tree.mkdir()
            archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            trees = {f"git archive {args.rev}": tree, **trees}
        with concurrent.futures.ThreadPoolExecutor(len(trees)) as pool:
            done = {name: pool.submit(per_event, tree, rules, log, empty)
                    for name, tree in trees.items()}
            results = {name: f.result() for name, f in done.items()}
    print(f"rules {args.rules}, log {args.log}")
    for name, n in results.items():
        print(f"{name:>30}: {n:,.0f} instructions per event")
    if len(results) == 2:
        before, after = results.values()
        print(f"{'change':>30}: {(after - before) / before:+.1%}")


if __name__ == "__main__":
    main()
