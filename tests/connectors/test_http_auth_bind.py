"""Every HTTP server binds SEGMENTER_WEB_BIND (loopback by default) and every endpoint but
/healthz and /metrics wants the token when one is set: the ingest, the dashboard, the worker's
Query API, and the connectors' metrics ports. Real servers on 127.0.0.1, real commands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from connectors.audience_web import AudienceRoutes
from connectors.dashboard import DashboardOptions, create_dashboard_app
from connectors.dashboard.app import COOKIE
from connectors.ingest import create_ingest_app
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from streams.runtime.web import build_app
from streams.runtime.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "right-token"
WRONG = [None, "Bearer wrong-token", "Bearer right-toke", "bearer right-token", "right-token",
         "Bearer right-token-and-more"]
OPEN = {"/healthz", "/metrics"}


def concrete(path: str) -> str:
    """A request path for a route: placeholders filled, static folders given a file."""
    path = re.sub(r"\{[^}]+\}", "c-1", path)
    return path + "app.js" if path.endswith("/static/") else path


def routes(app: web.Application) -> list[tuple[str, str]]:
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method in ("GET", "POST"):
            found.append((route.method, concrete(str(path) + ("/" if "prefix" in info else ""))))
    return sorted(set(found))


async def check_every_route(client: TestClient[Any, Any], app: web.Application,
                            exempt: Mapping[str, int] = {}) -> list[str]:
    """Each non-open route: 401 for every wrong or missing token, something else with the
    right one. Returns the paths checked."""
    checked = []
    for method, path in routes(app):
        if path in OPEN or path in exempt:
            continue
        for given in WRONG:
            headers = {} if given is None else {"Authorization": given}
            r = await client.request(method, path, headers=headers)
            assert r.status == 401, (method, path, given, r.status)
        r = await client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status != 401, (method, path)
        checked.append(path)
    for path in OPEN & {p for _, p in routes(app)}:
        assert (await client.get(path)).status == 200, path
    return checked


async def test_ingest_wants_the_token_on_every_endpoint_but_health_and_metrics(
        kafka_bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap)
    app = create_ingest_app(settings, producer, Metrics(CollectorRegistry()), TOKEN, 1024,
                            "PLN")
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert await check_every_route(client, app) == ["/v1/events"]
    finally:
        await client.close()
        await producer.stop()


async def test_dashboard_wants_the_token_on_every_page_api_and_asset(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    app = create_dashboard_app(DashboardOptions(prefix="no-such-view:", token=TOKEN,
                                                api_url="http://127.0.0.1:9"), redis)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        checked = await check_every_route(client, app, exempt={"/login": 200})
        assert {"/", "/api/overview", "/api/customers/c-1", "/api/feed",
                "/static/app.js"} <= set(checked)
        # the other ways of giving it: ?token= once, and the session cookie
        r = await client.get("/api/overview?token=wrong-token", allow_redirects=False)
        assert r.status == 401
        client.session.cookie_jar.clear()
        r = await client.get("/api/overview", cookies={COOKIE: "0" * 64})
        assert r.status == 401
        r = await client.post("/login", data={"token": "wrong-token", "next": "/"},
                              allow_redirects=False)
        assert r.status == 401 and COOKIE not in r.cookies
    finally:
        await client.close()
        await redis.aclose()


async def test_worker_query_api_wants_the_token_and_readyz_tells_only_the_verdict() -> None:
    settings = Settings.from_env(env={}, api_token=TOKEN)
    stub = SimpleNamespace(settings=settings, metrics=Metrics(CollectorRegistry()),
                           rulebook=None, ready=False, assigned=set(), progress={}, tasks={})
    worker = cast(Worker, stub)
    app = build_app(worker, [AudienceRoutes(worker)])  # as `segmenter worker` serves it
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        checked = await check_every_route(client, app, exempt={"/readyz": 503})
        assert set(checked) == {"/v1/customers/c-1", "/v1/segments",
                                "/v1/segments/c-1/members", "/v1/segments/c-1/history",
                                "/v1/overlap"}
        for given in WRONG:
            headers = {} if given is None else {"Authorization": given}
            r = await client.get("/readyz", headers=headers)
            assert r.status == 503 and await r.json() == {"ready": False}
    finally:
        await client.close()


def test_tokens_are_compared_in_constant_time_only() -> None:
    """No `==` / `!=` on a token, secret or signature in the servers' code."""
    pattern = re.compile(r"(token|secret|signature|authorization|expected)\w*\s*[!=]=|"
                         r"[!=]=\s*\w*(token|secret|signature|expected)", re.IGNORECASE)
    sources = [*sorted((ROOT / "connectors").rglob("*.py")), ROOT / "streams/runtime/web.py",
               *sorted((ROOT / "segmenter/commands").glob("*.py"))]
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in sources
                 for n, line in enumerate(path.read_text().splitlines(), start=1)
                 if pattern.search(line) and "compare_digest" not in line
                 and "is None" not in line]
    assert offenders == []


# ------------------------------------------------------------------------- binds


def listening(port: int) -> set[str]:
    """The addresses something listens on at TCP `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def listening_on(command: list[str], env: dict[str, str], port: int,
                       log: Path) -> set[str]:
    """Run the CLI command until it listens on `port`; return the addresses; stop it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from segmenter.cli import main; main()", *command],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # a second listener (IPv6) would show up by now
        return listening(port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()


def base_env(kafka_bootstrap: str, redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEGMENTER_WEB_BIND", "SEGMENTER_INGEST_HOST",
                        "SEGMENTER_DASHBOARD_BIND", "SEGMENTER_API_TOKEN")}
    env.update(SEGMENTER_KAFKA_BOOTSTRAP=kafka_bootstrap, SEGMENTER_REDIS_URL=redis_url,
               SEGMENTER_TOPIC_PREFIX=prefix, SEGMENTER_REDIS_PREFIX=f"{prefix}view:",
               SEGMENTER_PARTITIONS="1")
    return env


@pytest.fixture
async def prefix(kafka_admin: AIOKafkaAdminClient, unique: str) -> AsyncIterator[str]:
    yield f"{unique}."
    mine = [t for t in await kafka_admin.list_topics() if t.startswith(f"{unique}.")]
    if mine:
        await kafka_admin.delete_topics(mine)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["ingest", "dashboard", "redis-metrics", "webhooks-metrics"])
async def test_servers_listen_on_loopback_unless_web_bind_says_otherwise(
        kind: str, kafka_bootstrap: str, redis_url: str, prefix: str, tmp_path: Path) -> None:
    config = tmp_path / "connectors.yaml"
    config.write_text("webhooks:\n  - name: t\n    url: http://127.0.0.1:9/hook\n"
                      "    secret: s\n")

    def command(port: int) -> list[str]:
        return {
            "ingest": ["ingest", "run", "--port", str(port), "--currency", "PLN"],
            "dashboard": ["dashboard", "--port", str(port)],
            "redis-metrics": ["redis", "run", "--metrics-port", str(port)],
            "webhooks-metrics": ["webhooks", "run", "--config", str(config),
                                 "--metrics-port", str(port)],
        }[kind]

    env = base_env(kafka_bootstrap, redis_url, prefix)
    port = free_port()
    assert await listening_on(command(port), env, port, tmp_path / "default.log") == {
        "127.0.0.1"}
    env["SEGMENTER_WEB_BIND"] = "0.0.0.0"
    port = free_port()
    assert await listening_on(command(port), env, port, tmp_path / "any.log") == {"0.0.0.0"}
