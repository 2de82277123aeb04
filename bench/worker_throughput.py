"""Events/s one (and two) worker processes sustain end to end, against a bare aiokafka ceiling.

Issue 4's measure: the generated log (bench.common.event_log, default 200k events for 20k
customers, moved to end now) is preloaded into the four input topics under a fresh topic prefix,
keyed by customer id. Then, on the same broker in the same run:

1. ceilings: a bare aiokafka consumer group reads the four input topics until it has N records:
   raw bytes, + orjson.loads of every value, + model.events.parse_event (the worker's parser);
2. optionally `simulate` (the pure engine, no Kafka) over the same log, for the engine's share;
3. one worker (`python -m segmenter.commands.worker`, wall clock, rules/examples/retail.yaml) is
   started and timed until its consumer group (prefix + "segmenter") has lag 0 on the inputs,
   from its start (startup included) and from its first segment-changes record (excluded);
4. the same with two worker processes of one group on a second prefix (same records).

    python -m bench.worker_throughput                  # 200k events, 20k customers, 1 and 2 workers
    python -m bench.worker_throughput --quick          # 50k / 5k, into bench/results/quick/
    python -m bench.worker_throughput --workers 1      # one worker only
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS,
    RETAIL,
    command_line,
    default_json,
    event_log,
    loadavg,
    machine_info,
    rel,
    write_json,
)
from bench.worker_common import (
    BOOTSTRAP,
    CpuAccount,
    GroupWatch,
    Record,
    cpu_times,
    create_topics,
    delete_prefixed_topics,
    engine_split,
    load_records,
    new_prefix,
    per_topic,
    preload,
    scrape,
    settings_for,
    workers,
)
from streams.runtime.app import INPUTS

CEILING_MODES = ("raw", "orjson", "parse_event")


async def ceiling(bootstrap: str, prefix: str, expected: int, mode: str, currency: str,
                  limit_s: float = 120.0) -> dict[str, Any]:
    """A bare aiokafka consumer group over the four input topics until `expected` records,
    timed from the end of the group join (the assignment callback) and from its start."""
    import orjson
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    from model.events import parse_event

    assigned: list[float] = []

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, tps: Any) -> None:
            assigned.append(time.perf_counter())

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                group_id=f"{prefix}bench-ceiling-{mode}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    account = CpuAccount([])
    account.start()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await consumer.start()
    consumer.subscribe([prefix + t for t in INPUTS], listener=Listener())
    n = 0
    try:
        while n < expected:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                if mode == "orjson":
                    for m in msgs:
                        orjson.loads(m.value)
                elif mode == "parse_event":
                    for m in msgs:
                        parse_event(m.value, currency=currency)
                n += len(msgs)
            if time.perf_counter() - t0 > limit_s:
                raise TimeoutError(f"ceiling {mode}: {n} of {expected} records in {limit_s} s")
    finally:
        t1 = time.perf_counter()
        cpu = time.process_time() - cpu0
        await consumer.stop()
    acc = account.stop()
    start = assigned[0] if assigned else t0  # the group join is over: reading starts
    return {"mode": mode, "records": n, "wall_s": t1 - start, "wall_with_join_s": t1 - t0,
            "join_s": start - t0, "cpu_s": cpu, "events_per_s": n / (t1 - start),
            "events_per_s_with_join": n / (t1 - t0), "events_per_cpu_s": n / cpu if cpu else 0,
            "kafka_cpu_s": acc["kafka_s"], "others_cpu_s": acc["others_s"]}


def simulate_same_log(events: int, customers: int, seed: int, days: float,
                      rules: Path) -> dict[str, Any]:
    """bench.engine_throughput's replay of the same (unshifted) log: the engine alone."""
    from bench.engine_throughput import run

    log = event_log(events, customers, seed=seed, days=days, quiet=True)
    r = run(log, rules, quiet=True, parse_baseline=False, breakdown=False)
    return {k: r[k] for k in ("lines", "wall_s", "cpu_s", "events_per_s", "events_per_cpu_s",
                              "changes", "time_changes")}


