"""Restore time of the customers' state from the changelog with 1, 2 and 4 worker processes.

    python -m bench.restore                                  # 1M customers, 1/2/4 workers
    python -m bench.restore --customers 100000 --workers 1 2 --json bench/results/quick/restore.json
    python -m bench.restore --store memory:// rocksdb://     # also a cold RocksDB restore

One changelog under a fresh prefix (`bench-restore-<hex>-`, 4 partitions, streams.runtime.app
.ensure_topics) is filled with `--customers` realistic states: a few hundred customers' states
built by the engine (rules/examples/retail.yaml over `streams.generator.generate` events ending
now, then fired one day ahead so no timer falls due during the run), copied under new ids
`r-<n>`, each produced to the partition murmur2 gives its key (acks=all, explicit partition, ~1 MB
batches). The input topics stay empty, so the group commits no offsets and the workers write no
changelog record: every run (same app id, same changelog) restores the same records; the
changelog's end offsets are checked before each run. Per N: N `python -m
segmenter.commands.worker` processes, a fresh state folder, timed from the first process start
until every worker's /readyz is 200, their partitions cover all 4 (each once) and the broker shows
the group stable with exactly those members' assignments. The workers'
"restored" log lines give the per-partition restore time; VmHWM in /proc gives their peak RSS.
While restoring, a worker whose /readyz does not answer within 2 s has its event loop blocked:
the longest stretch without an answer is reported. A bare consumer reading the whole changelog
(and `MemoryStore.restore` over partition 0's records in this process, with the garbage collector
on, as in the worker, and off) is the ceiling. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/restore.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import (
    MIX,
    RESULTS,
    RETAIL,
    command_line,
    machine_info,
    rel,
    write_json,
)
from bench.worker_common import (
    BOOTSTRAP,
    DAY_MS,
    LOGS,
    CpuAccount,
    cpu_seconds,
    delete_prefixed_topics,
    free_port,
    new_prefix,
    settings_for,
    worker_env,
    worker_process,
)
from streams.runtime.app import INPUTS, changelog_topic, ensure_topics
from streams.runtime.records import partition_for

PARTITIONS = 4
HORIZON_MS = DAY_MS  # templates are fired this far ahead: nothing falls due during the bench
TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
RESTORED = re.compile(TS + r" .*partition (\d+): restored (\d+) customers from (\d+) changelog "
                      r"records in ([\d.]+) s")
RESTORING = re.compile(TS + r" .*partition (\d+): restoring, (\d+) of (\d+) changelog records")
TASKS = re.compile(TS + r" .*tasks now: \[([\d, ]*)\]")
TROUBLE = re.compile(r"could not start|Traceback|ERROR")
EXPIRED = "Heartbeat session expired"  # the loop was blocked longer than the session timeout


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the changelog


def templates(count: int, now_ms: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(quoted customer id, encode_state) of `count` generator customers (10 events each on
    average, over the 90 days before now) after the engine ran them and fired them HORIZON_MS
    ahead."""
    from model.codec import encode_state
    from model.state import CustomerState
    from rules.loader import load_rules
    from rules.ruleset import RuleSet
    from streams.engine import Engine
    from streams.generator import generate

    engine = Engine(RuleSet(load_rules(RETAIL)))
    states: dict[str, CustomerState] = {}
    for ev in generate(customers=count, events=count * 10, seed=seed,
                       start_ms=now_ms - 90 * DAY_MS, days=90.0, mix=MIX):
        out = engine.apply(states.get(ev.customer_id), ev, ev.ts)
        if out.state is None:
            states.pop(ev.customer_id, None)
        else:
            states[ev.customer_id] = out.state
    horizon = now_ms + HORIZON_MS
    return [(orjson.dumps(cid), encode_state(engine.fire(st, horizon).state or st))
            for cid, st in states.items()]


