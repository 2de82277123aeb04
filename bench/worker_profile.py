"""Where one worker process spends its time while it drains preloaded input topics: py-spy
(sampling, idle stacks included) attached from the first segment-change record until the
consumer group's lag is 0.

Needs py-spy in the virtualenv (`.venv/bin/pip install py-spy`). Writes a summary to
bench/results/worker_profile.txt (+ .json) and the folded stacks to
bench/results/cache/worker_profile.folded (git-ignored; `flamegraph.pl` or speedscope read it).

    python -m bench.worker_profile                 # 50k events, 5k customers
    python -m bench.worker_profile --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE, RESULTS, RETAIL, ROOT, command_line, machine_info, rel, write_json
from bench.worker_common import (
    BOOTSTRAP,
    GroupWatch,
    cpu_times,
    create_topics,
    delete_prefixed_topics,
    engine_split,
    load_records,
    new_prefix,
    preload,
    scrape,
    settings_for,
    wait_for_drain,
    workers,
)

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Inclusive time of these frames (function name, file suffix): the worker's own steps.
MARKERS: tuple[tuple[str, str, str], ...] = (
    ("agent: handle() (whole per-record step)", "handle", "streams/agents.py"),
    ("Processor.on_input", "on_input", "streams/processor.py"),
    ("Processor.on_tick", "on_tick", "streams/processor.py"),
    ("  parse_event", "parse_event", "streams/events.py"),
    ("  decode_state", "decode_state", "streams/codec.py"),
    ("  encode_state", "encode_state", "streams/codec.py"),
    ("  Engine.apply", "apply", "streams/engine.py"),
    ("  SegmentChange.to_json", "to_json", "streams/changes.py"),
    ("agent: send() of outputs (Faust topic send)", "send", "streams/agents.py"),
    ("table write (Faust Table.__setitem__ -> on_key_set, changelog send_soon)", "__setitem__",
     "mode/utils/collections.py"),
    ("agent: _count (Prometheus counters)", "_count", "streams/agents.py"),
    ("fire_due timer", "fire_due", "streams/agents.py"),
    ("agent loop (segmenter, incl. handle and waiting for the stream's next event)",
     "segmenter", "streams/agents.py"),
    ("Faust stream iteration (Stream._c_aiter)", "_c_aiter", "faust/streams.py"),
    ("Faust fetch loop (Consumer._drain_messages: getmany + delivery to the stream)",
     "_drain_messages", "transport/consumer.py"),
    ("Faust ProducerBuffer._handle_pending (table changelog sends)", "_handle_pending",
     "transport/producer.py"),
    ("aiokafka Sender._send_produce_req (produce requests)", "_send_produce_req",
     "producer/sender.py"),
    ("  of it: socket write (_SelectorSocketTransport.write)", "write",
     "asyncio/selector_events.py"),
    ("aiokafka Sender._sender_routine (batching)", "_sender_routine", "producer/sender.py"),
    ("Faust consumer commit", "commit", "transport/consumer.py"),
)


def package_of(path: str) -> str:
    """Coarse owner of a source file: the project, a library, asyncio or the stdlib."""
    p = path.replace("\\", "/")
    p = p.split("site-packages/", 1)[-1]  # py-spy already shortens most paths to "pkg/mod.py"
    for part in ("streams", "rules", "segmenter"):
        if p.startswith(part + "/") or f"/main/{part}/" in p:
            return "project " + part
    head = p.split("/", 1)[0] if "/" in p else ""
    if head and not head.startswith("<") and not p.startswith("/"):
        return head
    if p.endswith("selectors.py"):
        return "selectors (select: idle)"
    return "stdlib/other"


def parse_folded(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks: list[tuple[list[tuple[str, str]], int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        body, _, count = line.rpartition(" ")
        frames: list[tuple[str, str]] = []
        for f in body.split(";"):
            m = FRAME.match(f.strip())
            if m:
                frames.append((m.group("func"), m.group("file")))
            else:
                frames.append((f.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def threads_of(stacks: list[tuple[list[tuple[str, str]], int]]) -> dict[str, int]:
    out: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        out[frames[0][0] if frames and frames[0][0].startswith("thread") else "?"] += n
    return dict(out)


def main_thread(stacks: list[tuple[list[tuple[str, str]], int]]
                ) -> list[tuple[list[tuple[str, str]], int]]:
    """The samples of the thread running the event loop with the agents (py-spy --threads puts
    'thread (tid): name' first)."""
    return [(f, n) for f, n in stacks if f and f[0][0].endswith("MainThread")] or stacks


def summarize(stacks: list[tuple[list[tuple[str, str]], int]]) -> dict[str, Any]:
    """Shares of all samples: idle (the event loop waiting in select), inclusive time of the
    MARKERS, self time by package and the top self-time functions."""
    total = sum(n for _f, n in stacks)
    idle = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_pkg: collections.Counter[str] = collections.Counter()
    self_func: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        py = [f for f in frames if f[1]]
        leaf = py[-1] if py else ("?", "")
        if leaf[1].endswith("selectors.py") and leaf[0].endswith(".select"):
            idle += n
            continue
        for label, func, suffix in MARKERS:
            if any(f.rsplit(".", 1)[-1] == func and file.endswith(suffix)
                   for f, file in (py[-1:] if label.startswith("  of it") else py)):
                inclusive[label] += n
        self_pkg[package_of(leaf[1])] += n
        short = "/".join(leaf[1].split("/")[-2:])
        self_func[f"{leaf[0]} ({short})"] += n
    busy = total - idle

    def share(c: collections.Counter[str]) -> dict[str, float]:
        return {k: v / total for k, v in c.most_common()}

    return {"samples": total, "idle_share": idle / total if total else 0.0,
            "busy_share": busy / total if total else 0.0,
            "inclusive": {label: inclusive[label] / total for label, _f, _s in MARKERS},
            "self_by_package": share(self_pkg),
            "top_self": dict(list(share(self_func).items())[:25])}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    records = load_records(args.events, args.customers, seed=args.seed)
    prefix = new_prefix("wprof")
    folded = CACHE / "worker_profile.folded"
    folded.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"benchmark": "worker_profile", "command": command_line(),
                           "machine": machine_info(), "events": args.events,
                           "customers": args.customers, "prefix": prefix,
                           "rate_hz": args.rate, "folded": rel(folded)}
    try:
        await create_topics(settings_for(prefix, args.bootstrap, args.partitions))
        await preload(args.bootstrap, prefix, records)
        watch = GroupWatch(args.bootstrap, prefix, args.partitions)
        await watch.start()
        try:
            spawn = time.time()
            async with workers(prefix, 1, bootstrap=args.bootstrap, partitions=args.partitions,
                               rules=RETAIL) as procs:
                proc, port = procs[0]
                while not any((await watch.changes_end()).values()):
                    if time.time() - spawn > 90 or proc.poll() is not None:
                        raise RuntimeError("worker did not start processing")
                    await asyncio.sleep(0.1)
                cpu0, t0 = cpu_times(proc.pid), time.time()
                spy = subprocess.Popen(
                    [pyspy, "record", "--idle", "--threads", "-r", str(args.rate), "-f", "raw",
                     "-o", str(folded), "-p", str(proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                drain = await wait_for_drain(watch, spawn, limit_s=args.limit)
                spy.send_signal(signal.SIGINT)
                _o, err = await asyncio.to_thread(spy.communicate, None, 30)
                cpu1, t1 = cpu_times(proc.pid), time.time()
                metrics = [await asyncio.to_thread(scrape, port)]
        finally:
            await watch.stop()
    finally:
        await delete_prefixed_topics(args.bootstrap, prefix)
    if not folded.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    out.update({"drained": drain["drained"], "profiled_s": t1 - t0,
                "worker_cpu_s": user + system, "worker_user_s": user, "worker_system_s": system,
                "worker_cpu_share": (user + system) / (t1 - t0),
                "metrics": engine_split(metrics, t1 - t0, user + system),
                "threads": threads_of(stacks := parse_folded(folded.read_text())),
                "profile": summarize(main_thread(stacks))})
    return out


async def awaits_run(args: argparse.Namespace) -> dict[str, Any]:
    """Drain preloaded topics with bench.worker_awaits (the worker + an await sampler)."""
    records = load_records(args.events, args.customers, seed=args.seed)
    prefix = new_prefix("wawait")
    out_path = CACHE / f"{prefix}awaits.json"
    try:
        await create_topics(settings_for(prefix, args.bootstrap, args.partitions))
        await preload(args.bootstrap, prefix, records)
        watch = GroupWatch(args.bootstrap, prefix, args.partitions)
        await watch.start()
        try:
            spawn = time.time()
            async with workers(prefix, 1, bootstrap=args.bootstrap, partitions=args.partitions,
                               rules=RETAIL, module="bench.worker_awaits",
                               extra_env={"BENCH_AWAITS_OUT": str(out_path)}) as procs:
                drain = await wait_for_drain(watch, spawn, limit_s=args.limit)
                await asyncio.sleep(1.5)  # one more write of the counts
        finally:
            await watch.stop()
    finally:
        await delete_prefixed_topics(args.bootstrap, prefix)
    data: dict[str, Any] = orjson.loads(out_path.read_bytes())
    out_path.unlink(missing_ok=True)
    del procs
    data["drained"] = drain["drained"]
    data["events_per_s"] = (args.events / (drain["lag0_at"] - drain["first_change_at"])
                            if drain["drained"] else None)
    return data


def render_awaits(a: dict[str, Any]) -> list[str]:
    """The agent's await points: shares of the samples in which the agent task was suspended
    (the sampler only runs while it is), grouped by the last frames of the chain."""
    total = sum(a["agent"].values())
    grouped: collections.Counter[str] = collections.Counter()
    for chain, n in a["agent"].items():
        parts = chain.split(" > ")
        grouped[" > ".join(parts[1:][-4:]) or parts[0]] += n
    lines = ["", f"where the `segmenter` agent task was suspended ({total:,} samples every "
             f"{a['interval_s'] * 1000:.0f} ms; bench.worker_awaits, no py-spy; "
             f"{a['events_per_s'] or 0:,.0f} events/s in that run):"]
    lines += [f"  {n / total:6.1%}  {k}" for k, n in grouped.most_common(12)]
    return lines


def render(r: dict[str, Any]) -> str:
    p = r["profile"]
    lines = [f"# {r['command']}", f"# {r['events']:,} events, {r['customers']:,} customers; "
             f"py-spy {r['rate_hz']} Hz with idle stacks over {r['profiled_s']:.1f} s of "
             f"draining; worker CPU {r['worker_cpu_s']:.1f} s "
             f"({r['worker_cpu_share']:.0%} of one core; user {r['worker_user_s']:.1f} s, "
             f"system {r['worker_system_s']:.1f} s)", "",
             f"threads sampled: {r['threads']}; below, the main thread only (event loop, "
             "agents, producer); the other is Faust's consumer thread",
             f"samples {p['samples']:,}: event loop idle in select() {p['idle_share']:.1%}, "
             f"busy {p['busy_share']:.1%}", "", "inclusive share of all samples:"]
    lines += [f"  {v:6.1%}  {k}" for k, v in p["inclusive"].items()]
    lines += ["", "self time by package (share of all samples):"]
    lines += [f"  {v:6.1%}  {k}" for k, v in p["self_by_package"].items()]
    lines += ["", "top self-time functions:"]
    lines += [f"  {v:6.1%}  {k}" for k, v in p["top_self"].items()]
    m = r["metrics"]
    lines += ["", f"/metrics: {m['evaluations']:,.0f} evaluations, "
              f"{m['evaluation_us_per_record']:.0f} us each, "
              f"{m['evaluation_share_of_cpu']:.0%} of the worker's CPU time"]
    if "awaits" in r:
        lines += render_awaits(r["awaits"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--customers", type=int, default=None, help="default events/10")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--bootstrap", default=BOOTSTRAP)
    ap.add_argument("--limit", type=float, default=150.0)
    ap.add_argument("--no-awaits", dest="awaits", action="store_false",
                    help="skip the second run with bench.worker_awaits (await-point sampler)")
    ap.add_argument("--out", type=Path, default=RESULTS / "worker_profile.txt")
    args = ap.parse_args(argv)
    args.customers = args.customers or max(1, args.events // 10)
    result = asyncio.run(main_async(args))
    if args.awaits:
        result["awaits"] = asyncio.run(awaits_run(args))
    text = render(result)
    args.out.write_text(text)
    write_json(args.out.with_suffix(".json"), result)
    print(text)
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_absolute() else args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