async def worker_run(bootstrap: str, prefix: str, count: int, partitions: int, expected: int,
                     rules: Path, limit_s: float, extra_env: dict[str, str] | None = None,
                     module: str = "segmenter.commands.worker") -> dict[str, Any]:
    """Start `count` workers on preloaded topics and time them until the group's lag is 0."""
    watch = GroupWatch(bootstrap, prefix, partitions)
    await watch.start()
    la0 = loadavg()
    try:
        spawn = time.time()
        async with workers(prefix, count, bootstrap=bootstrap, partitions=partitions,
                           rules=rules, extra_env=extra_env, module=module) as procs:
            account = CpuAccount(p.pid for p, _ in procs)
            account.start()
            drain = await wait_for_drain_checked(watch, spawn, limit_s, procs, expected)
            done = time.time()
            times = [cpu_times(p.pid) for p, _ in procs]
            cpus = [u + s for u, s in times]
            cpu_account = account.stop()
            metrics = []
            for _p, port in procs:
                try:
                    metrics.append(await asyncio.to_thread(scrape, port))
                except OSError as exc:
                    print(f"  /metrics on {port}: {exc}", file=sys.stderr)
            if not drain["drained"]:
                drain["lag_by_partition"] = await watch.lag_by_partition()
            ends = await watch.changes_end()
            last_ms = await watch.last_change_ms(ends)
    finally:
        await watch.stop()
    out: dict[str, Any] = {"workers": count, "prefix": prefix, "group": watch.group,
                           "records": expected, "drained": drain["drained"],
                           "worker_cpu_s": cpus, "worker_system_s": [s for _u, s in times],
                           "cpu_account": cpu_account, "kafka_cpu_s": cpu_account["kafka_s"],
                           "lag_samples": drain["lag_samples"]}
    first, lag0, handled = drain["first_change_at"], drain["lag0_at"], drain["consumed_at"]
    if not drain["drained"]:
        out["lag_by_partition"] = drain["lag_by_partition"]
        out["commit_stuck"] = handled is not None
    end = lag0 if lag0 is not None else handled
    if end is None or first is None:
        out["error"] = f"lag not 0 after {limit_s:.0f} s (last lag {drain.get('last_lag')})"
        if metrics:
            out["metrics"] = engine_split(metrics, limit_s * count, sum(cpus))
        return out
    out.update({
        "end": "lag 0" if lag0 is not None else "every record handled (/metrics), lag stuck",
        "startup_s": first - spawn,
        "wall_with_startup_s": end - spawn,
        "wall_s": end - first,
        "events_per_s_with_startup": expected / (end - spawn),
        "events_per_s": expected / (end - first),
        "events_per_s_lag0": expected / (lag0 - first) if lag0 is not None else None,
        "events_per_s_handled": expected / (handled - first) if handled is not None else None,
        "last_change_after_first_s": (last_ms / 1000 - first) if last_ms else None,
        "poll_after_end_s": done - end,
        "change_records": sum(ends.values()),
        "events_per_worker_cpu_s": expected / sum(cpus) if sum(cpus) else None,
        "loadavg_before": list(la0),
        "loadavg_after": list(loadavg()),
    })
    if metrics:
        out["metrics"] = engine_split(metrics, (end - first) * count, sum(cpus))
    return out


async def wait_for_drain_checked(watch: GroupWatch, spawn: float, limit_s: float,
                                 procs: list[Any], expected: int) -> dict[str, Any]:
    """wait_for_drain, but give up early when a worker process dies."""
    from bench.worker_common import wait_for_drain

    def check() -> None:
        dead = [p.pid for p, _ in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"worker process(es) {dead} exited: see bench/results/cache/"
                               "worker-logs/")

    return await wait_for_drain(watch, spawn, limit_s=limit_s, ports=[port for _p, port in procs],
                                expected=expected, check=check)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from rules.loader import load_rules

    currency = load_rules(args.rules).settings.currency
    result: dict[str, Any] = {"benchmark": "worker_throughput", "command": command_line(),
                              "machine": machine_info(), "events": args.events,
                              "customers": args.customers, "seed": args.seed, "days": args.days,
                              "partitions": args.partitions, "rules": rel(args.rules),
                              "bootstrap": args.bootstrap, "what_if": args.what_if}
    t_all = time.perf_counter()
    records: list[Record] = load_records(args.events, args.customers, seed=args.seed,
                                         days=args.days)
    result["per_topic"] = per_topic(records)
    # run name -> (worker processes, extra worker environment)
    specs: dict[str, tuple[int, dict[str, str]]] = {str(n): (n, {}) for n in args.workers}
    if args.what_if:
        specs["1 " + " ".join(f"{k}={v}" for k, v in args.what_if.items())] = (1, args.what_if)
    if args.floor:
        specs["1 floor (stub engine)"] = (1, {"BENCH_FLOOR": "stub"})
    prefixes = {name: new_prefix(f"w{i}") for i, name in enumerate(specs, 1)}
    print(f"{len(records):,} records per run; prefixes {list(prefixes.values())}",
          file=sys.stderr)
    try:
        result["preload"] = {}
        for name, prefix in prefixes.items():
            await create_topics(settings_for(prefix, args.bootstrap, args.partitions))
            result["preload"][name] = p = await preload(args.bootstrap, prefix, records)
            print(f"preloaded {prefix}: {p['records_per_s']:,.0f} records/s", file=sys.stderr)
        first_prefix = next(iter(prefixes.values()))
        result["ceiling"] = {}
        for mode in CEILING_MODES:
            c = await ceiling(args.bootstrap, first_prefix, len(records), mode, currency)
            result["ceiling"][mode] = c
            print(f"ceiling {mode}: {c['events_per_s']:,.0f} events/s "
                  f"({c['events_per_s_with_join']:,.0f} with the group join)", file=sys.stderr)
        if args.simulate:
            result["simulate"] = s = await asyncio.to_thread(
                simulate_same_log, args.events, args.customers, args.seed, args.days, args.rules)
            print(f"simulate (same log, no Kafka): {s['events_per_s']:,.0f} events/s",
                  file=sys.stderr)
        result["runs"] = {}
        for name, prefix in prefixes.items():
            count, env = specs[name]
            module = "bench.runtime_floor" if "BENCH_FLOOR" in env else "segmenter.commands.worker"
            r = await worker_run(args.bootstrap, prefix, count, args.partitions, len(records),
                                 args.rules, args.limit, env, module)
            r["worker_env"] = env
            result["runs"][name] = r
            if r.get("error"):
                print(f"{name} worker(s): {r['error']}", file=sys.stderr)
            else:
                if r.get("commit_stuck"):
                    print(f"  committed offsets stuck: {r['lag_by_partition']}", file=sys.stderr)
                print(f"{name} worker(s): {r['events_per_s']:,.0f} events/s after startup "
                      f"({r['startup_s']:.1f} s), {r['events_per_s_with_startup']:,.0f} "
                      "with it", file=sys.stderr)
    finally:
        if not args.keep_topics:
            for prefix in prefixes.values():
                try:
                    await delete_prefixed_topics(args.bootstrap, prefix)
                except Exception as exc:
                    print(f"could not delete {prefix}*: {exc}", file=sys.stderr)
    raw = result["ceiling"]["raw"]["events_per_s"]
    parsed = result["ceiling"]["orjson"]["events_per_s"]
    for r in result["runs"].values():
        if "events_per_s" in r:
            r["ratio_to_raw_ceiling"] = r["events_per_s"] / raw
            r["ratio_to_orjson_ceiling"] = r["events_per_s"] / parsed
    result["total_s"] = time.perf_counter() - t_all
    return result