async def fill(bootstrap: str, topic: str, customers: int,
               tmpl: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Produce one state per customer r-<n> (a template's copy) to murmur2(key)'s partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                max_batch_size=1_000_000, request_timeout_ms=120_000)
    await producer.start()
    started = time.perf_counter()
    counts = [0] * PARTITIONS
    total_bytes = 0
    try:
        batches = [producer.create_batch() for _ in range(PARTITIONS)]
        inflight: deque[asyncio.Future[Any]] = deque()
        for n in range(customers):
            key = f"r-{n}".encode()
            quoted, value = tmpl[n % len(tmpl)]
            value = value.replace(quoted, b'"' + key + b'"')
            p = partition_for(key, PARTITIONS)
            if batches[p].append(key=key, value=value, timestamp=None) is None:
                inflight.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=value, timestamp=None)
                while len(inflight) > 16:
                    await inflight.popleft()
            counts[p] += 1
            total_bytes += len(value)
            if (n + 1) % 100_000 == 0:
                dt = time.perf_counter() - started
                say(f"  filled {n + 1:,}/{customers:,} ({(n + 1) / dt:,.0f}/s)")
        for p, batch in enumerate(batches):
            if batch.record_count():
                inflight.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*inflight)
    finally:
        await producer.stop()
    wall = time.perf_counter() - started
    return {"records": customers, "per_partition": counts, "value_bytes": total_bytes,
            "value_bytes_mean": total_bytes / max(1, customers), "wall_s": wall,
            "records_per_s": customers / wall}


async def changelog_ends(bootstrap: str, topic: str) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


async def ceiling(bootstrap: str, topic: str, ends: list[int]) -> dict[str, Any]:
    """A bare consumer (the worker's restore consumer settings) reads every partition to its
    end; then MemoryStore.restore over partition 0's records, in this process."""
    from streams.runtime.store import MemoryStore

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    kept: list[tuple[bytes, bytes | None]] = []
    records = nbytes = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        while records < sum(ends) and time.perf_counter() - started < 600:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for tp, msgs in batch.items():
                records += len(msgs)
                nbytes += sum(len(m.value or b"") for m in msgs)
                if tp.partition == 0:
                    kept.extend((m.key or b"", m.value) for m in msgs)
        read_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    out: dict[str, Any] = {"read_records": records, "read_mb": nbytes / 1e6, "read_s": read_s,
                           "read_records_per_s": records / read_s,
                           "memory_restore_p0_records": len(kept)}
    for label in ("gc_on", "gc_off"):
        store = MemoryStore()
        if label == "gc_off":
            gc.disable()
        started = time.perf_counter()
        for key, value in kept:
            store.restore(key, value)
        restore_s = time.perf_counter() - started
        gc.enable()
        store.close()
        gc.collect()
        out[f"memory_restore_{label}_s"] = restore_s
        out[f"memory_restore_{label}_records_per_s"] = len(kept) / restore_s
    return out


# ------------------------------------------------------------------------------ worker runs


