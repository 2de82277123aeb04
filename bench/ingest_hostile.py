"""The HTTP ingest under hostile load: N parallel bodies of refused lines against the real
`segmenter ingest run` process, with /healthz probed all along.

    .venv/bin/python -m bench.ingest_hostile [--parallel 8] [--size 1048576] [--lines short|x]

Prints each answer's size and status, the time to answer them all, the slowest /healthz, and
the ingest process's resident memory before and at its peak (VmHWM, Linux). Needs the local
Kafka (`segmenter local up`); topics get a unique prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def body(size: int, kind: str) -> bytes:
    line = b"x" if kind == "x" else b'{"event_id":"e1","customer_id":"c"}'
    return b"\n".join([line] * (size // (len(line) + 1)))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024 * 1024)
    ap.add_argument("--lines", choices=["short", "x"], default="x",
                    help="x: one-byte lines (the worst case), short: JSON missing fields")
    args = ap.parse_args()
    bootstrap = os.environ.get("SEGMENTER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    prefix = f"hostile-{uuid.uuid4().hex[:8]}."
    port = free_port()
    env = {**os.environ, "SEGMENTER_KAFKA_BOOTSTRAP": bootstrap,
           "SEGMENTER_TOPIC_PREFIX": prefix, "SEGMENTER_PARTITIONS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from segmenter.cli import main; main()", "ingest", "run",
         "--port", str(port), "--currency", "PLN", "--max-bytes", str(args.size)],
        env=env, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    payload = body(args.size, args.lines)
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            rss_before, _ = memory_kib(process.pid)
            latencies: list[float] = []
            done = asyncio.Event()

            async def probe() -> None:
                while not done.is_set():
                    began = time.monotonic()
                    async with session.get(f"{url}/healthz") as r:
                        await r.read()
                    latencies.append(time.monotonic() - began)
                    await asyncio.sleep(0.05)

            async def post() -> tuple[int, int]:
                async with session.post(f"{url}/v1/events", data=payload,
                                        headers={"Content-Type": "application/x-ndjson"}) as r:
                    return r.status, len(await r.read())

            prober = asyncio.create_task(probe())
            began = time.monotonic()
            answers = await asyncio.gather(*(post() for _ in range(args.parallel)))
            took = time.monotonic() - began
            done.set()
            await prober
            rss_after, peak = memory_kib(process.pid)
        lines = payload.count(b"\n") + 1
        print(f"{args.parallel} x {len(payload)} bytes ({lines} refused lines each, "
              f"--lines {args.lines}): answered in {took:.2f} s")
        print("answers (status, bytes):", answers)
        print(f"/healthz during the load: {len(latencies)} probes, slowest "
              f"{max(latencies) * 1000:.1f} ms")
        print(f"ingest memory: RSS {rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} "
              f"MiB after, peak (VmHWM) {peak / 1024:.0f} MiB")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
