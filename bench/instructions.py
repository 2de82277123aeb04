"""Instructions per event of the engine (`simulate` over a log), counted by valgrind's
callgrind: the A/B measure for a noisy machine. With `--task`, of the worker's compute instead
(everything but Kafka's I/O): a runtime task over the log's records (decode, partition check,
event-time merge, engine, change records) and, every `--commit-every` records, the commit's
changelog records encoded as the worker does.

Wall-clock and CPU-time figures of the same code scattered by ±15% between back-to-back runs on
this project's shared VM; the count of executed instructions does not. The replay is the
throughput run's (`Simulator.feed_lines` + `finish` over the raw lines), once over the log and
once over an empty log, whose count (interpreter start-up, imports, rule loading) is subtracted,
after a plain run that caches every module's bytecode (compiling is not counted).
With `--rev`, the same for `git archive REV` in parallel (one process per core).

    python -m bench.instructions --rules rules/examples/retail.yaml --log LOG.jsonl
    python -m bench.instructions --rules R --log L --rev 8559187    # before vs the working tree
    python -m bench.instructions --rules R --log L --task --tree /tmp/old   # a prepared tree

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
import os
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
os._exit(0)  # not the interpreter's teardown (freeing every state): no worker does it per event
"""
# the worker's compute, through one task (all records on one partition): records prepared
# outside the count (a pickle of key, value pairs); a commit every argv[4] records
_REPLAY_TASK = """
import os
import pickle
import sys
import msgspec
from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.runtime.gc_tuning import tune_gc
from streams.runtime.rulebook import Rulebook
from streams.runtime.store import MemoryStore
from streams.runtime.task import Task

# a record as aiokafka hands it over (attributes); a C-made struct, not a NamedTuple (its __new__
# runs interpreted: ~2.5k instructions per record that are the harness's, not the worker's)
class Rec(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int

with open(sys.argv[2], "rb") as f:
    wall, pairs = pickle.load(f)
every = int(sys.argv[3])
task = Task(0, Rulebook(RuleSet(load_rules(sys.argv[1]))), MemoryStore(), partitions=1,
            event_clock=True, worker_id="bench", sources=("purchases",))
drained = {"purchases": True}.get
tune_gc()
for i in range(0, len(pairs), every):
    task.add("purchases", [Rec("purchases", 0, i + j, k, v, 0)
                           for j, (k, v) in enumerate(pairs[i:i + every])], wall)
    task.drain(drained, 0.0, wall)
    pending = task.take()
    records = task.store.changelog_records(pending.dirty)
    task.store.committed(records, None)
    del pending, records
os._exit(0)  # not the interpreter's teardown (freeing every state): no worker does it per event
"""
_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def _replay(rules: Path, log: Path, every: int) -> list[str]:
    """The interpreter's arguments: simulate over the log, or the task over its records."""
    if not every:
        return ["-c", _REPLAY, str(rules), str(log)]
    return ["-c", _REPLAY_TASK, str(rules), str(log), str(every)]


def prepare_task_log(log: Path, out: Path) -> None:
    """(wall clock, [(key, value)]): each line keyed by its customer id, the wall clock a second
    past the last event (nothing is refused as being in the future)."""
    import pickle

    import orjson

    pairs, last = [], 0
    with log.open("rb") as f:
        for line in f:
            if line.strip():
                obj = orjson.loads(line)
                pairs.append((str(obj.get("customer_id", "")).encode(), line.rstrip(b"\n")))
                if isinstance(obj.get("ts"), int):
                    last = max(last, obj["ts"])
    out.write_bytes(pickle.dumps((last + 1000, pairs)))


def count(tree: Path, rules: Path, log: Path, every: int = 0) -> int:
    """Instructions callgrind counts for the replay of `log` with the code in `tree`."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         *_replay(rules, log, every)],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, check=False)
    found = _COLLECTED.search(out.stderr)
    if out.returncode or found is None:
        raise SystemExit(f"valgrind failed in {tree} (exit {out.returncode}):\n"
                         + out.stderr.decode(errors="replace")[-2000:])
    return int(found.group(1))


def warm(tree: Path, rules: Path, log: Path, every: int = 0) -> None:
    """The replay once without valgrind, so that every module it imports (lazily too) has its
    bytecode cached: otherwise the first counted run compiles what changed (a fresh `git
    archive` tree: everything, ~17k instructions per event of a 20k-event log) and the
    difference of the two counts is not the replay's."""
    subprocess.run([sys.executable, *_replay(rules, log, every)], cwd=tree,
                   env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                   capture_output=True, check=True)


def per_event(tree: Path, rules: Path, log: Path, empty: Path, lines: int,
              every: int = 0) -> float:
    warm(tree, rules, log, every)
    return (count(tree, rules, log, every) - count(tree, rules, empty, every)) / lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.instructions",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rules", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="JSONL events (as for simulate)")
    p.add_argument("--rev", default="", help="also count `git archive REV`, in parallel")
    p.add_argument("--tree", type=Path, default=None,
                   help="also count this tree (e.g. a git worktree with its own compiled "
                        "build: a `git archive` tree runs as plain Python)")
    p.add_argument("--task", action="store_true",
                   help="count the worker's compute (a runtime task and its commits' "
                        "changelog encoding) instead of simulate's")
    p.add_argument("--commit-every", type=int, default=2500,
                   help="with --task: records per commit (default 2500: 100 ms at 25k/s)")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    rules, log = args.rules.resolve(), args.log.resolve()
    lines = sum(1 for line in log.open("rb") if line.strip())
    if not lines:
        raise SystemExit(f"{log}: no events")
    every = max(1, args.commit_every) if args.task else 0
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.jsonl"
        empty.write_bytes(b"")
        if every:
            prepare_task_log(log, Path(tmp) / "records.pickle")
            prepare_task_log(empty, Path(tmp) / "empty.pickle")
            log, empty = Path(tmp) / "records.pickle", Path(tmp) / "empty.pickle"
        trees = {"working tree": ROOT}
        if args.tree is not None:
            trees = {str(args.tree): args.tree.resolve(), **trees}
        if args.rev:
            tree = Path(tmp) / "rev"
            tree.mkdir()
            archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            trees = {f"git archive {args.rev}": tree, **trees}
        with concurrent.futures.ThreadPoolExecutor(len(trees)) as pool:
            done = {name: pool.submit(per_event, tree, rules, log, empty, lines, every)
                    for name, tree in trees.items()}
            results = {name: f.result() for name, f in done.items()}
    what = f"the worker's task, a commit every {every} records" if every else "simulate"
    print(f"rules {args.rules}, log {args.log}, {what}")
    for name, n in results.items():
        print(f"{name:>30}: {n:,.0f} instructions per event")
    if len(results) == 2:
        before, after = results.values()
        print(f"{'change':>30}: {(after - before) / before:+.1%}")


if __name__ == "__main__":
    main()
