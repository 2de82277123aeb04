"""The dashboard: its JSON API over a real Redis view (seeded through RedisView's own code path)
and a stand-in Query API, its auth, the live feed, and headless Chromium on the pages, first on
seeded data, then end to end (Kafka, a worker, `segmenter redis run`, generated events)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis as sync_redis
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient

from connectors.changes import change_from_wire
from connectors.common import make_producer
from connectors.dashboard import DashboardOptions, create_dashboard_app, serve, session_value
from connectors.dashboard.data import (
    FeedHub,
    ViewReader,
    definitions_from_rule_file,
    transitions_from_feed,
)
from connectors.dashboard.explain import explain
from connectors.events import produce_events
from connectors.redis_view import RedisView, minute_of, rule_file_groups, rule_file_metadata
from model.changes import CAUSE_EVENT, Cause, SegmentChange
from model.events import encode_event, new_event
from rules.loader import load_rules
from streams.generator import generate
from streams.runtime.settings import Settings
from tests.connectors.factories import record, replay_into_view, wire_change

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RETAIL_PATH = ROOT / "rules" / "examples" / "retail.yaml"
RETAIL = load_rules(RETAIL_PATH)
META = rule_file_metadata(RETAIL)
GROUP_OF = rule_file_groups(RETAIL)
VERSION = RETAIL.content_hash
TOKEN = "s3cret-token"
STATIC = ROOT / "connectors" / "dashboard" / "static"
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"


# ------------------------------------------------------------------------- seeding the view


class Story:
    """Builds segment changes like the engine does (entered, exited, group moves, details)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.held: dict[str, set[str]] = {}
        self.seq: dict[str, int] = {}
        self.at = start_ms if start_ms is not None else int(time.time() * 1000) - 60_000
        self.n = 0

    def change(self, customer_id: str, segments: Iterable[str], *, kind: str = CAUSE_EVENT,
               event_type: str = "purchase", at_ms: int | None = None) -> dict[str, Any]:
        before = self.held.get(customer_id, set())
        after = set(segments)
        entered, exited = sorted(after - before), sorted(before - after)
        groups: dict[str, dict[str, str | None]] = {}
        for g in sorted({GROUP_OF[s] for s in (*entered, *exited) if s in GROUP_OF}):
            old = next((s for s in sorted(before) if GROUP_OF.get(s) == g), None)
            new = next((s for s in sorted(after) if GROUP_OF.get(s) == g), None)
            if old != new:
                groups[g] = {"from": old, "to": new}
        self.seq[customer_id] = seq = self.seq.get(customer_id, 0) + 1
        self.n += 1
        at = at_ms if at_ms is not None else self.at + self.n
        event = f"ev-{customer_id}-{seq}" if kind == CAUSE_EVENT else None
        change = SegmentChange(
            customer_id=customer_id, seq=seq, at=at,
            cause=Cause(kind, event, event_type if event else None, at if event else None),
            rules_version=VERSION, entered=tuple(entered), exited=tuple(exited),
            segments=tuple(sorted(after)), groups=groups,
            details={s: {**META[s], "why": {}} for s in (*entered, *exited)})
        self.held[customer_id] = after
        return change.to_wire()


async def apply(view: RedisView, wires: Iterable[dict[str, Any]]) -> None:
    records = [change_from_wire(orjson.loads(orjson.dumps(w))) for w in wires]
    outcomes = await view.apply_many(records)
    assert set(outcomes) <= {"applied"}, outcomes


def base_story() -> tuple[Story, list[dict[str, Any]]]:
    """c-vip: vip (was growth) + newsletter; c-grow: growth; c-low: low_value then potential;
    c-web: web_engaged only."""
    s = Story()
    wires = [
        s.change("c-vip", ["growth"]),
        s.change("c-grow", ["growth", "new_customer"]),
        s.change("c-low", ["low_value"]),
        s.change("c-vip", ["vip", "newsletter_engaged"]),
        s.change("c-web", ["web_engaged"], event_type="page_view"),
        s.change("c-low", ["potential"]),
    ]
    return s, wires


# ------------------------------------------------------------------------- a stand-in Query API

VIP_WHY = {"purchase_amount(180d)": 6200.0, "purchase_count(180d)": 3}


def vip_customer() -> dict[str, Any]:
    vip = next(s for s in RETAIL.segments if s.id == "vip")
    news = next(s for s in RETAIL.segments if s.id == "newsletter_engaged")
    return {
        "customer_id": "c-vip", "seq": 2, "rules_version": VERSION,
        "evaluated_at": "2026-01-01T00:00:00.000Z",
        "segments": [
            {"id": "newsletter_engaged", "label": news.label, "color": news.color,
             "icon": news.icon, "group": None, "actions": {}, "entered_at":
             "2026-01-01T00:00:00.000Z", "when": news.when_text, "exit_when": None,
             "why": {"email_opens(30d)": 4, "open_rate(90d)": 0.5, "click_rate(90d)": 0.01,
                     "unsubscribed()": False}},
            {"id": "vip", "label": vip.label, "color": vip.color, "icon": vip.icon,
             "group": "tier", "actions": dict(vip.actions), "entered_at":
             "2026-01-01T00:00:00.000Z", "when": vip.when_text, "exit_when": vip.exit_when_text,
             "why": VIP_WHY},
        ],
        "metrics": {"seq": 2, "lifetime_amount": 6200.0, "lifetime_orders": 3, **VIP_WHY},
    }


@dataclass
class StubApi:
    """The worker's Query API as the dashboard sees it; records the Authorization headers."""

    token: str = ""
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    auth_seen: list[str] = field(default_factory=list)
    url: str = ""
    rules_path: Path = RETAIL_PATH  # the rule file `GET /v1/segments` describes

    def app(self) -> web.Application:
        async def segments(request: web.Request) -> web.Response:
            if not self._ok(request):
                return web.json_response({"error": "token"}, status=401)
            body = definitions_from_rule_file(self.rules_path)
            body["sizes_scope"] = "all"
            for s in body["segments"]:
                s["size"] = 0
            return web.json_response(body)

        async def customer(request: web.Request) -> web.Response:
            if not self._ok(request):
                return web.json_response({"error": "token"}, status=401)
            found = self.customers.get(request.match_info["cid"])
            if found is None:
                return web.json_response({"error": "no customer"}, status=404)
            return web.json_response(found)

        app = web.Application()
        app.router.add_get("/v1/segments", segments)
        app.router.add_get("/v1/customers/{cid}", customer)
        return app

    def _ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        self.auth_seen.append(header)
        return not self.token or header == f"Bearer {self.token}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    runner, port = await serve(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Dash:
    url: str
    http: aiohttp.ClientSession
    view: RedisView
    story: Story
    api: StubApi

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.get(self.url + path, **kw) as resp:
            body = await resp.read()
            try:
                return resp.status, orjson.loads(body)
            except orjson.JSONDecodeError:
                return resp.status, body.decode()


