"""Webhooks: configuration, filters and signatures (pure), then deliveries to a real HTTP(S)
server on loopback, and end to end from a real Kafka topic with dead letters."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from connectors.changes import ChangeRecord
from connectors.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ConnectorsConfig,
    EndpointDispatcher,
    PartitionProgress,
    WebhookEndpoint,
    delivery_id,
    parse_connectors_config,
    parse_duration,
    run_webhooks,
    sign,
    verify_signature,
)
from model.errors import ConnectorConfigError
from segmenter.cli import main
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from tests.conftest import TopicFactory
from tests.connectors.factories import erasure, record, wire_change
from tests.connectors.hook_server import Behaviour, HookServer
from tests.kafka_helpers import consume_json, create_topics, produce_json

SECRET = b"s3cret-for-tests"


# --------------------------------------------------------------------- configuration


def test_a_full_endpoint_is_parsed() -> None:
    config = parse_connectors_config(yaml.safe_load("""
webhooks:
  - name: crm
    url: https://crm.example.com/hooks?x=1
    secret_env: CRM_SECRET
    segments: [vip]
    groups: [tier]
    on: [entered]
    timeout: 2500ms
    max_attempts: 3
    verify_tls: false
    backoff: 2s
    max_backoff: 1m
    lanes: 2
    start: earliest
    headers: {X-Api-Key: k}
  - {name: all, url: "http://127.0.0.1:9/x", secret: abc}
