"""The Query API: the pure views, then the worker's HTTP endpoints on the real broker."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from rules.pipelines import held_out
from streams.annotated import engine_for
from streams.query import customer_view, segments_view
from streams.runtime.app import ensure_topics
from streams.runtime.records import partition_for
from streams.runtime.settings import Settings
from tests.factories import T0, EngineRun, days, purchase, rules_from_yaml, segment
from tests.kafka_helpers import produce_json, worker_process

RULES_YAML = """
version: 1
name: query-test
settings: {currency: PLN}
segments:
  - {id: vip, label: VIP, color: "#C9A227", icon: crown, group: tier,
     when: "purchase_amount(30d) >= 500", exit_when: "purchase_amount(30d) < 300"}
  - {id: buyer, label: Buyer, color: "#00AA00", group: tier, when: "purchase_count(30d) >= 1"}
  - {id: lapsed, when: "days_since_last_purchase() > 10"}
"""


def test_customer_view_lists_segments_with_display_data_why_and_metrics() -> None:
    rules = rules_from_yaml(
        segment("vip", "purchase_amount(30d) >= 500", label="VIP", color="#C9A227",
                exit_when="purchase_amount(30d) < 300"),
        segment("buyer", "purchase_count(30d) >= 1"))
    run = EngineRun(rules)
    run.apply(purchase(T0, 600.0))
    view = customer_view(rules, run.state(), T0 + days(1))
    assert [s["id"] for s in view["segments"]] == ["buyer", "vip"]
    vip = view["segments"][1]
    assert (vip["label"], vip["color"]) == ("VIP", "#C9A227")
    assert vip["why"] == {"purchase_amount(30d)": 600.0}
    assert view["seq"] == 1 and view["metrics"]["purchase_count(30d)"] == 1
    assert view["rules_version"] == rules.version


def test_segments_view_keeps_file_order_and_sizes() -> None:
    rules = rules_from_yaml(segment("b", "purchase_count(30d) >= 1", group="g"),
                            segment("a", "purchase_count(30d) >= 2", group="g"))
    view = segments_view(rules, {"a": 3}, "all")
    assert [s["id"] for s in view["segments"]] == ["b", "a"]
    assert [s["size"] for s in view["segments"]] == [0, 3]
    assert view["groups"] == {"g": ["b", "a"]}


def test_segments_view_lists_the_pipelines_in_priority_order() -> None:
    rules = rules_from_yaml(RULES_YAML + "pipelines:\n  - {id: other, label: Others}\n"
                            "  - {id: premium, when: [vip]}\n")
    view = segments_view(rules, {}, "all")
    assert view["pipelines"] == [
        {"id": "premium", "label": None, "description": None, "when": ["vip"],
         "default": False},
        {"id": "other", "label": "Others", "description": None, "when": [], "default": True}]
    assert segments_view(rules_from_yaml(RULES_YAML), {}, "all")["pipelines"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.integration
async def test_worker_serves_the_query_api(kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient,
                                           unique: str, tmp_path: Path) -> None:
    prefix, port = f"{unique}.", _free_port()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES_YAML)
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix,
                                 partitions=2)
    await ensure_topics(settings)
    ts = 1_790_000_000_000
    await produce_json(kafka_bootstrap, prefix + "purchases", [
        ("c-1", {"event_id": "p1", "customer_id": "c-1", "type": "purchase", "ts": ts,
                 "amount": 700, "currency": "PLN"}),
        ("c-2", {"event_id": "p2", "customer_id": "c-2", "type": "purchase", "ts": ts + 1,
                 "amount": 50, "currency": "PLN"})])
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap, "SEGMENTER_TOPIC_PREFIX": prefix,
           "SEGMENTER_STATE_DIR": str(tmp_path / "state"), "SEGMENTER_WEB_PORT": str(port),
           "SEGMENTER_PARTITIONS": "2", "SEGMENTER_CLOCK": "event",
           "SEGMENTER_RULES": str(rules_file), "SEGMENTER_API_TOKEN": "t0ken",
           "SEGMENTER_REDIS_URL": "redis://127.0.0.1:1/0"}  # no Redis view: worker-local sizes
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer t0ken"}
    try:
        async with worker_process(env, tmp_path / "worker.log"), aiohttp.ClientSession() as s:
            body: dict = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    async with s.get(f"{base}/v1/customers/c-1", headers=auth) as r:
                        if r.status == 200:
                            body = await r.json()
                            if body["seq"] >= 1:
                                break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.5)
            assert body, (tmp_path / "worker.log").read_text()[-3000:]
            while time.monotonic() < deadline:  # c-2 may be on a partition handled later
                async with s.get(f"{base}/v1/customers/c-2", headers=auth) as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.2)
            assert [x["id"] for x in body["segments"]] == ["vip"]
            assert body["segments"][0]["color"] == "#C9A227"
            assert body["segments"][0]["why"]["purchase_amount(30d)"] == 700
            async with s.get(f"{base}/v1/customers/c-1") as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with s.get(f"{base}/v1/customers/nobody", headers=auth) as r:
                assert r.status == 404
            async with s.get(f"{base}/v1/segments", headers=auth) as r:
                segs = await r.json()
            assert [x["id"] for x in segs["segments"]] == ["vip", "buyer", "lapsed"]
            sizes = {x["id"]: x["size"] for x in segs["segments"]}
            assert sizes == {"vip": 1, "buyer": 1, "lapsed": 0}
            assert segs["groups"] == {"tier": ["vip", "buyer"]}
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 200 and (await r.json())["ready"] is True
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200
    finally:
        ours = [t for t in await kafka_admin.list_topics() if t.startswith(prefix)]
        await kafka_admin.delete_topics(ours)
    assert orjson.dumps(body)  # the answer is plain JSON


@pytest.mark.integration
async def test_a_worker_forwards_a_customer_to_the_worker_that_owns_it(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str,
        tmp_path: Path) -> None:
    """Two workers share 4 partitions; asking either one about any customer gives the owner's
    answer (the other one forwards it, token included, and says who served it)."""
    from tests.streams.workers import cluster, owned, split_between

    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES_YAML)
    customers = [f"fw-{i}" for i in range(12)]
    ports = [_free_port(), _free_port()]
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path,
                       SEGMENTER_API_TOKEN="t0ken", SEGMENTER_RULES=str(rules_file),
                       SEGMENTER_REDIS_URL="redis://127.0.0.1:1/0") as c:
        a = c.start(name="qa", SEGMENTER_WEB_PORT=str(ports[0]))
        b = c.start(name="qb", SEGMENTER_WEB_PORT=str(ports[1]))
        topic = c.topic("purchases")
        deadline = time.monotonic() + 90
        while not split_between([a, b], topic, 4):
            assert time.monotonic() < deadline and a.alive() and b.alive(), c.logs()
            await asyncio.sleep(0.2)
        await produce_json(kafka_bootstrap, topic, [
            (cid, {"event_id": f"e-{cid}", "customer_id": cid, "type": "purchase",
                   "ts": T0 + i, "amount": 600, "currency": "PLN"})
            for i, cid in enumerate(customers)])
        owner = {cid: ("qa" if partition_for(cid.encode(), 4) in owned(a) else "qb")
                 for cid in customers}
        assert set(owner.values()) == {"qa", "qb"}
        auth = {"Authorization": "Bearer t0ken"}
        answers: dict[tuple[str, int], tuple[int, str | None, dict]] = {}
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 90
            for cid in customers:
                for port in ports:
                    while True:
                        async with s.get(f"http://127.0.0.1:{port}/v1/customers/{cid}",
                                         headers=auth) as r:
                            body = await r.json()
                            if r.status == 200 or time.monotonic() > deadline:
                                answers[(cid, port)] = (r.status, r.headers.get(
                                    "X-Segmenter-Served-By"), body)
                                break
                        await asyncio.sleep(0.2)
            async with s.get(f"http://127.0.0.1:{ports[0]}/v1/customers/{customers[0]}") as r:
                assert r.status == 401
    for (cid, port), (status, served_by, body) in answers.items():
        assert status == 200, (cid, port, body)
        assert [x["id"] for x in body["segments"]] == ["vip"], body
        local = "qa" if port == ports[0] else "qb"
        assert served_by == (None if owner[cid] == local else owner[cid]), (cid, port)


def test_customer_view_shows_the_pipeline_and_control_membership() -> None:
    rules = rules_from_yaml(RULES_YAML.replace("group: tier,\n", "group: tier, control: 50%,\n")
                            + "pipelines:\n  - {id: premium, when: [vip]}\n  - {id: other}\n")
    run = EngineRun(rules)
    run.engine = engine_for(rules)
    for cid in ("q-1", "q-2", "q-3", "q-4"):
        run.apply(purchase(T0, 600.0, customer_id=cid))
        view = customer_view(rules, run.state(cid), T0)
        assert view["pipeline"] == "premium"
        [vip] = [s for s in view["segments"] if s["id"] == "vip"]
        assert vip["control"] == held_out(cid, "vip", 0.5)
    plain = customer_view(rules_from_yaml(RULES_YAML), run.state("q-1"), T0)
    assert "pipeline" not in plain
