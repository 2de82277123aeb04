"""Event-to-change latency of one running worker at a fixed offered load (default 2,000
events/s for 30 s after a 5 s warm-up).

Events of the generated log (bench.common.event_log, in log order) are stamped with the current
time and sent at a steady rate into the input topics (aiokafka producer, acks=1, linger 5 ms;
the record's CreateTime = the event's ts = the instant of the send call). A consumer in this
process reads `segment-changes`; for every change with cause.kind == "event" whose event was
sent after the warm-up, the latency is the change record's CreateTime (the worker's send) minus
the input's CreateTime, and also its receive time here minus the input's CreateTime.

    python -m bench.worker_latency                     # 2,000 events/s, 5 s warm-up + 30 s
    python -m bench.worker_latency --quick             # 10 s, into bench/results/quick/
    python -m bench.worker_latency --rate 1000 --duration 60
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

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import (
    RESULTS,
    RETAIL,
    command_line,
    default_json,
    event_log,
    loadavg,
    machine_info,
    percentile,
    rel,
    write_json,
)
from bench.worker_common import (
    BOOTSTRAP,
    CpuAccount,
    GroupWatch,
    create_topics,
    delete_prefixed_topics,
    new_prefix,
    scrape,
    settings_for,
    wait_ready,
    workers,
)
from model.events import TOPIC_FOR_TYPE
from streams.runtime.app import SEGMENT_CHANGES


def load_events(events: int, customers: int, count: int, seed: int) -> list[dict[str, Any]]:
    """The first `count` events of the cached log, as wire dicts (ts is set at send time)."""
    path = event_log(events, customers, seed=seed)
    out: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                out.append(orjson.loads(line))
                if len(out) >= count:
                    break
    if len(out) < count:
        raise SystemExit(f"{path} has {len(out)} events, {count} needed: raise --log-events")
    return out


class Changes:
    """Reads segment-changes from the beginning and keeps, per event-caused change, the event id,
    the record's CreateTime and the receive time."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         enable_auto_commit=False,
                                         auto_offset_reset="earliest",
                                         isolation_level="read_committed")
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.event: list[tuple[str, int, float]] = []  # (event_id, record ts ms, receive ms)
        self.kinds: dict[str, int] = {}
        self.last_receive = 0.0

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for msgs in batch.values():
                for m in msgs:
                    if m.value is None:  # the tombstone after an erasure
                        continue
                    cause = orjson.loads(m.value)["cause"]
                    kind = cause["kind"]
                    self.kinds[kind] = self.kinds.get(kind, 0) + 1
                    if kind == "event":
                        self.event.append((cause["event_id"], m.timestamp, now_ms))
                    self.last_receive = now_ms

    async def stop(self) -> None:
        await self.consumer.stop()


def summary(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"count": len(v), "p50": percentile(v, 50), "p90": percentile(v, 90),
            "p95": percentile(v, 95), "p99": percentile(v, 99), "p999": percentile(v, 99.9),
            "max": v[-1] if v else float("nan"),
            "mean": sum(v) / len(v) if v else float("nan")}


def histogram_quantiles(metrics: dict[str, float], name: str) -> dict[str, float]:
    """p50/p99 (upper bucket bounds) of a Prometheus histogram from a scrape."""
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items()
                     if k.startswith(name + "_bucket{"))
    total = metrics.get(name + "_count", 0.0)
    out: dict[str, float] = {"count": total}
    for q in (50, 95, 99):
        bound = next((le for le, c in buckets if total and c >= total * q / 100), float("nan"))
        out[f"p{q}_le_s"] = bound
    return out


