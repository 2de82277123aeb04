"""`python -m bench.peers`: Segmenter's worker beside Quix Streams and Bytewax on the same work,
the same preloaded events and the same broker, in one run (issue 11, "Measure"). See
bench/README.md. Figures are reported, never asserted.

Per contender and round: a fresh topic prefix (topics and group), the events produced into a
fresh 4-partition input topic keyed by customer id, then the contender as a subprocess until it
has handled them all; its topics are deleted and its processes stopped at the end, also on an
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench.peers.report import markdown, summarize
from bench.peers.work import rule_file_text

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "cache" / "peers-logs"  # git-ignored
PEERS_VENV = ROOT / "bench" / ".venv-peers"  # git-ignored; made on first run
PEER_PACKAGES = ("quixstreams==3.28.1", "bytewax==0.21.1", "orjson")
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
PARTITIONS = 4
# Segmenter's topics, by name only (its runtime is being rewritten: nothing of streams/ else).
# Its inputs are purchases, email-events, web-activity, customer-profiles: the events here are
# purchases and refunds only, so the other three stay empty.
SEGMENTER_INPUTS = ("purchases",)
SEGMENTER_CHANGES = "segment-changes"


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    kind: str  # "ceiling" | "quix" | "bytewax" | "segmenter"
    option: str = ""  # guarantee (quix) or rule file (segmenter)


CONTENDERS = (
    Contender("ceiling", "bare aiokafka consumer + orjson.loads (ceiling)", "ceiling"),
    Contender("quix-alo", "Quix Streams (RocksDB, changelog; at-least-once)", "quix",
              "at_least_once"),
    Contender("quix-eos", "Quix Streams (RocksDB, changelog; exactly-once)", "quix",
              "exactly_once"),
    Contender("bytewax", "Bytewax (1 worker, recovery on)", "bytewax"),
    Contender("segmenter", "Segmenter worker, the same three segments as a rule file",
              "segmenter", "peers"),
    Contender("segmenter-retail", "Segmenter worker, rules/examples/retail.yaml", "segmenter",
              "rules/examples/retail.yaml"),
)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ------------------------------------------------------------------------------ the peers' venv


def peers_python() -> dict[str, str]:
    """Make bench/.venv-peers (pip from PyPI) if needed; returns {"quix": reason, "bytewax":
    reason} for each peer that cannot be imported there (empty when both can)."""
    python = PEERS_VENV / "bin" / "python"
    probes = {"quix": "import quixstreams, orjson", "bytewax": "import bytewax, orjson"}

    def missing() -> dict[str, str]:
        out = {}
        for name, code in probes.items():
            try:
                done = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                      timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                out[name] = str(exc)
                continue
            if done.returncode:
                out[name] = (done.stderr.strip().splitlines() or ["import failed"])[-1]
        return out

    if python.exists() and not missing():
        return {}
    say(f"installing {' '.join(PEER_PACKAGES)} into {PEERS_VENV.relative_to(ROOT)}")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        say(f"peers' venv: {exc}")
    return missing()


# ------------------------------------------------------------------------------ Kafka


def make_records(events: int, customers: int) -> list[tuple[bytes, bytes]]:
    """(customer id, JSON) of the generator's purchases and refunds (seed 42, 90 days)."""
    from model.events import encode_event
    from streams.generator import generate

    return [(e.customer_id.encode(), encode_event(e))
            for e in generate(customers=customers, events=events, seed=42, start_ms=START_MS,
                              mix=(0.0, 0.0, 1.0), profile_fraction=0.0)]