@contextlib.asynccontextmanager
async def dashboard(redis_client: aioredis.Redis, prefix: str, *, token: str = "",
                    api_up: bool = True, rules: Path | None = None,
                    seed: bool = True, outcomes: Path | None = None,
                    overlap_ttl: float = 0.0, api_rules: Path = RETAIL_PATH,
                    customers: Mapping[str, dict[str, Any]] | None = None
                    ) -> AsyncIterator[Dash]:
    stub = StubApi(token=token, customers={"c-vip": vip_customer(), **(customers or {})},
                   rules_path=api_rules)
    view = RedisView(redis_client, prefix=prefix)
    story, wires = base_story()
    if seed:
        await apply(view, wires)
    async with contextlib.AsyncExitStack() as stack:
        api_url = await stack.enter_async_context(running(stub.app())) if api_up \
            else f"http://127.0.0.1:{free_port()}"
        stub.url = api_url
        options = DashboardOptions(prefix=prefix, api_url=api_url, token=token,
                                   rules_path=rules, feed_poll=0.05, definitions_ttl=0.0,
                                   outcomes_dir=outcomes, overlap_ttl=overlap_ttl)
        url = await stack.enter_async_context(running(create_dashboard_app(options,
                                                                           redis_client)))
        http = await stack.enter_async_context(  # unsafe: keeps cookies of IP addresses
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        yield Dash(url, http, view, story, stub)


# ------------------------------------------------------------------------- JSON API


async def test_overview_has_sizes_colours_groups_and_rules_version(
        redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:") as d:
        status, body = await d.get("/api/overview")
    assert status == 200
    assert body["status"]["api_ok"] and body["status"]["source"] == "api"
    assert body["rules_version"] == VERSION and body["name"] == "retail-default"
    by_id = {s["id"]: s for s in body["segments"]}
    assert [s["id"] for s in body["segments"]] == [s.id for s in RETAIL.segments]  # file order
    assert by_id["vip"] == {"id": "vip", "label": "VIP", "color": "#C9A227", "icon": "crown",
                            "group": "tier", "size": 1}
    sizes = await d.view.sizes()
    assert {k: v["size"] for k, v in by_id.items() if v["size"]} == \
        {k: v for k, v in sizes.items() if v}
    assert by_id["growth"]["size"] == 1 and by_id["low_value"]["size"] == 0
    [tier] = body["groups"]
    assert tier == {"name": "tier", "segments": ["vip", "growth", "potential", "low_value"],
                    "total": 3}


async def test_without_the_query_api_the_view_and_the_rule_file_still_show(
        redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:", api_up=False) as d:
        _, bare = await d.get("/api/overview")
        _, customer = await d.get("/api/customers/c-vip")
    assert not bare["status"]["api_ok"] and bare["status"]["source"] == "none"
    assert "does not answer" in bare["status"]["api_error"]
    assert bare["rules_version"] == VERSION  # from the newest change's customer
    assert {s["id"]: s["size"] for s in bare["segments"]}["vip"] == 1
    assert all(s.get("undefined") for s in bare["segments"])
    # the customer from the view alone: segments with their display metadata, no why
    assert not customer["status"]["api_ok"] and customer["status"]["in_view"]
    assert {s["id"]: s["color"] for s in customer["segments"]} == \
        {"vip": "#C9A227", "newsletter_engaged": "#20B2AA"}
    assert all(s["why"] is None for s in customer["segments"]) and customer["metrics"] is None
    assert [h["seq"] for h in customer["history"]] == [2, 1]

    async with dashboard(redis_client, f"{unique}:", api_up=False, rules=RETAIL_PATH,
                         seed=False) as d:
        _, body = await d.get("/api/overview")
        _, rules = await d.get("/api/rules")
    assert body["status"]["source"] == "rules-file" and not body["status"]["api_ok"]
    assert {s["id"]: s["color"] for s in body["segments"]}["vip"] == "#C9A227"
    assert rules["groups"] == {"tier": ["vip", "growth", "potential", "low_value"]}
    assert rules["segments"][0]["when"] == \
        "purchase_amount(180d) >= 5000 and purchase_count(180d) >= 3"


async def test_customer_page_data_has_badges_why_metrics_and_history(
        redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:") as d:
        status, body = await d.get("/api/customers/c-vip")
        missing, _ = await d.get("/api/customers/nobody")
        only_view, grow = await d.get("/api/customers/c-grow")  # the stub does not know it
    assert status == 200 and missing == 404 and only_view == 200
    assert [s["id"] for s in body["segments"]] == ["newsletter_engaged", "vip"]
    vip = body["segments"][1]
    assert vip["why"] == VIP_WHY
    assert [(c["term"], c["op"], c["threshold"], c["value"], c["ok"])
            for c in vip["conditions"]] == [
        ("purchase_amount(180d)", ">=", "5000", 6200.0, True),
        ("purchase_count(180d)", ">=", "3", 3, True)]
    assert [(c["term"], c["op"], c["threshold"], c["ok"]) for c in vip["exit_conditions"]] == \
        [("purchase_amount(180d)", "<", "4000", False)]
    news = body["segments"][0]["conditions"]
    assert [c["ok"] for c in news] == [True, True, False, True]  # not unsubscribed(): holds
    assert news[-1]["negated"] and news[-1]["threshold"] == "false"
    assert body["metrics"]["lifetime_orders"] == 3
    assert [h["entered"] for h in body["history"]] == [["newsletter_engaged", "vip"],
                                                       ["growth"]]
    assert body["view"]["groups"] == {"tier": "vip"}
    assert grow["status"] == {"api_ok": True, "api_error": None, "api_url": d.api.url,
                              "in_view": True, "in_api": False}
    assert {s["id"] for s in grow["segments"]} == {"growth", "new_customer"}


def test_explain_lists_conditions_with_values_and_thresholds() -> None:
    rows = explain('rfm_segment() in ["at_risk", "cannot_lose"] and '
                   "refund_amount(180d) >= 0.4 * (purchase_amount(180d) + refund_amount(180d))",
                   {"rfm_segment()": "lost", "refund_amount(180d)": 100,
                    "purchase_amount(180d)": 50})
    assert rows[0] == {"text": 'rfm_segment() in ["at_risk", "cannot_lose"]',
                       "term": "rfm_segment()", "op": "in",
                       "threshold": ["at_risk", "cannot_lose"], "value": "lost", "ok": False,
                       "negated": False}
    assert rows[1]["threshold"] == \
        "0.4 * (purchase_amount(180d) + refund_amount(180d)) = 60"
    assert rows[1]["ok"] is True
    unknown = explain("days_since_last_purchase() > 45", {})
    assert unknown[0]["ok"] is None and unknown[0]["value"] is None
    assert explain("not a valid (", {}) == [] and explain(None, {}) == []


async def test_stats_series_and_transitions(redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:") as d:
        _, stats = await d.get("/api/stats?minutes=10&top=3")
        _, picked = await d.get("/api/stats?minutes=10&segments=vip,potential")
        _, moves = await d.get("/api/transitions?group=tier&minutes=60")
        # a view that keeps per-minute transition counters (proposed key) is read instead
        key = ViewReader(redis_client, f"{unique}:").transitions_key(minute_of(int(time.time()
                                                                                   * 1000)))
        await redis_client.hset(key, mapping={"tier:growth>vip": 5, "tier:->growth": 2,
                                              "other:a>b": 9})
        _, counted = await d.get("/api/transitions?group=tier&minutes=60")
    assert len(stats["minutes"]) == 10 and stats["minutes"] == sorted(stats["minutes"])
    assert stats["shown"][0] == "growth"  # the most active: entered twice, exited once
    assert sum(stats["series"]["growth"]["entered"]) == 2
    assert sum(stats["series"]["growth"]["exited"]) == 1
    assert stats["totals"]["vip"] == {"entered": 1, "exited": 0}
    assert picked["shown"] == ["vip", "potential"] and set(picked["series"]) == {"vip",
                                                                                  "potential"}
    # the feed goes back one minute only: the page says the period is covered from then
    assert moves["source"] == "feed" and not moves["complete"] and moves["covered_since"]
    assert moves["order"] == ["vip", "growth", "potential", "low_value", "-"]
    assert {(c["from"], c["to"]): c["count"] for c in moves["cells"]} == {
        ("-", "growth"): 2, ("-", "low_value"): 1, ("growth", "vip"): 1,
        ("low_value", "potential"): 1}
    assert counted["source"] == "counters"
    assert {(c["from"], c["to"]): c["count"] for c in counted["cells"]} == {
        ("growth", "vip"): 5, ("-", "growth"): 2}


def test_transitions_from_feed_ignores_older_entries_and_other_groups() -> None:
    entries = [
        {"at": "2026-01-01T10:05:00.000Z", "entered": ["vip"], "exited": ["growth"]},
        {"at": "2026-01-01T10:04:00.000Z", "entered": ["web_engaged"], "exited": []},
        {"at": "2026-01-01T09:00:00.000Z", "entered": ["growth"], "exited": []},
    ]
    counts, oldest = transitions_from_feed(entries, GROUP_OF, "tier", "2026-01-01T10:00:00.000Z")
    assert counts == {("growth", "vip"): 1} and oldest == "2026-01-01T09:00:00.000Z"


# ------------------------------------------------------------------------- live feed


async def read_events(resp: aiohttp.ClientResponse, wanted: Callable[[str, Any], bool],
                      timeout: float = 10.0) -> list[tuple[str, Any]]:
    """Read SSE events until `wanted(event, data)`; returns all read."""
    seen: list[tuple[str, Any]] = []
    event = "message"

    async def loop() -> None:
        nonlocal event
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
                seen.append((event, data))
                if wanted(event, data):
                    return
                event = "message"

    await asyncio.wait_for(loop(), timeout)
    return seen


async def test_feed_stream_sends_the_latest_then_each_new_change(
        redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:") as d:
        _, latest = await d.get("/api/feed?limit=3")
        assert [c["customer_id"] for c in latest["changes"]] == ["c-vip", "c-web", "c-low"]
        async with d.http.get(d.url + "/api/feed/stream") as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            [(kind, snap)] = await read_events(resp, lambda e, _: e == "snapshot")
            assert kind == "snapshot" and len(snap["changes"]) == 6
            assert snap["changes"][-1]["customer_id"] == "c-low"  # oldest first
            await asyncio.sleep(0.2)  # the poller has primed itself
            await apply(d.view, [d.story.change("c-new", ["new_customer"]),
                                 d.story.change("c-new", ["new_customer", "low_value"])])
            events = await read_events(
                resp, lambda e, data: e == "changes" and any(
                    c["seq"] == 2 and c["customer_id"] == "c-new" for c in data["changes"]))
        got = [c for _, data in events for c in data["changes"]]
        assert [(c["customer_id"], c["seq"], c["entered"]) for c in got] == [
            ("c-new", 1, ["new_customer"]), ("c-new", 2, ["low_value"])]
        assert got[0]["cause"]["event_type"] == "purchase"


async def test_feed_hub_reports_a_gap_when_more_arrive_than_one_read(
        redis_client: aioredis.Redis, unique: str) -> None:
    view = RedisView(redis_client, prefix=f"{unique}:")
    story = Story()
    hub = FeedHub(ViewReader(redis_client, f"{unique}:"), poll=0.01, batch=5)
    await apply(view, [story.change("a", ["vip"])])
    assert await hub.poll_once() == []  # primes
    await apply(view, [story.change("b", ["vip"]), story.change("c", ["vip"])])
    new = [orjson.loads(e)["customer_id"] for e in await hub.poll_once()]
    assert new == ["b", "c"]
    await apply(view, [story.change(f"x{i}", ["vip"]) for i in range(8)])
    burst = await hub.poll_once()
    assert burst[0] == b"" and len(burst) == 6  # gap marker + the 5 newest
    assert await hub.poll_once() == []


# ------------------------------------------------------------------------- auth


async def test_token_auth_for_api_pages_sse_and_static_files(
        redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:", token=TOKEN) as d:
        for path in ("/api/overview", "/api/feed/stream", "/api/customers/c-vip"):
            status, body = await d.get(path)
            assert status == 401 and body["error"], path
        status, page = await d.get("/")
        assert status == 401 and 'action="/login"' in page  # the sign-in form
        assert (await d.get("/static/js/main.js"))[0] == 401
        assert (await d.get("/healthz"))[0] == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await d.get("/api/overview", headers=bearer))[0] == 200
        assert (await d.get("/api/overview", headers={"Authorization": "Bearer nope"}))[0] == 401
        # the dashboard sends the same token to the Query API
        assert d.api.auth_seen and set(d.api.auth_seen) == {f"Bearer {TOKEN}"}
        status, body = await d.get("/?token=wrong")
        assert status == 401 and "Wrong token" in body
        async with d.http.get(d.url + f"/?token={TOKEN}&x=1", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/?x=1"
            cookie = resp.cookies["segmenter_dashboard"]
            assert cookie.value == session_value(TOKEN) and cookie["httponly"]
            assert TOKEN not in resp.headers["Set-Cookie"]
        # the session's cookie jar now carries it
        assert (await d.get("/api/overview"))[0] == 200
        assert (await d.get("/static/js/main.js"))[0] == 200
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            async with other.post(d.url + "/login", data={"token": "bad", "next": "/"}) as resp:
                assert resp.status == 401
            async with other.post(d.url + "/login", allow_redirects=False,
                                  data={"token": TOKEN, "next": "//evil.example/"}) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/"
            async with other.get(d.url + "/api/rules") as resp:
                assert resp.status == 200


async def test_dashboard_command_serves_on_loopback_until_sigterm(
        redis_url: str, redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    await apply(RedisView(redis_client, prefix=f"{unique}:"), base_story()[1])
    log = tmp_path / "dashboard.log"
    env = {"SEGMENTER_REDIS_URL": redis_url, "SEGMENTER_API_TOKEN": TOKEN}
    args = [sys.executable, "-c", "from segmenter.cli import main; main()", "dashboard",
            "--port", "0", "--prefix", f"{unique}:", "--api-url",
            f"http://127.0.0.1:{free_port()}", "--rules", str(RETAIL_PATH)]
    with subprocess_logged(args, env, log) as process:
        async def address() -> str | None:
            assert process.poll() is None, log.read_text()
            found = re.search(r"dashboard on (http://127\.0\.0\.1:\d+)/", log.read_text())
            return found.group(1) if found else None

        url = await wait_until(address, 30, "the dashboard's address", [log])
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/api/overview") as resp:
                assert resp.status == 401
            async with http.get(url + "/api/overview",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                body = await resp.json()
        assert body["status"]["source"] == "rules-file"
        assert {s["id"]: s["size"] for s in body["segments"]}["vip"] == 1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0, log.read_text()


def test_every_asset_is_served_locally() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith(("/static/", "#", "data:")) for r in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
    for js in (STATIC / "js").glob("*.js"):
        text = js.read_text()
        assert "http://" not in text and "https://" not in text, js
        for module in re.findall(r'from "\./([^"]+)"', text):
            assert (STATIC / "js" / module).is_file(), (js, module)
    icons = orjson.loads((STATIC / "vendor" / "icons.json").read_bytes())
    assert {s.icon for s in RETAIL.segments if s.icon} <= set(icons)


# ------------------------------------------------------------------------- audiences (issue 14)


async def test_segment_members_export_history_and_overlap_api(
        redis_client: aioredis.Redis, unique: str) -> None:
    """The dashboard's audience endpoints over a view built from the Simulator's change
    records: members and the CSV download equal the Simulator's states, the overlap its
    intersections; 404 / 400 with messages."""
    prefix = f"{unique}:"
    async with dashboard(redis_client, prefix, token=TOKEN, seed=False) as d:
        replayed = await replay_into_view(redis_client, prefix)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        seg = "low_value"
        want = replayed.members(seg)
        assert len(want) > 128  # several SSCAN pages
        got: dict[str, Any] = {}
        cursor: str | None = "0"
        while cursor is not None:
            status, page = await d.get(f"/api/segments/{seg}/members?limit=50&cursor={cursor}",
                                       headers=bearer)
            assert status == 200 and page["size"] == len(want)
            got.update({m["customer_id"]: m for m in page["members"]})
            cursor = page["next_cursor"]
        assert {c: m["entered_at"] for c, m in got.items()} == want
        assert {m["label"] for m in got.values()} == {"Low value"}
        assert all(m["why"] == replayed.why(seg, c) for c, m in got.items())

        async with d.http.get(d.url + f"/api/segments/{seg}/export", headers=bearer) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
            assert f'filename="{seg}-members.csv"' in resp.headers["Content-Disposition"]
            table = list(csv.reader(io.StringIO((await resp.read()).decode())))
        assert table[0][:3] == ["customer_id", "label", "entered_at"]
        assert {r[0]: r[2] for r in table[1:]} == want and len(table) == len(want) + 1

        status, body = await d.get("/api/segments/nope/members", headers=bearer)
        assert status == 404 and "no segment 'nope'" in body["error"]
        for path in (f"/api/segments/{seg}/members?cursor=x", f"/api/segments/{seg}/members"
                     "?limit=0", f"/api/segments/{seg}/history?resolution=day",
                     f"/api/segments/{seg}/export?format=xml", "/api/overlap?segments=nope"):
            status, body = await d.get(path, headers=bearer)
            assert status == 400 and body["error"], path
        for path in (f"/api/segments/{seg}/members", f"/api/segments/{seg}/export",
                     f"/api/segments/{seg}/history", "/api/overlap", "/api/pipelines"):
            assert (await d.get(path))[0] == 401, path

        status, history = await d.get(f"/api/segments/{seg}/history?resolution=hour",
                                      headers=bearer)
        assert status == 200 and history["size"] == len(want) and history["points"]

        status, matrix = await d.get("/api/overlap", headers=bearer)
        assert status == 200
        members = {s.id: set(replayed.members(s.id)) for s in RETAIL.segments}
        assert matrix["segments"] == [s.id for s in RETAIL.segments if members[s.id]]
        for i, a in enumerate(matrix["segments"]):
            for j, b in enumerate(matrix["segments"]):
                assert matrix["both"][i][j] == len(members[a] & members[b]), (a, b)
        assert matrix["labels"]["vip"] == "VIP"


PIPELINE_RULES = """\
version: 1
name: pipelines-test
settings: {currency: PLN}
segments:
  - {id: vip, label: VIP, group: tier, when: purchase_amount(180d) >= 5000}
  - {id: growth, label: Growing, group: tier, when: purchase_amount(180d) >= 1000}
pipelines:
  - {id: premium, label: Premium funnel, when: [vip]}
  - {id: occasional, when: [tier]}
  - {id: prospect, label: Prospects}
"""


async def test_pipeline_sizes_and_moves_from_the_view(
        redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    prefix = f"{unique}:"
    async with dashboard(redis_client, prefix, seed=False) as d:
        await apply(d.view, pipeline_story(d.story))
        status, body = await d.get("/api/pipelines?minutes=60")
    assert status == 200  # the rules in force name no pipelines: the view's, largest first
    assert body["pipelines"] == [
        {"id": "occasional", "label": None, "default": False, "size": 2},
        {"id": "premium", "label": None, "default": False, "size": 1}]
    assert body["order"] == ["occasional", "premium", "-"]
    assert {(c["from"], c["to"]): c["count"] for c in body["cells"]} == {
        ("-", "occasional"): 3, ("occasional", "premium"): 1}
    # with the rules' pipelines: their priority order (the default last) and labels
    rules = tmp_path / "pipelines.yaml"
    rules.write_text(PIPELINE_RULES)
    async with dashboard(redis_client, prefix, seed=False, api_up=False, rules=rules) as d:
        status, body = await d.get("/api/pipelines?minutes=60")
    assert [(p["id"], p["label"], p["default"], p["size"]) for p in body["pipelines"]] == [
        ("premium", "Premium funnel", False, 1), ("occasional", None, False, 2),
        ("prospect", "Prospects", True, 0)]
    assert body["order"] == ["premium", "occasional", "prospect", "-"]


async def test_an_overlap_matrix_is_reused_for_a_few_seconds(
        redis_client: aioredis.Redis, unique: str) -> None:
    async with dashboard(redis_client, f"{unique}:", overlap_ttl=0.5) as d:
        _, first = await d.get("/api/overlap")
        await apply(d.view, [d.story.change("c-new", ["vip"])])
        _, again = await d.get("/api/overlap")
        await asyncio.sleep(0.6)
        _, later = await d.get("/api/overlap")
    i = first["segments"].index("vip")
    assert first["both"][i][i] == again["both"][i][i] == 1  # the same matrix, reused
    assert later["both"][later["segments"].index("vip")][later["segments"].index("vip")] == 2


def pipeline_story(story: Story) -> list[dict[str, Any]]:
    """Three customers enter `occasional` (growth), one moves on to `premium` (vip)."""
    wires = []
    for cid in ("p-1", "p-2", "p-3"):
        wire = story.change(cid, ["growth"])
        wire["pipeline"] = {"from": None, "to": "occasional"}
        wires.append(wire)
    wire = story.change("p-1", ["vip"])
    wire["pipeline"] = {"from": "occasional", "to": "premium"}
    return [*wires, wire]


OUTCOME_RULES = """\
version: 1
settings: {currency: PLN, control_salt: dashboard-test}
segments:
  - id: engaged_buyers
    when: count("email_open", 14d) >= 1
    control: 30%
    outcome: {conversion: purchase, within: 14d}
"""


@pytest.fixture(scope="module")
def outcome_reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the outcome report of `engaged_buyers` as `segmenter segments outcome
    --json --out` writes it, on a generated shop."""
    from click.testing import CliRunner

    from segmenter.cli import main
    from tests.factories import T0

    d = tmp_path_factory.mktemp("outcomes")
    (d / "rules.yaml").write_text(OUTCOME_RULES)
    events = generate(customers=400, events=12000, seed=5, start_ms=T0, days=60)
    (d / "log.jsonl").write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    reports = d / "reports"
    reports.mkdir()
    result = CliRunner().invoke(main, ["segments", "outcome", "engaged_buyers", "--rules",
                                       str(d / "rules.yaml"), "--events", str(d / "log.jsonl"),
                                       "--json", "--out", str(reports / "engaged_buyers.json"),
                                       "--wall-now", "2026-06-01T00:00:00Z", "--quiet"])
    assert result.exit_code == 0, result.output
    return reports


async def test_outcome_report_of_a_segment(redis_client: aioredis.Redis, unique: str,
                                           outcome_reports: Path) -> None:
    report = orjson.loads((outcome_reports / "engaged_buyers.json").read_bytes())
    assert report["treated"]["n"] > 0 and report["control"]["n"] > 0
    async with dashboard(redis_client, f"{unique}:", outcomes=outcome_reports) as d:
        status, body = await d.get("/api/segments/engaged_buyers/outcome")
        missing, error = await d.get("/api/segments/vip/outcome")
        _, listed = await d.get("/api/outcomes")
    assert listed == {"segments": ["engaged_buyers"]}
    assert status == 200
    assert {k: v for k, v in body.items() if k != "report_written_at"} == report
    assert DATE_TIME.match(body["report_written_at"].replace("T", " "))
    assert missing == 404 and "segmenter segments outcome vip" in error["error"]
    async with dashboard(redis_client, f"{unique}:", seed=False) as d:
        missing, error = await d.get("/api/segments/engaged_buyers/outcome")
    assert missing == 404 and "without --outcomes" in error["error"]


# ------------------------------------------------------------------------- headless Chromium

CHROMIUM = os.environ.get("SEGMENTER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SEGMENTER_CHROMEDRIVER", "/usr/bin/chromedriver")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    """Debian's headless Chromium driven by Selenium through Debian's chromedriver (explicit
    paths: nothing is downloaded)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:  # pragma: no cover - reported below
        missing.append("the selenium Python package")
    if missing:
        message = f"the browser tests need {', '.join(missing)} (make test installs them)"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, check: Callable[[], Any], timeout: float = 20.0,
             what: str = "condition") -> Any:
    """Poll `check()` (a truthy result ends the wait) until `timeout`, then fail with `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # stale elements while the page re-renders
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not met in {timeout:.0f} s (last: {last!r})")


def css_rgb(hex_color: str) -> str:
    h = hex_color.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))


def shown_sizes(driver: Any) -> dict[str, tuple[str, str]]:
    """segment -> (size text, swatch colour) as the overview shows them."""
    return driver.execute_script("""
        const out = {};
        for (const card of document.querySelectorAll('#cards .card')) {
          out[card.dataset.segment] = [card.querySelector('.size').textContent,
            getComputedStyle(card.querySelector('.swatch')).backgroundColor];
        }
        return out;""")


def check_overview(driver: Any, url: str, sizes: Callable[[], dict[str, int]]) -> None:
    driver.get(url + "/#/overview")

    colors = {s.id: css_rgb(s.color or "") for s in RETAIL.segments}

    def matches() -> bool:
        want = sizes()
        shown = shown_sizes(driver)
        return bool(shown) and all(shown.get(s, ("", ""))[0] == f"{n:,}"
                                   for s, n in want.items()) and want == sizes() and \
            all(shown.get(s, ("", ""))[1] == c for s, c in colors.items())

    wait_for(driver, matches, what="overview sizes and colours equal to the view's and rules'")
    shown = shown_sizes(driver)
    for seg in RETAIL.segments:
        assert shown[seg.id][1] == css_rgb(seg.color or ""), seg.id
    wait_for(driver, lambda: driver.find_elements("css selector", ".groupbar .bar > div"),
             what="the group bar")
    wait_for(driver, lambda: driver.find_elements("css selector", "#chart-entered canvas"),
             what="the entered chart")
    wait_for(driver, lambda: driver.find_elements("css selector", "table.matrix"),
             what="the transitions matrix")


def badge_colors(driver: Any, css: str) -> dict[str, str]:
    return driver.execute_script("""
        const out = {};
        for (const b of document.querySelectorAll(arguments[0])) {
          out[b.dataset.segment] = getComputedStyle(b).backgroundColor;
        }
        return out;""", css)


def check_customer(driver: Any, url: str, customer_id: str,
                   why: Mapping[str, str]) -> None:
    """The customer page shows vip's badge in its colour and, for vip, each term of `why`
    with the given value text and a tick."""
    driver.get(url + f"/#/customer/{customer_id}")
    wait_for(driver, lambda: "vip" in badge_colors(driver, "#customer-badges .badge"),
             what=f"{customer_id}'s vip badge")
    assert badge_colors(driver, "#customer-badges .badge")["vip"] == css_rgb("#C9A227")

    def rows() -> dict[str, tuple[str, str]]:
        return driver.execute_script("""
            const out = {};
            for (const tr of document.querySelectorAll(
                '.why .seg[data-segment="vip"] table.terms.when tr[data-term]')) {
              out[tr.dataset.term] = [tr.querySelector('.value').textContent,
                                      tr.lastElementChild.textContent];
            }
            return out;""")

    wait_for(driver, lambda: all(t in rows() for t in why), what="vip's why rows")
    shown = rows()
    for term, value in why.items():
        assert shown[term][0] == value, (term, shown[term])
        assert shown[term][1] == "✓", (term, shown[term])


def feed_rows(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#feed-list li[data-customer]')].map(li => ({
          customer: li.dataset.customer, seq: Number(li.dataset.seq),
          entered: [...li.querySelectorAll('.badge[data-kind=entered]')]
            .map(b => b.dataset.segment),
          exited: [...li.querySelectorAll('.badge[data-kind=exited]')]
            .map(b => b.dataset.segment),
          cause: li.querySelector('.cause').textContent}));""")


async def test_browser_pages_on_a_seeded_view(
        browser: Any, redis_client: aioredis.Redis, redis_url: str, unique: str,
        tmp_path: Path) -> None:
    """Overview, feed (throttled, capped, pause, filter), customer and rules pages in Chromium,
    with the token given once in the URL."""
    from selenium.webdriver.support.select import Select

    prefix = f"{unique}:"
    sync = sync_redis.Redis.from_url(redis_url)

    def sizes() -> dict[str, int]:
        raw = sync.hgetall(f"{prefix}segments:sizes")
        return {_text(k): int(v) for k, v in raw.items()}

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    try:
        async with dashboard(redis_client, prefix, token=TOKEN) as d:
            await run(browser.get, d.url + f"/?token={TOKEN}#/overview")
            await run(check_overview, browser, d.url, sizes)
            await run(browser.save_screenshot, str(tmp_path / "seeded-overview.png"))

            # the feed: a burst of 600 changes (about 300/s) is rendered, capped at 200 rows
            await run(browser.get, d.url + "/#/feed")
            await run(wait_for, browser, lambda: len(feed_rows(browser)) == 6, 20.0,
                      "the feed's first rows")
            for i in range(6):
                await apply(d.view, [d.story.change(f"b-{i}-{j}", ["web_engaged"],
                                                    event_type="page_view")
                                     for j in range(100)])
                await asyncio.sleep(0.3)
            def burst_shown() -> list[dict[str, Any]] | None:
                rows = feed_rows(browser)
                return rows if rows and rows[0]["customer"] == "b-5-99" else None

            rows = await run(wait_for, browser, burst_shown, 20.0, "the burst's last change")
            assert len(rows) == 200
            # pause: the list stays still while changes arrive, and shows them on resume
            await run(lambda: browser.find_element("id", "feed-pause").click())
            await apply(d.view, [d.story.change("c-vip", ["vip", "newsletter_engaged",
                                                          "rfm_champions"])])
            await run(wait_for, browser, lambda: "paused: 1 new" in browser.find_element(
                "id", "feed-state").text, 20.0, "the paused counter")
            assert (await run(feed_rows, browser))[0]["customer"] == "b-5-99"
            await run(lambda: browser.find_element("id", "feed-pause").click())
            row = await run(wait_for, browser, lambda: feed_rows(browser)[0]["customer"] ==
                            "c-vip" and feed_rows(browser)[0], 20.0, "the change after resume")
            assert row["entered"] == ["rfm_champions"] and row["cause"] == "purchase"
            colors = await run(badge_colors, browser, "#feed-list li:first-child .badge")
            assert colors == {"rfm_champions": css_rgb("#FFD700")}
            # the filter keeps one segment's changes (of the latest 1000 the page keeps)
            await run(lambda: Select(browser.find_element("id", "feed-filter"))
                      .select_by_value("vip"))
            await run(wait_for, browser, lambda: browser.current_url.endswith("#/feed/vip"),
                      10.0, "the filter in the address")
            filtered = await run(wait_for, browser, lambda: feed_rows(browser), 20.0,
                                 "the filtered feed")
            assert {r["customer"] for r in filtered} == {"c-vip"}
            assert all("vip" in r["entered"] + r["exited"] for r in filtered)

            await run(check_customer, browser, d.url, "c-vip",
                      {"purchase_amount(180d)": "6,200", "purchase_count(180d)": "3"})
            await run(browser.save_screenshot, str(tmp_path / "seeded-customer.png"))

            await run(browser.get, d.url + "/#/rules")
            ordered = await run(wait_for, browser, lambda: browser.execute_script(
                "return [...document.querySelectorAll('[data-group=tier] .rule')]"
                ".map(r => r.dataset.segment)"), 20.0, "the rules page")
            assert ordered == ["vip", "growth", "potential", "low_value"]
            logs = [e for e in await run(browser.get_log, "browser")
                    if e["level"] == "SEVERE"]
            assert not logs, logs
    finally:
        sync.close()


PREDICTIVE_PATH = ROOT / "rules" / "examples" / "predictive.yaml"
MODEL_TERMS = ("p_alive()", "expected_purchases(30d)", "clv(365d)", "cluster()")


def predictive_shop() -> tuple[int, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """A generated shop replayed by the Simulator with predictive.yaml up to an instant 30 days
    after its last event: (that instant, customer -> the Query API's answer at it, built by
    streams.query.customer_view as the worker does, customer -> the model functions' values the
    engine's terms compute for the customer at that instant), for two repeat buyers: the first
    likely to churn and the first in the "lapsing" cluster."""
    from rules.context import Ctx
    from rules.models.bgnbd import expected_order_value, expected_purchases, p_alive
    from rules.models.file import BgNbdModel
    from rules.models.history import read_purchases, summarise
    from rules.ruleset import RuleSet
    from streams.query import customer_view
    from streams.simulate import Simulator

    rules = RuleSet(load_rules(PREDICTIVE_PATH))
    start = 1_772_323_200_000  # 2026-03-01T00:00:00Z
    lines = [encode_event(e) for e in generate(customers=40, events=3000, seed=21,
                                               start_ms=start, days=90, currency="USD")]
    at = start + 120 * 86_400_000
    sim = Simulator(rules, until=at)
    sim.feed_lines(lines)
    sim.finish()
    terms = {t.text: t for s in rules.segments for e in (s.when, s.exit_when) if e is not None
             for t in e.terms}
    churn = next(c for c, st in sorted(sim.states.items()) if "likely_to_churn" in st.members)
    lapsing = next(c for c, st in sorted(sim.states.items())
                   if "cluster_lapsing" in st.members and c != churn)
    bg = next(m for m in rules.settings.models.values() if isinstance(m, BgNbdModel))
    summaries = {c.customer_id: c for c in summarise(read_purchases(lines), at, bg.unit_ms)}
    views, values = {}, {}
    for cid in (churn, lapsing):
        st = sim.states[cid]
        ctx = Ctx(st, at, rules.settings.resolution_ms, st.cands, rules.groups_before)
        values[cid] = {t: terms[t].fn(ctx) for t in MODEL_TERMS}
        # the same BG/NBD values from the log's purchase summary (rules.models.history), not
        # from the engine's state
        c = summaries[cid]
        assert values[cid]["p_alive()"] == p_alive(bg.params, c.x, c.t_x, c.T)
        assert values[cid]["expected_purchases(30d)"] == expected_purchases(
            bg.params, 30 * 86_400_000 / bg.unit_ms, c.x, c.t_x, c.T)
        assert bg.spend is not None
        assert values[cid]["clv(365d)"] == pytest.approx(
            expected_purchases(bg.params, 365 * 86_400_000 / bg.unit_ms, c.x, c.t_x, c.T)
            * expected_order_value(bg.spend, c.x, c.mean_value), rel=1e-12)
        views[cid] = orjson.loads(orjson.dumps(customer_view(rules, st, at)))
    assert values[churn]["p_alive()"] < 0.3 and values[lapsing]["cluster()"] == "lapsing"
    return at, views, values


async def test_export_csv_of_model_function_inputs_in_why(
        redis_client: aioredis.Redis, unique: str) -> None:
    """predictive.yaml: a change's `why` holds each model function's inputs as an object
    (`"p_alive() inputs": {"model": "churn", "x": .., ...}`); the dashboard's CSV export writes
    it as one JSON cell (quoted by the CSV writer) that reads back equal to the change's, and
    the JSONL export keeps it as an object."""
    from rules.ruleset import RuleSet
    from streams.simulate import Simulator

    rules = RuleSet(load_rules(PREDICTIVE_PATH))
    changes: list[SegmentChange] = []
    start = 1_772_323_200_000  # 2026-03-01T00:00:00Z
    sim = Simulator(rules, until=start + 120 * 86_400_000, on_change=changes.append)
    sim.feed_lines(encode_event(e) for e in generate(customers=40, events=3000, seed=21,
                                                     start_ms=start, days=90, currency="USD"))
    sim.finish()
    prefix = f"{unique}:"
    view = RedisView(redis_client, prefix=prefix,
                     fallback_metadata=rule_file_metadata(rules.file),
                     segment_groups=rule_file_groups(rules.file))
    records = [change_from_wire(orjson.loads(orjson.dumps(c.to_wire()))) for c in changes]
    assert set(await view.apply_many(records)) <= {"applied"}
    want: dict[str, dict[str, Any]] = {}  # member -> the why of its latest entry
    for c in changes:
        if "likely_to_churn" in c.entered:
            want[c.customer_id] = orjson.loads(orjson.dumps(
                c.details["likely_to_churn"]["why"]))
        elif "likely_to_churn" in c.exited:
            want.pop(c.customer_id, None)
    assert want and all(isinstance(w.get("p_alive() inputs"), dict) for w in want.values())

    async with dashboard(redis_client, prefix, seed=False, api_rules=PREDICTIVE_PATH) as d:
        async with d.http.get(d.url + "/api/segments/likely_to_churn/export") as resp:
            assert resp.status == 200
            text = (await resp.read()).decode("utf-8")
        async with d.http.get(d.url + "/api/segments/likely_to_churn/export?format=jsonl") \
                as resp:
            lines = [orjson.loads(x) for x in (await resp.read()).splitlines()]
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert header[:3] == ["customer_id", "label", "entered_at"]
    assert "p_alive() inputs" in header and "p_alive()" in header
    assert {r[0] for r in rows} == set(want) == {x["customer_id"] for x in lines}
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        why = want[row[0]]
        inputs = orjson.loads(cells["p_alive() inputs"])
        assert inputs == why["p_alive() inputs"] and inputs["model"] == "churn"
        assert set(inputs) >= {"x", "t_x", "T", "time_unit", "repeat"}
        assert float(cells["p_alive()"]) == why["p_alive()"]
        assert cells["lifetime_orders()"] == str(why["lifetime_orders()"])
    assert all(x["why"] == want[x["customer_id"]] for x in lines)


def test_a_why_cell_is_json_for_objects_and_lists_and_text_for_text() -> None:
    from connectors.audience import _cell

    inputs = {"model": "churn", "x": 3.0, "t_x": 1.5, "T": 20.25, "time_unit": "week",
              "repeat": "days", "features": {"days_since_last_purchase()": None},
              "label": 'say "hi", then go'}
    assert orjson.loads(_cell(inputs)) == inputs
    assert _cell(None) == "" and _cell("lapsing") == "lapsing" and _cell(True) == "true"
    assert _cell(0.1) == "0.1" and _cell([1, "a"]) == '[1,"a"]'
    buf = io.StringIO()
    csv.writer(buf).writerow(["c-1", _cell(inputs)])
    assert orjson.loads(next(csv.reader(io.StringIO(buf.getvalue())))[1]) == inputs


def shown_predictions(driver: Any) -> dict[str, dict[str, str]]:
    return driver.execute_script("""
        const out = {};
        for (const d of document.querySelectorAll('#customer-predictions [data-prediction]')) {
          out[d.dataset.prediction] = {value: d.dataset.value, fn: d.dataset.function,
            text: d.querySelector('.value').textContent,
            label: d.querySelector('.label').textContent};
        }
        return out;""")


def page_formats(driver: Any, values: list[Any]) -> list[str]:
    """`values` as the dashboard's own fmtValue (static/js/util.js) writes them."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import("/static/js/util.js").then((m) => done(arguments[0].map(m.fmtValue)),
                                          (e) => done(String(e)));""", values)


async def test_browser_customer_page_shows_the_engines_predictions(
        browser: Any, redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    """predictive.yaml: the customer page's Predictions block shows P(alive), expected
    purchases, CLV and the cluster label exactly as the engine computes them for the customer
    at the Query API's instant (values computed here with the Python API), and the why of
    likely_to_churn shows p_alive() against its threshold."""
    _, views, values = await asyncio.to_thread(predictive_shop)

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    async with dashboard(redis_client, f"{unique}:", seed=False, api_rules=PREDICTIVE_PATH,
                         customers=views) as d:
        for cid, want in values.items():
            status, body = await d.get(f"/api/customers/{cid}")
            assert status == 200
            assert {p["term"]: p["value"] for p in body["predictions"]} == want
            assert [p["label"] for p in body["predictions"]] == [
                "P(alive)", "Expected purchases, next 30d", "CLV, next 365d", "Cluster"]

            await run(browser.get, d.url + f"/#/customer/{cid}")
            shown = await run(wait_for, browser,
                              lambda: (s := shown_predictions(browser)) and len(s) == 4 and s,
                              20.0, f"{cid}'s predictions")
            texts = await run(page_formats, browser, [want[t] for t in MODEL_TERMS])
            for term, text in zip(MODEL_TERMS, texts, strict=True):
                value = want[term]
                if isinstance(value, float):  # exactly the engine's number, as sent
                    assert float(shown[term]["value"]) == value, (cid, term, shown[term])
                    assert float(shown[term]["text"].replace(",", "")) == \
                        pytest.approx(value, rel=1e-4, abs=1e-4), (cid, term, shown[term])
                else:
                    assert shown[term]["value"] == value, (cid, term, shown[term])
                assert shown[term]["text"] == text, (cid, term, shown[term], text)
            assert shown["cluster()"]["text"] == values[cid]["cluster()"]
            assert shown["p_alive()"]["label"] == "P(alive)"
            if "likely_to_churn" in {s["id"] for s in views[cid]["segments"]}:
                row = await run(browser.execute_script, """
                    const tr = document.querySelector('.why .seg[data-segment="likely_to_churn"]'
                      + ' tr[data-term="p_alive()"]');
                    return tr && [tr.querySelector('.value').textContent,
                                  tr.lastElementChild.textContent];""")
                assert row == [shown["p_alive()"]["text"], "✓"], row
            await run(browser.save_screenshot, str(tmp_path / f"predictions-{cid}.png"))
        # rules without models (the stub's c-vip is a retail customer): no block
        _, vip = await d.get("/api/customers/c-vip")
        assert vip["predictions"] == []
        await run(browser.get, d.url + "/#/customer/c-vip")
        await run(wait_for, browser, lambda: browser.find_elements(
            "css selector", "#customer-badges .badge"), 20.0, "c-vip's badges")
        assert not await run(browser.find_elements, "css selector", "#customer-predictions")
        logs = [e for e in await run(browser.get_log, "browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    async with dashboard(redis_client, f"{unique}:", api_up=False) as d:
        _, bare = await d.get("/api/customers/c-vip")
    assert bare["predictions"] is None and not bare["status"]["api_ok"]


def member_rows(driver: Any) -> dict[str, dict[str, Any]]:
    """The segment page's members table: customer -> {entered (shown), entered_at (title), why
    (text)}."""
    return driver.execute_script("""
        const out = {};
        for (const tr of document.querySelectorAll('#segment-members tr[data-customer]')) {
          const ts = tr.querySelector('.entered .ts');
          out[tr.dataset.customer] = {entered: ts ? ts.textContent : null,
            entered_at: ts ? ts.title : null, why: tr.querySelector('.why').textContent};
        }
        return out;""")


def overlap_cells(driver: Any) -> dict[tuple[str, str], int]:
    return {(c["a"], c["b"]): int(c["both"]) for c in driver.execute_script("""
        return [...document.querySelectorAll('table.overlap td[data-a]')].map(td => ({
          a: td.dataset.a, b: td.dataset.b, both: td.dataset.both}));""")}


async def test_browser_segment_page_members_csv_history_overlap_and_pipelines(
        browser: Any, redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    """On a view built from the Simulator's change records: a click on a segment card opens
    its page; its members table (every page, with "Load more") equals the Simulator's members
    with their entry times; the CSV download holds them all; the size chart is drawn with the
    view's size; the overview's overlap matrix equals the states' intersections and the
    pipelines panel the view's pipeline sizes."""
    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    prefix = f"{unique}:"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    async with dashboard(redis_client, prefix, token=TOKEN, seed=False) as d:
        replayed = await replay_into_view(redis_client, prefix)
        seg = "low_value"
        want = replayed.members(seg)
        assert len(want) > 128
        # a few changes now: the minute history has points of today
        await apply(d.view, [d.story.change(f"now-{i}", [seg]) for i in range(3)])
        want.update({f"now-{i}": None for i in range(3)})  # type: ignore[misc]
        size = len(want)

        await run(browser.get, d.url + f"/?token={TOKEN}#/overview")
        await run(wait_for, browser, lambda: browser.find_elements(
            "css selector", f'#cards .card[data-segment="{seg}"]'), 20.0, "the cards")
        await run(lambda: browser.find_element(
            "css selector", f'#cards .card[data-segment="{seg}"]').click())
        await run(wait_for, browser, lambda: browser.current_url.endswith(f"#/segment/{seg}"),
                  10.0, "the segment page's address")
        await run(wait_for, browser, lambda: member_rows(browser), 20.0, "the first members")
        first = await run(member_rows, browser)
        assert 0 < len(first) < size  # one page of about 100
        while not await run(lambda: browser.find_element("id", "segment-more")
                            .get_attribute("hidden")):
            before = len(await run(member_rows, browser))
            await run(lambda: browser.find_element("id", "segment-more").click())
            await run(wait_for, browser, lambda b=before: len(member_rows(browser)) > b or
                      browser.find_element("id", "segment-more").get_attribute("hidden"),
                      20.0, "the next page")
        rows = await run(member_rows, browser)
        assert set(rows) == set(want)
        for cid, entered_at in want.items():
            if entered_at is not None:
                assert rows[cid]["entered_at"] == entered_at, cid
            assert DATE_TIME.fullmatch(rows[cid]["entered"]), rows[cid]
        some = next(c for c in want if replayed.why(seg, c) if not c.startswith("now-"))
        for term in replayed.why(seg, some):
            assert term in rows[some]["why"]
        count = await run(lambda: browser.find_element("id", "segment-members-count").text)
        assert count == f"({size:,} shown of {size:,})"

        # the size chart: drawn, with the view's size
        await run(wait_for, browser, lambda: browser.find_elements(
            "css selector", "#segment-history canvas"), 20.0, "the size chart")
        shown_size = await run(lambda: browser.find_element("id", "segment-history")
                               .get_attribute("data-size"))
        assert shown_size == str(size) == str((await d.view.sizes())[seg])
        await run(browser.execute_script, "window.scrollTo(0, 0)")
        await run(browser.save_screenshot, str(tmp_path / "segment.png"))

        # the CSV download (the session cookie authorizes it)
        await run(browser.execute_cdp_cmd, "Page.setDownloadBehavior",
                  {"behavior": "allow", "downloadPath": str(downloads)})
        await run(browser.execute_script, "document.getElementById('segment-csv')"
                  ".scrollIntoView({block: 'center'})")
        await run(lambda: browser.find_element("id", "segment-csv").click())
        target = downloads / f"{seg}-members.csv"
        await run(wait_for, browser, lambda: target.exists() and not list(
            downloads.glob("*.crdownload")), 30.0, "the CSV download")
        table = list(csv.reader(io.StringIO(target.read_text())))
        assert table[0][:3] == ["customer_id", "label", "entered_at"]
        assert {r[0] for r in table[1:]} == set(want) and len(table) == size + 1
        assert {r[1] for r in table[1:]} == {"Low value"}

        # overview: the overlap matrix and the pipelines
        await apply(d.view, pipeline_story(d.story))
        await run(browser.get, d.url + "/#/overview")
        members = {s.id: set(replayed.members(s.id)) for s in RETAIL.segments}
        members[seg] |= {f"now-{i}" for i in range(3)}
        members["growth"] |= {"p-2", "p-3"}
        members["vip"] |= {"p-1"}
        held = [s for s, m in members.items() if m]
        expected = {(a, b): len(members[a] & members[b]) for a in held for b in held}
        assert any(n for (a, b), n in expected.items() if a != b)
        await run(wait_for, browser, lambda: overlap_cells(browser) == expected, 20.0,
                  "the overlap matrix equal to the states' intersections")
        sizes = await run(wait_for, browser, lambda: browser.execute_script("""
            if (document.getElementById('pipelines-panel').hidden) return null;
            const out = {};
            for (const el of document.querySelectorAll('#pipelines [data-pipeline]'))
              out[el.dataset.pipeline] = el.querySelector('.n').textContent;
            return out;"""), 20.0, "the pipelines panel")
        assert sizes == {"occasional": "2", "premium": "1"}
        moves = await run(lambda: browser.execute_script(
            "return document.querySelector('table.pipelines td[data-from=\"occasional\"]"
            "[data-to=\"premium\"]').textContent"))
        assert moves == "1"
        await run(browser.execute_script, "document.getElementById('overlap')"
                  ".scrollIntoView({block: 'center'})")
        await run(browser.save_screenshot, str(tmp_path / "overview-overlap.png"))
        logs = [e for e in await run(browser.get_log, "browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    print(f"screenshots in {tmp_path}")


async def test_browser_segment_page_shows_the_outcome_report(
        browser: Any, redis_client: aioredis.Redis, unique: str, outcome_reports: Path,
        tmp_path: Path) -> None:
    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    report = orjson.loads((outcome_reports / "engaged_buyers.json").read_bytes())
    async with dashboard(redis_client, f"{unique}:", outcomes=outcome_reports) as d:
        await d.view.apply(record(wire_change("c-e", 1, segments=["engaged_buyers"])))
        await run(browser.get, d.url + "/#/segment/engaged_buyers")
        await run(wait_for, browser, lambda: not browser.find_element(
            "id", "segment-outcome-panel").get_attribute("hidden"), 20.0, "the outcome panel")
        shown = await run(lambda: browser.execute_script("""
            const out = {};
            for (const tr of document.querySelectorAll('table.outcome tr[data-group]'))
              out[tr.dataset.group] = tr.querySelector('.n').textContent;
            out.diff = document.querySelector('#segment-outcome .diff').textContent;
            return out;"""))
        assert shown["treated"] == f"{report['treated']['n']:,}"
        assert shown["control"] == f"{report['control']['n']:,}"
        assert "Difference treated − control" in shown["diff"]
        assert ("not significant" in shown["diff"]) != report["significant"]
        await run(browser.save_screenshot, str(tmp_path / "outcome.png"))
        await run(browser.get, d.url + "/#/segment/vip")  # no report: no panel
        await run(wait_for, browser, lambda: "c-vip" in member_rows(browser), 10.0,
                  "vip's members")
        await asyncio.sleep(0.5)  # the list of reports has come back
        assert await run(lambda: browser.find_element("id", "segment-outcome-panel")
                         .get_attribute("hidden"))
        logs = [e for e in await run(browser.get_log, "browser") if e["level"] == "SEVERE"]
        assert not logs, logs


PAGES = ("overview", "feed", "customer/c-vip", "rules", "segment/vip")
DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def layout_problems(driver: Any) -> list[str]:
    """What does not fit the window: the page or the navigation wider than it, a nav link
    outside it, a label (segment card, badge, customer id, time) cut or running out of it."""
    return driver.execute_script("""
        const width = document.documentElement.clientWidth, out = [];
        if (document.documentElement.scrollWidth > width)
          out.push(`page ${document.documentElement.scrollWidth}px wide in ${width}px`);
        const nav = document.querySelector('.topbar nav');
        if (nav.scrollWidth > nav.clientWidth)
          out.push(`nav overflows: ${nav.scrollWidth}px in ${nav.clientWidth}px`);
        for (const a of nav.querySelectorAll('a')) {
          const r = a.getBoundingClientRect();
          if (r.width === 0 || r.left < 0 || r.right > width || a.scrollWidth > a.clientWidth)
            out.push(`nav link ${a.textContent} at ${r.left}..${r.right} of ${width}`);
        }
        const labels = '.card .label, .card .sid, .badge .txt, .feed .cid, .feed .time, .ts, ' +
          '.topbar .status > *';
        for (const el of document.querySelectorAll(labels)) {
          const r = el.getBoundingClientRect();
          if (r.width === 0) continue;  // not shown
          if (el.scrollWidth > el.clientWidth + 1 || r.right > width + 0.5 || r.left < -0.5)
            out.push(`label ${JSON.stringify(el.textContent)} cut or outside: ` +
                     `${el.scrollWidth}/${el.clientWidth}px at ${r.left}..${r.right}`);
        }
        return out;""")


def shown_times(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.feed .time, .ts')].map(e => e.textContent)")


async def test_browser_pages_fit_a_phone_and_a_desktop_with_one_date_format(
        browser: Any, redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    """At 375 px (a phone) and 1280 px: the navigation fits the width with every link shown,
    nothing is wider than the window, no label is cut; every time shown reads
    2026-11-30 10:15:03 (browser's zone)."""
    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    async with dashboard(redis_client, f"{unique}:") as d:
        await apply(d.view, [d.story.change("c-vip", ["vip", "newsletter_engaged",
                                                      "first_order_follow_up"])])
        for width in (375, 1280):
            await run(browser.set_window_size, width, 900)
            for page in PAGES:
                await run(browser.get, d.url + f"/#/{page}")
                ready = {"overview": "#cards .card", "feed": "#feed-list li[data-customer]",
                         "customer": "#customer-badges .badge", "rules": ".rule",
                         "segment": "#segment-members tr[data-customer]"}
                css = ready[page.split("/")[0]]
                await run(wait_for, browser, lambda css=css: browser.find_elements(
                    "css selector", css), 20.0, f"{page} rendered")
                await asyncio.sleep(0.3)  # layout settles (fonts, charts)
                problems = await run(layout_problems, browser)
                await run(browser.save_screenshot, str(tmp_path / f"{width}-{page[:8]}.png"))
                assert not problems, (width, page, problems)
                times = await run(shown_times, browser)
                if page in ("feed", "customer/c-vip", "segment/vip"):
                    assert times, page
                assert all(DATE_TIME.fullmatch(t) for t in times), (page, times)
    print(f"screenshots in {tmp_path}")


# ------------------------------------------------------------------------- end to end


def purchase(customer_id: str, n: int, ts: int, amount: float) -> tuple[Any, bytes]:
    event = new_event(f"{customer_id}-order-{n}", customer_id, "purchase", ts, amount, "PLN",
                      f"{customer_id}-o{n}")
    return event, encode_event(event)


@contextlib.contextmanager
def subprocess_logged(args: list[str], env: Mapping[str, str], log: Path
                      ) -> Any:
    with log.open("wb") as out:
        process = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT,
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_until(check: Callable[[], Any], timeout: float, what: str,
                     logs: Iterable[Path] = ()) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                              for p in logs if p.exists())
            raise AssertionError(f"{what} not met in {timeout:.0f} s\n{tails}")
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="session")
async def e2e_prefix(kafka_admin: AIOKafkaAdminClient, unique: str) -> AsyncIterator[str]:
    prefix = f"{unique}."
    yield prefix
    with contextlib.suppress(Exception):
        mine = [t for t in await kafka_admin.list_topics() if t.startswith(prefix)]
        if mine:
            await kafka_admin.delete_topics(mine)


async def test_end_to_end_worker_view_dashboard_and_browser(
        browser: Any, kafka_bootstrap: str, e2e_prefix: str, redis_url: str,
        redis_client: aioredis.Redis, unique: str, tmp_path: Path) -> None:
    """Generated events -> worker (retail rules, event clock) -> segment-changes -> `segmenter
    redis run` -> Redis view <- dashboard (+ the worker's Query API) <- headless Chromium."""
    web_port = free_port()
    key_prefix = f"{unique}:"
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap, "SEGMENTER_REDIS_URL": redis_url,
           "SEGMENTER_TOPIC_PREFIX": e2e_prefix, "SEGMENTER_PARTITIONS": "2",
           "SEGMENTER_CLOCK": "event", "SEGMENTER_STATE_DIR": str(tmp_path / "state"),
           "SEGMENTER_WEB_PORT": str(web_port), "SEGMENTER_API_TOKEN": TOKEN,
           "SEGMENTER_LOG_LEVEL": "info", "SEGMENTER_WORKER_ID": "dash-e2e"}
    settings = Settings.from_env(env=env)
    worker_log, view_log = tmp_path / "worker.log", tmp_path / "redis-run.log"
    logs = (worker_log, view_log)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    sync = sync_redis.Redis.from_url(redis_url)

    def sizes() -> dict[str, int]:
        raw = sync.hgetall(f"{key_prefix}segments:sizes")
        return {_text(k): int(v) for k, v in raw.items()}

    def run(fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    cli = [sys.executable, "-c", "from segmenter.cli import main; main()"]
    with (subprocess_logged([*cli, "worker", "--rules", str(RETAIL_PATH)], env, worker_log)
          as worker,
          subprocess_logged([*cli, "redis", "run", "--prefix", key_prefix, "--rules",
                             str(RETAIL_PATH)], env, view_log) as view_process):
        options = DashboardOptions(prefix=key_prefix, api_url=f"http://127.0.0.1:{web_port}",
                                   token=TOKEN)
        async with (running(create_dashboard_app(options, redis_client)) as url,
                    aiohttp.ClientSession() as http):
            async def ready() -> bool:
                assert worker.poll() is None and view_process.poll() is None, \
                    "a subprocess ended"
                try:
                    async with http.get(f"http://127.0.0.1:{web_port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, 60, "the worker ready", logs)
            now = int(time.time() * 1000)
            events = [(e, encode_event(e)) for e in generate(
                customers=150, events=1500, seed=11, start_ms=now - 3 * 3_600_000,
                days=3 / 24)]
            producer = make_producer(settings)
            await producer.start()
            try:
                await produce_events(producer, settings, events)
                known = f"known-{unique}"
                await produce_events(producer, settings, [purchase(known, 1, now, 2100.0)])

                async def has(segment: str) -> bool:
                    raw = await redis_client.hget(f"{key_prefix}customer:{known}", "segments")
                    return raw is not None and segment in orjson.loads(raw)

                await wait_until(lambda: has("growth"), 60, f"{known} in growth", logs)
                # overview: the view's sizes and the rules' colours
                await run(browser.get, url + f"/?token={TOKEN}#/overview")
                await run(check_overview, browser, url, sizes)
                await run(browser.save_screenshot, str(shots / "overview.png"))

                # feed: a change caused now shows up
                await run(browser.get, url + "/#/feed")
                await run(wait_for, browser, lambda: feed_rows(browser), 20.0, "feed rows")
                await produce_events(producer, settings, [
                    purchase(known, 2, now + 1000, 2000.0),
                    purchase(known, 3, now + 2000, 2000.0)])

                def vip_line() -> Any:
                    return next((r for r in feed_rows(browser) if r["customer"] == known
                                 and "vip" in r["entered"]), None)

                row = await run(wait_for, browser, vip_line, 60.0, f"{known}'s vip line")
                assert "growth" in row["exited"] and row["cause"] == "purchase"
                colors = await run(badge_colors, browser,
                                   f'#feed-list li[data-customer="{known}"] .badge')
                assert colors["vip"] == css_rgb("#C9A227")
                await run(browser.save_screenshot, str(shots / "feed.png"))
            finally:
                await producer.stop()

            # customer: badges and why from the worker's Query API (with the token)
            await run(check_customer, browser, url, known,
                      {"purchase_amount(180d)": "6,100", "purchase_count(180d)": "3"})
            await run(browser.save_screenshot, str(shots / "customer.png"))
            await run(browser.get, url + "/#/overview")
            await run(check_overview, browser, url, sizes)
            await run(browser.set_window_size, 1400, 1250)
            await asyncio.sleep(0.5)
            await run(browser.save_screenshot, str(shots / "overview-final.png"))
    sync.close()
    print(f"screenshots in {shots}")
    if os.environ.get("SEGMENTER_UPDATE_SCREENSHOTS") or not DOCS_SCREENSHOT.exists():
        shutil.copyfile(shots / "overview-final.png", DOCS_SCREENSHOT)