async def offer(producer: AIOKafkaProducer, prefix: str, events: list[dict[str, Any]],
                rate: float, sent: dict[str, int]) -> dict[str, Any]:
    """Send `events` at `rate`/s on a fixed schedule (no catching up in bursts beyond what fell
    due), each stamped with the current time; records event_id -> send instant (ms)."""
    futures: list[asyncio.Future[Any]] = []
    started = time.perf_counter()
    behind_max = 0.0
    i = 0
    n = len(events)
    while i < n:
        due = int((time.perf_counter() - started) * rate) + 1
        while i < min(due, n):
            obj = events[i]
            now_ms = int(time.time() * 1000)
            obj["ts"] = now_ms
            key = obj["customer_id"].encode()
            futures.append(await producer.send(prefix + TOPIC_FOR_TYPE[obj["type"]],
                                               orjson.dumps(obj), key=key,
                                               timestamp_ms=now_ms))
            sent[obj["event_id"]] = now_ms
            i += 1
        behind_max = max(behind_max, (due - i) / rate)
        await asyncio.sleep(0.001)
    wall = time.perf_counter() - started
    await asyncio.gather(*futures)
    return {"sent": n, "wall_s": wall, "achieved_rate": n / wall}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    warm = int(args.rate * args.warmup)
    count = warm + int(args.rate * args.duration)
    events = load_events(args.log_events, args.customers, count, args.seed)
    prefix = new_prefix("wlat")
    result: dict[str, Any] = {"benchmark": "worker_latency", "command": command_line(),
                              "machine": machine_info(), "rate": args.rate,
                              "warmup_s": args.warmup, "duration_s": args.duration,
                              "events_sent": count, "log": f"{args.log_events} events / "
                              f"{args.customers} customers, first {count}",
                              "partitions": args.partitions, "rules": rel(args.rules),
                              "producer": {"acks": 1, "linger_ms": args.linger_ms},
                              "prefix": prefix}
    sent: dict[str, int] = {}
    try:
        await create_topics(settings_for(prefix, args.bootstrap, args.partitions))
        changes = Changes(args.bootstrap, prefix + SEGMENT_CHANGES, args.partitions)
        await changes.start()
        reader = asyncio.ensure_future(changes.run())
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks=1,
                                    linger_ms=args.linger_ms)
        await producer.start()
        watch = GroupWatch(args.bootstrap, prefix, args.partitions)
        await watch.start()
        try:
            async with workers(prefix, 1, bootstrap=args.bootstrap, partitions=args.partitions,
                               rules=args.rules) as procs:
                proc, port = procs[0]
                result["ready_after_s"] = await wait_ready(port)
                await asyncio.sleep(1.0)
                account = CpuAccount([proc.pid])
                account.start()
                la0 = loadavg()
                result["offer"] = await offer(producer, prefix, events, args.rate, sent)
                acc = result["cpu_account"] = account.stop()
                result["worker_cpu_share_during_load"] = acc["workers_s"][0] / acc["wall_s"]
                result["kafka_cpu_share_during_load"] = acc["kafka_s"] / acc["wall_s"]
                result["loadavg_before"], result["loadavg_after"] = list(la0), list(loadavg())
                deadline = time.time() + 60
                while time.time() < deadline:  # until the worker caught up and changes stopped
                    lag, _ = await watch.lag()
                    if lag == 0 and time.time() * 1000 - changes.last_receive > 2000:
                        break
                    await asyncio.sleep(0.25)
                result["final_lag"] = lag
                metrics = await asyncio.to_thread(scrape, port)
        finally:
            reader.cancel()
            await watch.stop()
            await producer.stop()
            await changes.stop()
    finally:
        if not args.keep_topics:
            await delete_prefixed_topics(args.bootstrap, prefix)
    measured = set(e["event_id"] for e in events[warm:])
    by_record: list[float] = []
    by_receive: list[float] = []
    first_ms = min(sent.values()) if sent else 0
    slices: dict[int, list[float]] = {}
    for eid, ts, recv in changes.event:
        if eid in measured:
            by_record.append(ts - sent[eid])
            by_receive.append(recv - sent[eid])
            slices.setdefault(int((sent[eid] - first_ms) / 5000), []).append(ts - sent[eid])
    result.update({
        "change_records": changes.kinds,
        "events_with_change": len({eid for eid, _t, _r in changes.event if eid in measured}),
        "latency_ms_record_ts": summary(by_record),
        "latency_ms_receive": summary(by_receive),
        "p50_ms_by_5s_of_sending": {f"{k * 5}-{k * 5 + 5}s": percentile(sorted(v), 50)
                                    for k, v in sorted(slices.items())},
        "worker_histogram_event_to_change": histogram_quantiles(
            metrics, "segmenter_event_to_change_seconds"),
        "worker_histogram_evaluation": histogram_quantiles(
            metrics, "segmenter_engine_evaluation_seconds"),
    })
    return result


def print_report(r: dict[str, Any]) -> None:
    o = r["offer"]
    print(f"offered              {o['sent']:,} events at {o['achieved_rate']:,.0f}/s "
          f"(target {r['rate']:,.0f}/s; {r['warmup_s']:g} s warm-up + {r['duration_s']:g} s)")
    a = r["cpu_account"]
    print(f"CPU during the load  worker {r['worker_cpu_share_during_load']:.0%} of one core, "
          f"Kafka {r['kafka_cpu_share_during_load']:.0%}, this bench "
          f"{a['bench_s'] / a['wall_s']:.0%}, other processes {a['others_s'] / a['wall_s']:.0%}")
    print(f"change records       {r['change_records']}; {r['events_with_change']:,} measured "
          "events caused one")
    for label, key in (("record ts - send", "latency_ms_record_ts"),
                       ("received - send", "latency_ms_receive")):
        s = r[key]
        print(f"{label:<20} p50 {s['p50']:.0f} ms, p95 {s['p95']:.0f} ms, p99 {s['p99']:.0f} ms, "
              f"max {s['max']:.0f} ms ({s['count']:,} changes)")
    print("p50 by send time     " + ", ".join(f"{k}: {v:.0f} ms"
                                               for k, v in r["p50_ms_by_5s_of_sending"].items()))
    h = r["worker_histogram_event_to_change"]
    print(f"worker histogram     event_to_change p50 <= {h['p50_le_s'] * 1000:g} ms, "
          f"p99 <= {h['p99_le_s'] * 1000:g} ms")


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered events/s")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds (30)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds not measured (5)")
    ap.add_argument("--log-events", type=int, default=None,
                    help="size of the generated log the events come from (200k; quick 50k)")
    ap.add_argument("--customers", type=int, default=None, help="customers (log-events/10)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--linger-ms", type=int, default=5, help="of this bench's producer")
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--bootstrap", default=BOOTSTRAP)
    ap.add_argument("--keep-topics", action="store_true")
    ap.add_argument("--quick", action="store_true", help="3 s + 10 s, bench/results/quick/")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.duration = args.duration or (10.0 if args.quick else 30.0)
    args.warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 5.0)
    args.log_events = args.log_events or (50_000 if args.quick else 200_000)
    args.customers = args.customers or max(1, args.log_events // 10)
    if args.json is None:
        args.json = (RESULTS / "quick" / "worker_latency.json" if args.quick
                     else default_json("worker_latency"))
    result = asyncio.run(main_async(args))
    print_report(result)
    write_json(args.json, result)
    print(f"wrote {rel(args.json)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