def print_report(r: dict[str, Any]) -> None:
    print(f"records              {r['events']:,} events, {r['customers']:,} customers, "
          f"{r['partitions']} partitions: {r['per_topic']}")
    for mode, c in r["ceiling"].items():
        print(f"ceiling {mode:<12} {c['events_per_s']:>9,.0f} events/s "
              f"({c['events_per_s_with_join']:,.0f} incl. {c['join_s']:.1f} s join)")
    if "simulate" in r:
        print(f"simulate (no Kafka)  {r['simulate']['events_per_s']:>9,.0f} events/s")
    for n, run in r["runs"].items():
        if "error" in run:
            print(f"{n} worker(s)          {run['error']}")
            continue
        m = run.get("metrics", {})
        if run.get("commit_stuck"):
            print(f"{n} worker(s)          committed offsets stuck after every record was "
                  f"handled: {run['lag_by_partition']} (committed, end)")
        print(f"{n} worker(s)          {run['events_per_s']:>9,.0f} events/s after startup "
              f"({run['wall_s']:.1f} s), {run['events_per_s_with_startup']:,.0f} with startup "
              f"({run['startup_s']:.1f} s); {run['ratio_to_raw_ceiling']:.1%} of raw ceiling, "
              f"{run['ratio_to_orjson_ceiling']:.1%} of orjson ceiling; worker CPU "
              f"{sum(run['worker_cpu_s']):.1f} s, Kafka CPU {run['kafka_cpu_s']:.1f} s, others "
              f"{run['cpu_account']['others_s']:.1f} s; "
              f"evaluation {m.get('evaluation_us_per_record', float('nan')):.0f} us/record, "
              f"{m.get('evaluation_share_of_cpu', float('nan')):.0%} of worker CPU")
    print(f"total                {r['total_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=None, help="events (default 200k; quick 50k)")
    ap.add_argument("--customers", type=int, default=None,
                    help="customers (default events/10)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=float, default=90.0)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1 or 1,2")
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--bootstrap", default=BOOTSTRAP)
    ap.add_argument("--limit", type=float, default=200.0, help="seconds a run may take at most")
    ap.add_argument("--no-simulate", dest="simulate", action="store_false",
                    help="skip the simulate replay of the same log")
    ap.add_argument("--what-if", action="append", default=[], metavar="NAME=VALUE",
                    help="add a run of 1 worker with this extra environment (e.g. "
                         "SEGMENTER_COMMIT_INTERVAL_MS=500); "
                         "repeatable: all go into one run")
    ap.add_argument("--floor", action="store_true",
                    help="add a run of bench.runtime_floor (the worker with an engine that does "
                         "nothing: what the runtime itself costs)")
    ap.add_argument("--keep-topics", action="store_true")
    ap.add_argument("--quick", action="store_true", help="50k events, into bench/results/quick/")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.events = args.events or (50_000 if args.quick else 200_000)
    args.customers = args.customers or max(1, args.events // 10)
    args.what_if = dict(kv.split("=", 1) for kv in args.what_if)
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if args.json is None:
        args.json = (RESULTS / "quick" / "worker_throughput.json" if args.quick
                     else default_json("worker_throughput"))
    result = asyncio.run(main_async(args))
    print_report(result)
    write_json(args.json, result)
    print(f"wrote {rel(args.json)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