def readyz(port: int) -> tuple[int, list[int]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return int(r.status), list(orjson.loads(r.read()).get("partitions", []))
    except urllib.error.HTTPError as e:
        return e.code, []
    except Exception:
        return 0, []


async def group_view(admin: AIOKafkaAdminClient, group: str, topic: str
                     ) -> tuple[str, list[list[int]]]:
    """The group's state on the broker and each member's partitions of `topic`."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    try:
        desc = (await admin.describe_consumer_groups([group]))[0].to_object()["groups"][0]
    except Exception as exc:
        return f"unknown ({type(exc).__name__})", []
    owned: list[list[int]] = []
    for member in desc["members"]:
        raw = member["member_assignment"]
        parts: list[int] = []
        if raw:
            for t, ps in ConsumerProtocolMemberAssignment.decode(raw).assignment:
                if t == topic:
                    parts += ps
        owned.append(sorted(parts))
    return str(desc["state"]), owned


def proc_status_mb(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def log_time(stamp: str) -> float:
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000


def parse_log(path: Path, t0: float) -> dict[str, Any]:
    """The restore lines of one worker log (times as seconds after t0, a time.time())."""
    restored: list[dict[str, Any]] = []
    progress: list[dict[str, Any]] = []
    assignments: list[dict[str, Any]] = []
    trouble: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        if m := RESTORED.search(line):
            s = float(m[5])
            restored.append({"at": round(log_time(m[1]) - t0, 3), "partition": int(m[2]),
                             "customers": int(m[3]), "records": int(m[4]), "seconds": s,
                             "records_per_s": int(m[4]) / s if s else None})
        elif m := RESTORING.search(line):
            progress.append({"at": round(log_time(m[1]) - t0, 3), "partition": int(m[2]),
                             "read": int(m[3]), "of": int(m[4])})
        elif m := TASKS.search(line):
            parts = [int(x) for x in m[2].replace(" ", "").split(",") if x]
            assignments.append({"at": round(log_time(m[1]) - t0, 3), "partitions": parts})
        elif TROUBLE.search(line) and re.match(TS, line):
            trouble.append({"at": round(log_time(line[:23]) - t0, 3), "line": line[24:300],
                            "expired": EXPIRED in line, "not_started": "could not start" in line})
    return {"restored": restored, "progress": progress, "assignments": assignments,
            "trouble": trouble}


@dataclass
class Run:
    bootstrap: str
    prefix: str
    rules: Path
    guarantee: str
    limit_s: float
    group: str
    topic: str  # an input topic: the group's assignment is read for it


async def run_workers(cfg: Run, count: int, store: str, admin: AIOKafkaAdminClient
                      ) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="segmenter-bench-restore-"))
    logs = [LOGS / f"{cfg.prefix}n{count}-w{i + 1}.log" for i in range(count)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            t0, mono0 = time.time(), time.monotonic()
            procs, ports = [], []
            for i in range(count):
                port = free_port()
                env = worker_env(cfg.prefix, bootstrap=cfg.bootstrap, partitions=PARTITIONS,
                                 state_dir=state_dir, web_port=port, rules=cfg.rules,
                                 worker_id=f"w{i + 1}", guarantee=cfg.guarantee)
                env["SEGMENTER_STORE"] = store
                procs.append(await stack.enter_async_context(worker_process(env, logs[i])))
                ports.append(port)
            account = CpuAccount(p.pid for p in procs)
            account.start()
            ready_s: float | None = None
            answered: list[float | None] = [None] * count  # last answer (monotonic)
            stall = [0.0] * count  # longest stretch without an answer after the first
            owned: list[list[int]] = []
            last_print = 0.0
            while time.monotonic() - mono0 < cfg.limit_s:
                for proc, log in zip(procs, logs, strict=True):
                    if proc.poll() is not None:
                        tail = log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"worker exited ({proc.returncode}):\n{tail}")
                answers = await asyncio.gather(*(asyncio.to_thread(readyz, p) for p in ports))
                owned = [parts for _, parts in answers]
                now = time.monotonic()
                for i, (status, _) in enumerate(answers):
                    last = answered[i]
                    if status:
                        answered[i] = now
                    elif last is not None:
                        stall[i] = max(stall[i], now - last)
                flat = sorted(p for parts in owned for p in parts)
                if all(st == 200 for st, _ in answers) and flat == list(range(PARTITIONS)):
                    # the broker agrees: a stable group of these members with these partitions
                    # (a worker dropped from the group may still say 200 for a moment)
                    state, members = await group_view(admin, cfg.group, cfg.topic)
                    if state == "Stable" and sorted(members) == sorted(owned):
                        ready_s = time.monotonic() - mono0
                        break
                if time.monotonic() - last_print >= 10:
                    last_print = time.monotonic()
                    say(f"  {count} worker(s), {time.monotonic() - mono0:.0f} s: readyz "
                        f"{[st for st, _ in answers]}, partitions {owned}")
                await asyncio.sleep(0.1)
            cpu = account.stop()
            peak = [proc_status_mb(p.pid, "VmHWM") for p in procs]
            rss = [proc_status_mb(p.pid, "VmRSS") for p in procs]
            cpu_s = [cpu_seconds(p.pid) for p in procs]
        parsed = [parse_log(log, t0) for log in logs]
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    # the restore that made each partition ready: the last one logged for it
    final: dict[int, dict[str, Any]] = {}
    end = ready_s if ready_s is not None else cfg.limit_s
    for pl in parsed:  # what happened until ready (not the rebalances of the shutdown)
        for k in ("restored", "progress", "assignments", "trouble"):
            pl[k] = [x for x in pl[k] if x["at"] <= end + 0.5]
    for i, pl in enumerate(parsed):
        for r in pl["restored"]:
            if r["partition"] in owned[i] and (r["partition"] not in final
                                                or r["at"] > final[r["partition"]]["at"]):
                final[r["partition"]] = {**r, "worker": f"w{i + 1}"}
    per_worker = []
    for i in range(count):
        mine = [r for r in final.values() if r["worker"] == f"w{i + 1}"]
        longest = max((r["seconds"] for r in mine), default=0.0)
        per_worker.append(sum(r["records"] for r in mine) / longest if longest else 0.0)
    return {"workers": count, "store": store, "ready": ready_s is not None, "ready_s": ready_s,
            "worker_records_per_s": per_worker, "readyz_longest_unanswered_s": stall,
            "partitions_by_worker": owned,
            "partition_restores": [final[p] for p in sorted(final)],
            "restores_logged": sum(len(pl["restored"]) for pl in parsed),
            "session_expiries": sum(t["expired"] for pl in parsed for t in pl["trouble"]),
            "could_not_start": sum(t["not_started"] for pl in parsed for t in pl["trouble"]),
            "assignments_logged": sum(len(pl["assignments"]) for pl in parsed),
            "peak_rss_mb": peak, "rss_at_ready_mb": rss, "worker_cpu_s_total": cpu_s,
            "cpu": cpu, "logs": [rel(p) for p in logs], "parsed": parsed}


# ------------------------------------------------------------------------------ report


def summary_line(r: dict[str, Any]) -> str:
    parts = ", ".join(f"p{x['partition']} {x['seconds']:.1f} s ({x['records_per_s']:,.0f}/s)"
                      for x in r["partition_restores"])
    ready = f"{r['ready_s']:.1f} s" if r["ready_s"] is not None else "NOT ready"
    peak = " / ".join(f"{m:,.0f}" for m in r["peak_rss_mb"])
    return f"{r['workers']} worker(s), {r['store']}: ready in {ready}; {parts}; peak RSS {peak} MB"


def markdown(data: dict[str, Any]) -> str:
    m, f, c = data["machine"], data["fill"], data["ceiling"]
    lines = [
        "# Restore from the changelog", "",
        f"`{data['command']}` ({data['date']}, git {m['git_head']}, {m['cpus_online']} cores "
        f"shared with other work, load average {m['loadavg'][0]:.2f} at the start; "
        f"{data['guarantee']}).", "",
        f"Changelog: {f['records']:,} customers ({data['templates']} engine-built states "
        f"copied), {f['value_bytes'] / 1e6:,.0f} MB of values (mean {f['value_bytes_mean']:,.0f}"
        f" B), per partition {', '.join(f'{n:,}' for n in f['per_partition'])}; filled in "
        f"{f['wall_s']:.1f} s ({f['records_per_s']:,.0f}/s).", "",
        f"Ceiling: one bare consumer reads the whole changelog at "
        f"{c['read_records_per_s']:,.0f} records/s ({c['read_mb'] / c['read_s']:,.0f} MB/s); "
        f"`MemoryStore.restore` (decode + dict) over partition 0's "
        f"{c['memory_restore_p0_records']:,} records in one process: "
        f"{c['memory_restore_gc_on_records_per_s']:,.0f} records/s "
        f"({c['memory_restore_gc_off_records_per_s']:,.0f} with the garbage collector off).",
        "",
        "Ready = from the first worker process start until every worker's /readyz is 200, "
        "their partitions cover all 4 and the broker shows the group stable with those "
        "assignments (process start, imports, group join and any rebalance "
        "included). Per partition: the worker's own `restored ... in S s` line (the restore "
        "that made it ready); a worker's tasks restore concurrently in its one event loop, so "
        "per worker: records restored / its longest restore. Restores and assignments logged "
        "until ready (more than one assignment: a rebalance, which cancels every restore under "
        "way); session expiries: `Heartbeat session expired` lines (the worker's event loop "
        "was blocked longer than the 10 s session timeout: it is dropped from the group, "
        "rejoins, and its restores start again); could not start: `could not start` lines. "
        "/readyz stall: the longest time a worker's /readyz went unanswered (2 s "
        "timeout) once it had answered. CPU s: while the runs lasted (the worker(s), and "
        "every other process on the machine).", "",
        "| store | workers | ready (s) | customers/s to ready | partition restore s "
        "(records/s) | records/s per worker | restores / assignments | session expiries / "
        "could not start | /readyz stall (s) | "
        "peak RSS per worker (MB) | worker CPU s | other processes' CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["runs"]:
        ready = (f"{r['ready_s']:.1f}" if r["ready_s"] is not None
                 else f"not ready after {data['limit_s']:.0f}")
        rate = f"{f['records'] / r['ready_s']:,.0f}" if r["ready_s"] else "-"
        parts = "<br>".join(f"p{x['partition']} ({x['worker']}): {x['seconds']:.1f} "
                            f"({x['records_per_s'] or 0:,.0f})" for x in r["partition_restores"])
        peak = " / ".join(f"{v:,.0f}" for v in r["peak_rss_mb"])
        cpu = " / ".join(f"{v:,.1f}" for v in r["cpu"]["workers_s"])
        per = " / ".join(f"{v:,.0f}" for v in r["worker_records_per_s"])
        stall = " / ".join(f"{v:.1f}" for v in r["readyz_longest_unanswered_s"])
        lines.append(f"| `{r['store']}` | {r['workers']} | {ready} | {rate} | {parts} | {per} | "
                     f"{r['restores_logged']} / {r['assignments_logged']} | "
                     f"{r['session_expiries']} / {r['could_not_start']} | {stall} | {peak} | "
                     f"{cpu} | {r['cpu']['others_s']:.1f} |")
    lines += ["", "Changelog end offsets before each run: "
              + "; ".join(f"{r['store']} {r['workers']}: {r['changelog_ends']}"
                          for r in data["runs"]), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    prefix = new_prefix("restore")
    settings = settings_for(prefix, args.bootstrap, PARTITIONS)
    topic = changelog_topic(settings)
    data: dict[str, Any] = {"benchmark": "restore", "command": command_line(),
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "machine": machine_info(), "stores": args.store,
                            "guarantee": args.guarantee, "prefix": prefix,
                            "limit_s": args.limit,
                            "changelog": topic, "runs": []}
    try:
        say(f"topics under {prefix} (changelog {topic})")
        await ensure_topics(settings)
        now = int(time.time() * 1000)
        say(f"building {args.templates} template states with the engine ...")
        tmpl = templates(args.templates, now, args.seed)
        data["templates"] = len(tmpl)
        say(f"filling the changelog with {args.customers:,} states ...")
        data["fill"] = await fill(args.bootstrap, topic, args.customers, tmpl)
        ends = await changelog_ends(args.bootstrap, topic)
        say(f"  {data['fill']['wall_s']:.1f} s, end offsets {ends}")
        say("ceiling: bare read of the changelog + MemoryStore.restore of partition 0 ...")
        data["ceiling"] = await ceiling(args.bootstrap, topic, ends)
        c = data["ceiling"]
        say(f"  read {c['read_records_per_s']:,.0f} records/s; MemoryStore.restore "
            f"{c['memory_restore_gc_on_records_per_s']:,.0f} records/s (gc off: "
            f"{c['memory_restore_gc_off_records_per_s']:,.0f})")
        cfg = Run(args.bootstrap, prefix, args.rules, args.guarantee, args.limit,
                  settings.group_id, settings.topic(INPUTS[0]))
        admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
        await admin.start()
        try:
            for store, n in ((st, n) for st in args.store for n in args.workers):
                before = await changelog_ends(args.bootstrap, topic)
                offsets = await admin.list_consumer_group_offsets(settings.group_id)
                say(f"{n} worker(s), {store}: changelog ends {before}, group offsets "
                    f"{len(offsets)} ...")
                result = await run_workers(cfg, n, store, admin)
                result["changelog_ends"] = before
                result["group_offsets_before"] = len(offsets)
                data["runs"].append(result)
                say("  " + summary_line(result))
        finally:
            await admin.close()
        return data
    finally:
        say(f"deleting the topics of {prefix} ...")
        with contextlib.suppress(Exception):
            await delete_prefixed_topics(args.bootstrap, prefix)


async def guarded(args: argparse.Namespace) -> dict[str, Any]:
    """bench() cancelled by SIGINT or SIGTERM (also when started in the background, where
    SIGINT is ignored): its finally clauses stop the workers and delete the topics."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await bench(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--store", choices=("memory://", "rocksdb://"), nargs="+",
                    default=["memory://"], help="one run per store and worker count")
    ap.add_argument("--guarantee", choices=("exactly_once", "at_least_once"),
                    default="exactly_once")
    ap.add_argument("--templates", type=int, default=500, help="engine-built states to copy")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--bootstrap", default=BOOTSTRAP)
    ap.add_argument("--limit", type=float, default=300.0,
                    help="a run not ready after this many seconds is reported as such")
    ap.add_argument("--json", type=Path, default=RESULTS / "restore.json")
    args = ap.parse_args(argv)
    try:
        data = asyncio.run(guarded(args))
    except asyncio.CancelledError:
        say("interrupted (workers stopped, topics deleted)")
        return 130
    write_json(args.json, data)
    md = args.json.with_suffix(".md")
    md.write_text(markdown(data))
    say(f"wrote {rel(args.json)} and {rel(md)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