"""), env={"CRM_SECRET": "from-env"})
    crm, every = config.webhooks
    assert crm == WebhookEndpoint(
        name="crm", url="https://crm.example.com/hooks?x=1", secret=b"from-env",
        segments=frozenset({"vip"}), groups=frozenset({"tier"}), on=frozenset({"entered"}),
        timeout=2.5, max_attempts=3, verify_tls=False, backoff=2.0, max_backoff=60.0, lanes=2,
        start="earliest", headers={"X-Api-Key": "k"})
    assert crm.safe_url == "https://crm.example.com/hooks"
    assert "from-env" not in repr(crm)
    assert every.on == {"entered", "exited"} and every.verify_tls and every.timeout == 5.0
    assert every.max_attempts == 8 and every.start == "latest"


def test_every_problem_of_a_connectors_file_is_reported() -> None:
    with pytest.raises(ConnectorConfigError) as info:
        parse_connectors_config({"webhooks": [
            {"name": "a", "url": "ftp://x", "secret": "s", "colour": 1},
            {"name": "a", "url": "http://h/", "secret_env": "NOPE", "on": ["joined"]},
            {"name": "b b", "url": "http://h/", "timeout": "soon", "max_attempts": 0},
        ], "other": 1}, "c.yaml", env={})
    text = str(info.value)
    for expected in ("unknown key 'other'", "webhooks[0]: 'url' must be", "unknown key 'colour'",
                     "name 'a' is used twice", "'NOPE' (secret_env) is not set",
                     "'on' must list entered", "webhooks[2]: 'name' is required",
                     "'timeout': not a duration", "'max_attempts' must be",
                     "webhooks[2]: 'secret' (or 'secret_env') is required"):
        assert expected in text
    assert all(line.startswith("c.yaml: ") for line in text.splitlines())


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("2m", 120.0),
                                                ("1h", 3600.0), (3, 3.0), ("1.5", 1.5)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1s", "soon", True, "5 days"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def endpoint(url: str = "http://127.0.0.1:9/", **kw: Any) -> WebhookEndpoint:
    options: dict[str, Any] = {"backoff": 0.01, "max_backoff": 0.05, "lanes": 4}
    options.update(kw)
    return WebhookEndpoint(name=options.pop("name", "hook"), url=url, secret=SECRET, **options)


def test_filters_by_segment_group_and_direction() -> None:
    to_vip = record(wire_change("c-1", 2, segments=["vip"], previous=["buyer"]))
    reader = record(wire_change("c-1", 1, segments=["reader"]))
    assert endpoint().matches(to_vip) and endpoint().matches(reader)
    assert endpoint(segments=frozenset({"vip"})).matches(to_vip)
    assert not endpoint(segments=frozenset({"vip"})).matches(reader)
    assert endpoint(segments=frozenset({"buyer"}), on=frozenset({"exited"})).matches(to_vip)
    assert not endpoint(segments=frozenset({"buyer"}), on=frozenset({"entered"})).matches(to_vip)
    assert endpoint(groups=frozenset({"tier"})).matches(to_vip)
    assert not endpoint(groups=frozenset({"tier"})).matches(reader)
    assert endpoint(groups=frozenset({"tier"}), segments=frozenset({"reader"})).matches(reader)
    gone = record(erasure("c-1", 3, previous=["vip"]))
    assert endpoint(segments=frozenset({"vip"})).matches(gone)
    assert not endpoint(segments=frozenset({"vip"}), on=frozenset({"entered"})).matches(gone)


def test_quiet_roll_out_changes_reach_only_endpoints_that_ask_for_them() -> None:
    quiet = record({**wire_change("c-1", 2, segments=["vip"], previous=["buyer"]), "quiet": True})
    assert quiet.quiet
    assert not endpoint().matches(quiet)
    assert endpoint(quiet=True).matches(quiet)
    config = parse_connectors_config({"webhooks": [
        {"name": "a", "url": "http://x/", "secret": "s", "quiet": True},
        {"name": "b", "url": "http://x/", "secret": "s"}]})
    assert [e.quiet for e in config.webhooks] == [True, False]
    with pytest.raises(ConnectorConfigError, match="'quiet' must be true or false"):
        parse_connectors_config({"webhooks": [
            {"name": "a", "url": "http://x/", "secret": "s", "quiet": "yes"}]})


def test_signature_and_delivery_id() -> None:
    body = b'{"customer_id":"c-1"}'
    signature = sign(SECRET, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, body, signature)
    assert not verify_signature(SECRET, body + b" ", signature)
    assert not verify_signature(b"other", body, signature)
    assert not verify_signature(SECRET, body, None)
    change = record(wire_change("c-1", 1, segments=["vip"]))
    assert delivery_id("a", change) == delivery_id("a", change)
    assert delivery_id("a", change) != delivery_id("b", change)
    restarted = record(wire_change("c-1", 1, segments=["vip"], at_ms=123))
    assert delivery_id("a", change) != delivery_id("a", restarted)  # seq 1 again, new life


def test_partition_progress_commits_the_first_unfinished_offset() -> None:
    progress = PartitionProgress()
    assert progress.committable() is None
    for offset in (10, 11, 12, 13):
        progress.add(offset)
    progress.finish(11)
    progress.finish(13)
    assert progress.committable() == 10
    progress.finish(10)
    assert progress.committable() == 12
    progress.finish(12)
    assert progress.committable() == 14


# --------------------------------------------------------------------- deliveries over HTTP


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, dict[str, Any]]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.records.append((key, orjson.loads(value)))


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[HookServer]:
    hooks = await HookServer(SECRET).start()
    yield hooks
    await hooks.stop()


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def body(change: ChangeRecord) -> bytes:
    return orjson.dumps(change.wire)


async def test_a_delivery_is_signed_and_carries_the_change(server: HookServer) -> None:
    metrics = Metrics(CollectorRegistry())
    change = record(wire_change("c-1", 1, segments=["vip"]))
    async with EndpointDispatcher(endpoint(server.url("ok")), ListSink(),
                                  metrics=metrics) as dispatcher:
        result = await dispatcher.deliver(change, body(change))
    assert result.ok and result.attempts == 1 and result.status == 200
    [hit] = server.hits
    assert hit.signature_ok and hit.headers[SIGNATURE_HEADER] == sign(SECRET, body(change))
    assert hit.headers[DELIVERY_HEADER] == delivery_id("hook", change)
    assert abs(int(hit.headers[TIMESTAMP_HEADER]) - time.time()) < 60
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.json == change.wire
    assert metrics.webhook_deliveries.labels("hook", "ok")._value.get() == 1


async def test_failures_are_retried_then_delivered(server: HookServer) -> None:
    server.behaviour["flaky"] = Behaviour(fail_first=2, fail_status=503)
    metrics = Metrics(CollectorRegistry())
    change = record(wire_change("c-1", 1, segments=["vip"]))
    async with EndpointDispatcher(endpoint(server.url("flaky")), ListSink(),
                                  metrics=metrics) as dispatcher:
        result = await dispatcher.deliver(change, body(change))
    assert result.ok and result.attempts == 3
    assert [h.status for h in server.hits] == [503, 503, 200]
    assert [h.headers["X-Segmenter-Attempt"] for h in server.hits] == ["1", "2", "3"]
    assert len({h.headers[DELIVERY_HEADER] for h in server.hits}) == 1
    assert metrics.webhook_deliveries.labels("hook", "retry")._value.get() == 2


async def test_exhausted_attempts_go_to_the_dead_letters(server: HookServer) -> None:
    server.behaviour["down"] = Behaviour(always=500)
    sink = ListSink()
    change = record(wire_change("c-1", 1, segments=["vip"]))
    async with EndpointDispatcher(endpoint(server.url("down"), max_attempts=3),
                                  sink) as dispatcher:
        result = await dispatcher.deliver(change, body(change))
    assert not result.ok and result.attempts == 3 and result.status == 500
    [(key, letter)] = sink.records
    assert key == b"c-1"
    assert letter["endpoint"] == "hook" and letter["attempts"] == 3
    assert letter["last_status"] == 500 and letter["last_error"] == "HTTP 500"
    assert letter["change"] == change.wire
    assert letter["delivery_id"] == delivery_id("hook", change)


async def test_a_timeout_counts_as_a_failed_attempt(server: HookServer) -> None:
    server.behaviour["slow"] = Behaviour(delay=0.5)
    sink = ListSink()
    change = record(wire_change("c-1", 1, segments=["vip"]))
    async with EndpointDispatcher(endpoint(server.url("slow"), timeout=0.1, max_attempts=2),
                                  sink) as dispatcher:
        result = await dispatcher.deliver(change, body(change))
    assert not result.ok and result.status is None
    assert result.error == "timeout after 0.1 s"
    assert sink.records[0][1]["last_status"] is None


async def test_per_customer_order_is_kept_while_other_customers_go_on(
        server: HookServer) -> None:
    # c-1's first change fails twice; its later changes wait, c-2 (another lane) does not
    server.behaviour["ordered"] = Behaviour(
        fail_first=2, fail_if=lambda raw: orjson.loads(raw)["customer_id"] == "c-1"
        and orjson.loads(raw)["seq"] == 1)
    first = record(wire_change("c-1", 1, segments=["buyer"]))
    changes = [first, record(wire_change("c-2", 1, segments=["buyer"]))]
    previous = ["buyer"]
    for seq in range(2, 6):
        now = ["vip"] if seq % 2 == 0 else ["buyer"]
        changes.append(record(wire_change("c-1", seq, segments=now, previous=previous)))
        changes.append(record(wire_change("c-2", seq, segments=now, previous=previous)))
        previous = now
    ep = endpoint(server.url("ordered"), backoff=0.1, max_backoff=0.1)
    async with EndpointDispatcher(ep, ListSink()) as dispatcher:
        assert dispatcher.lane_of("c-1") != dispatcher.lane_of("c-2")
        done: list[tuple[str, int]] = []

        def finished(c: ChangeRecord) -> Callable[[], None]:
            return lambda: done.append((c.customer_id, c.seq))

        for change in changes:
            dispatcher.submit(change, body(change), finished(change))
        assert await dispatcher.drain(30)
    ok = server.ok_hits("ordered")
    for cid in ("c-1", "c-2"):
        assert [h.json["seq"] for h in ok if h.json["customer_id"] == cid] == [1, 2, 3, 4, 5]
    # c-2 was not held back by c-1's retries: all of it arrived before c-1's first success
    c1_first_ok = next(i for i, h in enumerate(ok) if h.json["customer_id"] == "c-1")
    assert c1_first_ok == 5
    assert sorted(done) == sorted((c.customer_id, c.seq) for c in changes)


async def test_a_slow_endpoint_does_not_stall_another(server: HookServer) -> None:
    server.behaviour["tortoise"] = Behaviour(delay=1.0)
    changes = [record(wire_change(f"c-{i}", 1, segments=["vip"])) for i in range(20)]
    slow = EndpointDispatcher(endpoint(server.url("tortoise"), name="slow", lanes=1), ListSink())
    fast = EndpointDispatcher(endpoint(server.url("hare"), name="fast"), ListSink())
    async with slow, fast:
        began = time.monotonic()
        for change in changes:
            slow.submit(change, body(change))
            fast.submit(change, body(change))
        assert await fast.drain(10)
        elapsed = time.monotonic() - began
        assert len(server.ok_hits("hare")) == 20
        assert len(server.hits) - 20 <= 1  # the slow one is still on its first request
        assert elapsed < 1.0
        assert slow.in_flight == 20


# --------------------------------------------------------------------- TLS


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    import ssl

    cert, key = await asyncio.to_thread(_self_signed, tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    hooks = await HookServer(SECRET, context).start()
    try:
        change = record(wire_change("c-1", 1, segments=["vip"]))
        sink = ListSink()
        async with EndpointDispatcher(endpoint(hooks.url("tls"), max_attempts=1),
                                      sink) as strict:
            refused = await strict.deliver(change, body(change))
        assert not refused.ok and refused.error is not None
        assert "certificate" in refused.error.lower() or "TLS" in refused.error
        assert hooks.hits == []
        for options in ({"verify_tls": False}, {"ca_file": str(cert)}):
            async with EndpointDispatcher(endpoint(hooks.url("tls"), **options),
                                          ListSink()) as dispatcher:
                assert (await dispatcher.deliver(change, body(change))).ok
        assert len(hooks.hits) == 2
    finally:
        await hooks.stop()


# --------------------------------------------------------------------- end to end with Kafka


@pytest.mark.integration
async def test_changes_flow_from_kafka_to_endpoints_and_dead_letters(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, topic_factory: TopicFactory,
        server: HookServer, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = await topic_factory("changes", partitions=2)
    dead = await topic_factory("dead")
    server.behaviour["broken"] = Behaviour(always=410)
    server.behaviour["vip"] = Behaviour(fail_first=1)
    vip = endpoint(server.url("vip"), name="vip", segments=frozenset({"vip"}),
                   on=frozenset({"entered"}), start="earliest")
    broken = endpoint(server.url("broken"), name="broken", max_attempts=2, start="earliest")
    changes = [
        wire_change("c-1", 1, segments=["buyer"]),
        wire_change("c-2", 1, segments=["vip"]),
        wire_change("c-1", 2, segments=["vip"], previous=["buyer"]),
        wire_change("c-3", 1, segments=["reader"]),
    ]
    await produce_json(kafka_bootstrap, topic, [(c["customer_id"], c) for c in changes])
    # a tombstone (an erased customer, after its erasure change): skipped by every endpoint,
    # neither delivered nor dead-lettered nor logged as invalid
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, None, key=b"c-3")
    finally:
        await producer.stop()
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
    metrics = Metrics(CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhooks(
        settings, ConnectorsConfig((vip, broken)), topic=topic, dead_letter_topic=dead,
        stop=stop, metrics=metrics, group_prefix=f"{unique}."))
    try:
        letters = await consume_json(kafka_bootstrap, dead, 4, timeout=30)
        await eventually(lambda: len(server.ok_hits("vip")) == 2)

        async def all_committed() -> bool:
            offsets = []
            for name in ("vip", "broken"):
                got = await kafka_admin.list_consumer_group_offsets(f"{unique}.{name}")
                offsets.append(sum(m.offset for m in got.values()))
            return offsets == [5, 5]
        await eventually(all_committed)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert "invalid segment change" not in caplog.text
    ends = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await ends.start()
    try:
        parts = [TopicPartition(dead, p) for p in ends.partitions_for_topic(dead) or {0}]
        assert sum((await ends.end_offsets(parts)).values()) == 4  # no 5th dead letter
    finally:
        await ends.stop()
    assert sorted((h.json["customer_id"], h.json["seq"]) for h in server.ok_hits("vip")) == [
        ("c-1", 2), ("c-2", 1)]
    assert all(h.signature_ok for h in server.hits)
    assert sorted((r.key, r.value["change"]["seq"]) for r in letters) == [
        ("c-1", 1), ("c-1", 2), ("c-2", 1), ("c-3", 1)]
    assert {(r.value["endpoint"], r.value["last_status"], r.value["attempts"])
            for r in letters} == {("broken", 410, 2)}
    assert metrics.webhook_deliveries.labels("broken", "dead_lettered")._value.get() == 4
    assert metrics.webhook_deliveries.labels("vip", "retry")._value.get() == 2


@pytest.mark.integration
async def test_webhooks_commands(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, server: HookServer,
        unique: str, tmp_path: Path) -> None:
    config = tmp_path / "connectors.yaml"
    config.write_text(yaml.safe_dump({"webhooks": [
        {"name": "cli", "url": server.url("cli"), "secret_env": "HOOK_SECRET",
         "segments": ["vip"], "start": "earliest"}]}))
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap, "SEGMENTER_TOPIC_PREFIX": f"{unique}.",
           "SEGMENTER_CONNECTORS": str(config), "HOOK_SECRET": SECRET.decode()}
    checked = CliRunner().invoke(main, ["webhooks", "check"], env=env)
    assert checked.exit_code == 0, checked.output
    assert "cli: " in checked.output and "segments vip" in checked.output
    bad = CliRunner().invoke(main, ["webhooks", "check"], env={**env, "HOOK_SECRET": ""})
    assert bad.exit_code == 1 and "HOOK_SECRET" in bad.output

    topic = f"{unique}.segment-changes"
    await create_topics(kafka_admin, [topic], 2)
    log_path = tmp_path / "webhooks.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from segmenter.cli import main; main()", "webhooks", "run"],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        change = wire_change("c-7", 1, segments=["vip"])
        await produce_json(kafka_bootstrap, topic, [("c-7", change)])

        def arrived() -> bool:
            assert process.poll() is None, log_path.read_text()
            return len(server.ok_hits("cli")) == 1
        await eventually(arrived, 60)
        assert server.ok_hits("cli")[0].json == change
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        await kafka_admin.delete_topics([topic, f"{unique}.segmenter-webhook-dead-letters"])
    assert code == 0, log_path.read_text()

