"""A real Prometheus (Debian's binary) scrapes a real worker; its HTTP API must show the series."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from model.events import TOPIC_FOR_TYPE, encode_event
from streams.generator import generate
from streams.runtime.app import ensure_topics
from streams.runtime.settings import Settings
from tests.kafka_helpers import produce_json, worker_process

RULES = Path(__file__).resolve().parents[2] / "rules" / "examples" / "retail.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    result: list[dict] = body["data"]["result"]
    return result


async def _wait_for(session: aiohttp.ClientSession, base: str, promql: str,
                    ok: Callable[[list[dict]], bool], timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < deadline:
        try:
            result = await _query(session, base, promql)
        except aiohttp.ClientConnectionError:  # Prometheus is still starting
            result = []
        if result and ok(result):
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql}: never satisfied, last {result}")


@pytest.mark.integration
async def test_prometheus_scrapes_the_worker(kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient,
                                             unique: str, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's prometheus is not installed (make test installs it)")
        pytest.skip("Debian's prometheus is not installed")
    prefix = f"{unique}."
    web_port, prom_port = _free_port(), _free_port()
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                                 partitions=2)
    await ensure_topics(settings)
    events = list(generate(customers=30, events=300, seed=5, start_ms=1_790_000_000_000,
                           days=20))
    records: dict[str, list[tuple[str, dict]]] = {}
    for ev in events:
        records.setdefault(TOPIC_FOR_TYPE[ev.type], []).append(
            (ev.customer_id, orjson.loads(encode_event(ev))))
    for topic, items in records.items():
        await produce_json(kafka_bootstrap, prefix + topic, items)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: segmenter-worker\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{web_port}']}}]\n")
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap, "SEGMENTER_TOPIC_PREFIX": prefix,
           "SEGMENTER_STATE_DIR": str(tmp_path / "state"), "SEGMENTER_WEB_PORT": str(web_port),
           "SEGMENTER_PARTITIONS": "2", "SEGMENTER_CLOCK": "event",
           "SEGMENTER_RULES": str(RULES)}
    prom = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    base = f"http://127.0.0.1:{prom_port}"
    try:
        async with worker_process(env, tmp_path / "worker.log"), aiohttp.ClientSession() as s:
            await _wait_for(s, base, 'up{job="segmenter-worker"}',
                            lambda r: r[0]["value"][1] == "1")
            consumed = await _wait_for(
                s, base, "sum(segmenter_events_consumed_total)",
                lambda r: float(r[0]["value"][1]) >= len(events))
            assert float(consumed[0]["value"][1]) == len(events)
            by_type = await _query(s, base, "sum by (type) (segmenter_events_consumed_total)")
            types = {r["metric"]["type"]: float(r["value"][1]) for r in by_type}
            assert types.get("purchase", 0) == sum(1 for e in events if e.type == "purchase")
            sizes = await _wait_for(s, base, "segmenter_segment_size",
                                    lambda r: sum(float(x["value"][1]) for x in r) > 0)
            assert all(float(r["value"][1]) >= 0 for r in sizes)
            assert "customer_id" not in str(sizes)  # no personal data in labels
            changes = await _query(s, base, "sum(segmenter_segment_changes_total)")
            assert float(changes[0]["value"][1]) > 0
            info = await _query(s, base, "segmenter_rules_info")
            assert info and info[0]["metric"]["version"].startswith("sha256:")
            latency = await _query(s, base, "segmenter_event_to_change_seconds_count")
            assert latency and float(latency[0]["value"][1]) > 0
            for name in ("segmenter_due_index_size", "segmenter_timer_lag_seconds",
                         "segmenter_consumer_lag", "segmenter_table_recovery_in_progress",
                         "segmenter_engine_evaluation_seconds_count"):
                assert await _query(s, base, name), f"{name} missing"
            recovering = await _query(s, base, "segmenter_table_recovery_in_progress")
            assert recovering[0]["value"][1] == "0"
    finally:
        prom.terminate()
        prom.wait(10)
        ours = [t for t in await kafka_admin.list_topics() if t.startswith(prefix)]
        await kafka_admin.delete_topics(ours)