async def preload(bootstrap: str, topics: Sequence[str], records: Sequence[tuple[bytes, bytes]]
                  ) -> None:
    """Create `topics` (4 partitions) and produce the records into the first one (acks=1; the
    default partitioner puts each customer on one partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
        for _ in range(100):  # until every partition has a leader
            described = await admin.describe_topics(list(topics))
            if all(len(t["partitions"]) == PARTITIONS and all(
                    p["leader"] >= 0 for p in t["partitions"]) for t in described):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value in records:
            pending.append(await producer.send(topics[0], value, key=key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Every topic whose name contains `prefix` (Quix names its changelogs after the group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if prefix in t]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


# ------------------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (/proc/<pid>/stat), nan once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def started(cmd: Sequence[str], log: Path, env: dict[str, str], cwd: Path = ROOT
                  ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The command in its own session, output to `log`; SIGTERM to its process group on exit
    (SIGKILL 20 s later)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)


def last_result(log: Path) -> dict[str, Any] | None:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("RESULT "):
            parsed: dict[str, Any] = json.loads(line[len("RESULT "):])
            return parsed
    return None


def tail(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1][:200] if lines else "no output"


# ------------------------------------------------------------------------------ one run


@dataclass
class Run:
    bootstrap: str
    events: int
    limit_s: float
    state_dir: Path
    rules_file: Path
    worker_tree: Path  # where `python -m segmenter.commands.worker` runs (cwd: its code)
    commit_ms: int = 0  # the worker's SEGMENTER_COMMIT_INTERVAL_MS (0: its default, 100 ms)


async def run_peer(c: Contender, run: Run, prefix: str, python: str) -> dict[str, Any]:
    """A peer script: it reports its own figures (bench.peers.peer)."""
    module = {"ceiling": "bench.peers.ceiling", "quix": "bench.peers.quix",
              "bytewax": "bench.peers.bytewax_flow"}[c.kind]
    interpreter = sys.executable if c.kind == "ceiling" else python  # aiokafka is ours
    cmd = [interpreter, "-m", module, "--bootstrap", run.bootstrap, "--topic", prefix + "events",
           "--out", prefix + "changes", "--group", prefix + "group", "--events", str(run.events),
           "--state-dir", str(run.state_dir), "--guarantee", c.option or "at_least_once"]
    log = LOGS / f"{prefix}log.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    begin = time.monotonic()
    async with started(cmd, log, env) as proc:
        while proc.poll() is None:
            if time.monotonic() - begin > run.limit_s:
                return {"error": f"failed: not done after {run.limit_s:.0f} s (log {log})"}
            await asyncio.sleep(0.2)
    result = last_result(log)
    if proc.returncode or result is None or result.get("records") != run.events:
        return {"error": f"failed: exit {proc.returncode}, {tail(log)} (log {log})"}
    return result


async def run_segmenter(c: Contender, run: Run, prefix: str) -> dict[str, Any]:
    """The worker CLI; done when the group `<prefix>segmenter` has committed the end offset of
    every input partition (only `<prefix>purchases` has records: the others stay empty). Timed
    from the CreateTime of its first change record (its start-up and group join excluded, as
    the peers' own figures exclude theirs)."""
    rules = run.rules_file if c.option == "peers" else run.worker_tree / c.option
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTER_")}
    env.update(SEGMENTER_KAFKA_BOOTSTRAP=run.bootstrap, SEGMENTER_TOPIC_PREFIX=prefix,
               SEGMENTER_PARTITIONS=str(PARTITIONS), SEGMENTER_WEB_PORT="0",
               SEGMENTER_STATE_DIR=str(run.state_dir), SEGMENTER_CLOCK="event")
    if run.commit_ms:
        env["SEGMENTER_COMMIT_INTERVAL_MS"] = str(run.commit_ms)
    inputs = [TopicPartition(prefix + SEGMENTER_INPUTS[0], p) for p in range(PARTITIONS)]
    changes = [TopicPartition(prefix + SEGMENTER_CHANGES, p) for p in range(PARTITIONS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, group_id=None,
                              enable_auto_commit=False, isolation_level="read_committed")
    await admin.start()
    await reader.start()
    log = LOGS / f"{prefix}worker.log"
    cmd = [sys.executable, "-m", "segmenter.commands.worker", "--rules", str(rules)]
    try:
        ends = await reader.end_offsets(inputs)
        begin = time.time()
        samples: list[tuple[float, float]] = []
        first_ms: int | None = None
        async with started(cmd, log, env, run.worker_tree) as proc:
            while True:
                now = time.time()
                samples.append((now, cpu_seconds(proc.pid)))
                if proc.poll() is not None:
                    return {"error": f"failed: worker exited {proc.returncode}, {tail(log)}"}
                if now - begin > run.limit_s:
                    return {"error": f"failed: not done after {run.limit_s:.0f} s (log {log})"}
                if first_ms is None and prefix + SEGMENTER_CHANGES in await admin.list_topics():
                    found = await reader.offsets_for_times({tp: 0 for tp in changes})
                    stamps = [o.timestamp for o in found.values() if o is not None]
                    first_ms = min(stamps) if stamps else None
                try:
                    committed = await admin.list_consumer_group_offsets(prefix + "segmenter")
                except KafkaError as exc:  # a broker just started: no coordinator yet
                    if not exc.retriable:
                        raise
                    committed = {}
                if first_ms is not None and all(
                        tp in committed and committed[tp].offset >= end
                        for tp, end in ends.items()):
                    break
                await asyncio.sleep(0.1)
            done = await reader.end_offsets(changes)
        causes = await count_causes(reader, {tp: done[tp] for tp in changes})
        t0 = first_ms / 1000
        cpu0 = next((cpu for t, cpu in reversed(samples) if t <= t0), samples[0][1])
        return {"records": sum(ends.values()), "wall_s": now - t0,
                "cpu_s": samples[-1][1] - cpu0, "startup_s": t0 - begin,
                "changes": sum(causes.values()), "changes_by_cause": causes,
                "version": f"rules {rules.name}; {engine_of(log)}; "
                           f"{causes.get('time', 0):,} of its changes by timers"}
    finally:
        await reader.stop()
        await admin.close()


async def count_causes(reader: AIOKafkaConsumer, ends: dict[TopicPartition, int]
                       ) -> dict[str, int]:
    """Change records on segment-changes by `cause.kind` (event, time...), read to `ends`."""
    import orjson

    wanted = {tp: end for tp, end in ends.items() if end}
    reader.assign(list(wanted))
    await reader.seek_to_beginning()
    out: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
            [await reader.position(tp) < end for tp, end in wanted.items()]):
        for tp, messages in (await reader.getmany(timeout_ms=1000)).items():
            for m in messages:
                if m.offset < wanted[tp] and m.value is not None:
                    kind = str(orjson.loads(m.value).get("cause", {}).get("kind"))
                    out[kind] = out.get(kind, 0) + 1
    return out


async def run_one(c: Contender, run: Run, records: Sequence[tuple[bytes, bytes]],
                  python: str) -> dict[str, Any]:
    prefix = f"peers-{c.name}-{uuid.uuid4().hex[:8]}-"
    topics = ([prefix + "purchases"] if c.kind == "segmenter"
              else [prefix + "events", prefix + "changes"])
    try:
        await preload(run.bootstrap, topics, records)
        if c.kind == "segmenter":
            result = await run_segmenter(c, run, prefix)
        else:
            result = await run_peer(c, run, prefix, python)
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(run.bootstrap, prefix)
    if not result.get("error"):
        result["events_per_s"] = run.events / result["wall_s"]
        result["cpu_ms_per_1k"] = result["cpu_s"] / run.events * 1e6
    return result


# ------------------------------------------------------------------------------ the bench


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this contender (repeatable; a prefix: quix = quix-alo + "
                        "quix-eos): " + ", ".join(c.name for c in CONTENDERS))
    p.add_argument("--json", type=Path, default=RESULTS / "peers.json",
                   help="result file (peers.md is written beside it)")
    p.add_argument("--worker-rev", default="", metavar="REV",
                   help="run Segmenter's worker from `git archive REV` (e.g. HEAD) instead of "
                        "the working tree as it is")
    p.add_argument("--commit-interval-ms", type=int, default=0, metavar="MS",
                   help="the worker's commit interval (default: its own, 100 ms; the peers "
                        "commit every 1 s here: quix.py's commit_interval, bytewax_flow.py's "
                        "epoch)")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--limit", type=float, default=0.0,
                   help="seconds a run may take before it counts as failed "
                        "(default 120 + events/200)")
    return p.parse_args(argv)


