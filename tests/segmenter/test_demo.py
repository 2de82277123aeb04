"""`segmenter demo` on the real services: two runs one after the other both show segment changes
(each run is a fresh shop), the Redis view and the dashboard it starts serve the run's data, and
on its end (time up or Ctrl-C) every process it started stops and its topics and keys are gone."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from segmenter.commands.demo import DemoRun, _leftover_run, _record_run
from segmenter.local.common import process_alive
from streams.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return orjson.loads(response.read())


class Demo:
    """`segmenter demo` as a subprocess; its output read line by line in a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "segmenter.cli", "demo"], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        for seen in self.lines:
            if found := re.search(pattern, seen):
                return found
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n"
                             + "\n".join(self.lines[-40:]))

    def finish(self, timeout: float) -> str:
        self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return "\n".join(self.lines)


async def demo_topics(kafka_bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


def check_run(demo: Demo, seconds: float) -> tuple[str, str]:
    """While the demo runs: the dashboard it printed serves the run's Redis view (segment
    sizes > 0) and the worker's Query API answers. Returns (topic prefix, Redis prefix)."""
    shop = demo.wait_for(r"demo shop (demo-[0-9a-f]{8}): topics (\S+)\*, Redis keys (\S+)\*", 60)
    topic_prefix, redis_prefix = shop.group(2), shop.group(3)
    assert demo.wait_for(r"redis view: redis://\S+, keys (\S+)\*", 30).group(1) == redis_prefix
    api = demo.wait_for(r"worker: Query API on (http://127\.0\.0\.1:\d+/v1/segments)", 30)
    url = demo.wait_for(r"dashboard: (http://127\.0\.0\.1:\d+/)", 30).group(1)
    demo.wait_for(r"<- cust-\d+ .*#\d+", seconds)
    deadline = time.monotonic() + 15
    sizes: dict[str, int] = {}
    while time.monotonic() < deadline and not any(sizes.values()):
        overview = get_json(url + "api/overview")
        sizes = {s["id"]: s["size"] for s in overview["segments"]}
        time.sleep(0.5)
    assert any(sizes.values()), sizes  # the Redis view fills while the demo runs
    assert overview["status"]["source"] == "api"  # the dashboard reaches the worker
    segments = get_json(api.group(1))
    assert segments and "vip" in orjson.dumps(segments).decode()
    return topic_prefix, redis_prefix


def pids(output: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(worker|redis-view|dashboard): started \(pid (\d+)", output,
                                 re.M)}


async def check_clean(output: str, kafka_bootstrap: str, redis_url: str, topic_prefix: str,
                      redis_prefix: str, state_dir: Path) -> None:
    started = pids(output)
    assert set(started) == {"worker", "redis-view", "dashboard"}, output
    assert not [name for name, pid in started.items() if process_alive(pid)]
    for name in started:
        assert f"{name}: stopped" in output
    assert await demo_topics(kafka_bootstrap, topic_prefix) == []
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{redis_prefix}*")) == []
    finally:
        client.close()
    assert not (state_dir / "demo" / "run.json").exists()


def changes_seen(output: str) -> int:
    found = re.search(r"published (\d+) events, saw (\d+) segment changes", output)
    assert found, output
    return int(found.group(2))


@pytest.mark.integration
async def test_the_demo_shows_changes_on_every_run_and_leaves_nothing_running(
        tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    web_port = free_port()
    env = {**os.environ, "SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGMENTER_REDIS_URL": redis_url, "SEGMENTER_STATE_DIR": str(tmp_path),
           "SEGMENTER_WEB_PORT": str(web_port), "SEGMENTER_DASHBOARD_PORT": "0",
           "PYTHONUNBUFFERED": "1"}
    env.pop("SEGMENTER_TOPIC_PREFIX", None)
    env.pop("SEGMENTER_REDIS_PREFIX", None)

    # first run: to its end (SEGMENTER_DEMO_SECONDS)
    first = Demo({**env, "SEGMENTER_DEMO_SECONDS": "25"})
    try:
        prefixes = check_run(first, 25)
        output = first.finish(90)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert first.process.returncode == 0, output
    assert changes_seen(output) > 100
    await check_clean(output, kafka_bootstrap, redis_url, *prefixes, tmp_path)

    # second run: the same generated stream again shows changes; Ctrl-C stops it all. The
    # Query API's port is taken meanwhile: the demo says so and takes a free one
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", web_port))
    squatter.listen()
    second = Demo({**env, "SEGMENTER_DEMO_SECONDS": "120"})
    try:
        moved = second.wait_for(r"port (\d+) is taken: the worker's Query API uses (\d+)", 60)
        assert int(moved.group(1)) == web_port
        second.wait_for(rf"worker: Query API on http://127\.0\.0\.1:{moved.group(2)}/", 30)
        again = check_run(second, 25)
        assert again != prefixes
        second.wait_for(r"<- cust-\d+ .*#\d+", 10)
        second.process.send_signal(signal.SIGINT)
        output = second.finish(90)
    finally:
        squatter.close()
        if second.process.poll() is None:
            second.process.kill()
    assert "interrupted." in output
    assert changes_seen(output) > 0
    await check_clean(output, kafka_bootstrap, redis_url, *again, tmp_path)


@pytest.mark.integration
async def test_a_run_killed_before_its_clean_up_is_cleaned_up_by_the_next(
        tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    """Only a namespace the demo recorded (demo-<8 hex>) is ever deleted."""
    from segmenter.commands.demo import _remove_run

    base = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
                             state_dir=tmp_path)
    run = DemoRun.new(base)
    from streams.runtime.app import ensure_topics

    await ensure_topics(run.settings(base))
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"{run.redis_prefix}probe", "1")
        client.set(f"{run.name}-other:probe", "1")  # another prefix: left alone
        _record_run(base, run)
        assert _leftover_run(base) == run
        await _remove_run(base, run)
        assert await demo_topics(kafka_bootstrap, run.topic_prefix) == []
        assert client.get(f"{run.redis_prefix}probe") is None
        assert client.get(f"{run.name}-other:probe") == b"1"
    finally:
        client.delete(f"{run.name}-other:probe", f"{run.redis_prefix}probe")
        client.close()
    for forged in ({"name": "segmenter", "topic_prefix": "", "redis_prefix": "segmenter:"},
                   {"name": run.name, "topic_prefix": "", "redis_prefix": run.redis_prefix}):
        (tmp_path / "demo" / "run.json").write_bytes(orjson.dumps(forged))
        assert _leftover_run(base) is None