async def bench(args: argparse.Namespace, chosen: Sequence[Contender]) -> list[dict[str, Any]]:
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries right after topic creation
    unavailable = peers_python() if any(c.kind in ("quix", "bytewax") for c in chosen) else {}
    for name, reason in unavailable.items():
        say(f"{name} unavailable: {reason}")
    say(f"generating {args.events:,} events for {args.customers:,} customers")
    records = make_records(args.events, args.customers)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        rules_file = Path(tmp) / "peers.yaml"
        rules_file.write_text(rule_file_text())
        tree = ROOT
        if args.worker_rev and any(c.kind == "segmenter" for c in chosen):
            tree = Path(tmp) / "worker-tree"
            tree.mkdir()
            archive = subprocess.run(["git", "archive", args.worker_rev], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            build_native(tree)
        for round_ in range(1, args.rounds + 1):
            for c in chosen:
                base = {"contender": c.name, "round": round_}
                if c.kind in unavailable:
                    runs.append({**base, "error": f"unavailable: {unavailable[c.kind]}"})
                    continue
                state = Path(tempfile.mkdtemp(prefix=f"{c.name}-", dir=tmp))
                run = Run(args.bootstrap, len(records), args.limit or 120 + len(records) / 200,
                          state, rules_file, tree, args.commit_interval_ms)
                say(f"round {round_}/{args.rounds}: {c.name} ...")
                try:
                    result = await run_one(c, run, records, str(PEERS_VENV / "bin" / "python"))
                except Exception as exc:  # reported in the table, the other contenders go on
                    result = {"error": f"failed: {type(exc).__name__}: {exc}"}
                finally:
                    shutil.rmtree(state, ignore_errors=True)
                runs.append({**base, **result})
                if result.get("error"):
                    say(f"  {c.name}: {result['error']}")
                else:
                    say(f"  {c.name}: {result['events_per_s']:,.0f} events/s, "
                        f"{result['cpu_ms_per_1k']:.1f} CPU ms per 1k events, "
                        f"{result['changes']:,} change records, {result['wall_s']:.1f} s")
    return runs


def engine_of(log: Path) -> str:
    """Which engine the worker ran, from its start-up line ('engine compiled (mypyc)')."""
    found = re.search(r"; engine (compiled|plain Python)", log.read_text(errors="replace"))
    return f"engine {found.group(1)}" if found else "engine not logged"


def build_native(tree: Path) -> None:
    """Compile the archived tree's engine as the working tree's is (scripts/build_native.py,
    when the revision has it), so that an A/B of two revisions compares like with like."""
    script = tree / "scripts" / "build_native.py"
    if not script.exists():
        say(f"{tree.name}: no scripts/build_native.py at this revision: plain Python")
        return
    say(f"{tree.name}: compiling its engine (about a minute)")
    done = subprocess.run([sys.executable, str(script)], cwd=tree, capture_output=True,
                          text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    say(f"{tree.name}: " + (lines[-1] if lines else f"build_native exited {done.returncode}"))


def worker_source(rev: str) -> str:
    """Which code the worker ran, for the report."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    if rev:
        return f"`git archive {rev}` ({git('rev-parse', '--short', rev)})"
    dirty = git("status", "--porcelain", "--", "streams", "segmenter", "rules")
    return (f"the working tree, HEAD {git('rev-parse', '--short', 'HEAD')}"
            + (" with uncommitted changes" if dirty else ""))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    chosen = [c for c in CONTENDERS
              if not args.only or any(c.name.startswith(o) for o in args.only)]
    if not chosen:
        raise SystemExit(f"--only: no contender called {args.only}")
    command = "python -m bench.peers " + shlex.join(sys.argv[1:] if argv is None else argv)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    worker_code = worker_source(args.worker_rev)
    load0 = os.getloadavg()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        runs = asyncio.run(bench(args, chosen))
    except KeyboardInterrupt:
        raise SystemExit("interrupted: its processes were stopped, its topics deleted") from None
    facts = [f"{args.events:,} events (purchases and refunds of `streams.generator`, seed 42) "
             f"for {args.customers:,} customers, one 4-partition input topic per run, "
             f"{args.rounds} round(s); broker {args.bootstrap}",
             f"{os.cpu_count()} CPU cores, shared; load average {load0[0]:.2f} before, "
             f"{os.getloadavg()[0]:.2f} after",
             "events/s and CPU ms per 1k events from the first record handled to the end "
             "(see bench/README.md); ranges are min–max over the rounds"]
    if any(c.kind == "segmenter" for c in chosen):
        facts.insert(1, f"Segmenter's worker: {worker_code}; commits every "
                        f"{args.commit_interval_ms or 100} ms (the peers: every 1 s)")
    rows = summarize([(c.name, c.label) for c in chosen], runs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "date": date, "facts": facts,
                                     "rows": rows, "runs": runs}, indent=1) + "\n")
    text = markdown(rows, command=command, date=date, facts=facts)
    args.json.with_suffix(".md").write_text(text)
    print("\n" + text)
    say(f"written {args.json} and {args.json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
