"""Audiences from the Redis view (issue 14): the worker's `GET /v1/segments/{id}/members`
(SSCAN cursor), `/history` and `/v1/overlap` routes that `segmenter worker` adds, and
`segmenter segments export`, against the real Redis. The view is built from real change records
(the retail rules replayed by the Simulator over a generated log, as the worker would), and
what the API and the export give must equal the Simulator's final states."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from connectors import audience as aud
from connectors.audience_web import AudienceRoutes
from connectors.redis_view import KeyLayout, RedisView
from rules.ruleset import RuleSet
from segmenter.commands import segments_export
from segmenter.commands.segments import segments as segments_cli
from streams.runtime.metrics import Metrics
from streams.runtime.settings import Settings
from streams.runtime.web import build_app
from streams.runtime.worker import Worker
from tests.connectors.factories import (
    BASE_AT,
    RETAIL_RULES,
    record,
    replay_into_view,
    wire_change,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RETAIL = RETAIL_RULES
LABELS = {s.id: s.defn.label for s in RETAIL.segments}
TOKEN = "audience-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------------- factories


def stub_worker(prefix: str, redis_url: str, *, rules: RuleSet | None = RETAIL) -> Worker:
    """What build_app and AudienceRoutes read of a Worker: settings, metrics, the rules."""
    settings = Settings.from_env(env={}, api_token=TOKEN, redis_url=redis_url,
                                 redis_prefix=prefix)
    return cast(Worker, SimpleNamespace(
        settings=settings, metrics=Metrics(CollectorRegistry()),
        rulebook=None if rules is None else SimpleNamespace(rules=rules), ready=True,
        assigned=set(), progress={}, tasks={}))


@pytest_asyncio.fixture(loop_scope="session")
async def query_api_factory(redis_client: aioredis.Redis, redis_url: str
                            ) -> AsyncIterator[Any]:
    """make(prefix, rules=RETAIL) -> a TestClient on the worker's web app with the audience
    routes (as `segmenter worker` serves it), over the real Redis."""
    clients: list[TestClient[Any, Any]] = []

    async def make(prefix: str, rules: RuleSet | None = RETAIL) -> TestClient[Any, Any]:
        worker = stub_worker(prefix, redis_url, rules=rules)
        client = TestClient(TestServer(build_app(worker, [AudienceRoutes(worker)])))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def all_pages(api: TestClient[Any, Any], segment: str, limit: int
                    ) -> list[dict[str, Any]]:
    """GET every page of /v1/segments/{segment}/members; returns the pages' bodies."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        r = await api.get(f"/v1/segments/{segment}/members",
                          params={"cursor": cursor, "limit": str(limit)}, headers=BEARER)
        assert r.status == 200, await r.text()
        body = await r.json()
        pages.append(body)
        cursor = body["next_cursor"]
        assert len(pages) < 10_000
    return pages


def run_export(*args: str) -> Any:
    return CliRunner().invoke(segments_cli, ["export", *args], catch_exceptions=False)


# ------------------------------------------------------------------------- members


async def test_members_pages_equal_the_simulated_states_with_label_entered_at_and_why(
        redis_client: aioredis.Redis, unique: str, query_api_factory: Any) -> None:
    prefix = f"{unique}:"
    replayed = await replay_into_view(redis_client, prefix)
    api = await query_api_factory(prefix)
    checked = 0
    for seg in RETAIL.segments:
        want = replayed.members(seg.id)
        pages = await all_pages(api, seg.id, limit=25)
        rows = [m for p in pages for m in p["members"]]
        got = {m["customer_id"]: m for m in rows}
        assert set(got) == set(want), seg.id
        assert all(p["size"] == len(want) for p in pages), seg.id
        for cid, entered in want.items():
            m = got[cid]
            assert m["label"] == LABELS[seg.id]
            assert m["entered_at"] == entered, (seg.id, cid)
            assert m["why"] == replayed.why(seg.id, cid), (seg.id, cid)
        if len(want) > 128:  # beyond Redis's compact set encoding: several pages
            checked += 1
            assert len(pages) > 1, seg.id
            assert all(len(p["members"]) <= 2 * 25 for p in pages), seg.id
    assert checked >= 1, "no segment large enough to be paged"


async def test_a_scan_returns_every_member_that_stays_while_others_come_and_go(
        redis_client: aioredis.Redis, unique: str, query_api_factory: Any) -> None:
    """The SSCAN cursor is stable: members present for the whole scan all come back (once
    each, after removing the repeats a resize may cause); those who leave before their page
    never show up with stale data (their rows are dropped)."""
    prefix = f"{unique}:"
    view = RedisView(redis_client, prefix=prefix, clock=lambda: BASE_AT / 1000 + 60)
    ids = [f"c-{i:05d}" for i in range(3000)]
    await view.apply_many([record(wire_change(c, 1, segments=["buyer"])) for c in ids])
    api = await query_api_factory(prefix, rules=None)
    rng = random.Random(7)
    leaving = set(rng.sample(ids, 600))
    staying = set(ids) - leaving
    seen: list[str] = []
    gone_so_far: set[str] = set()
    cursor: str | None = "0"
    newcomer = pages = 0
    while cursor is not None:
        r = await api.get("/v1/segments/buyer/members", params={"cursor": cursor,
                                                                "limit": "100"},
                          headers=BEARER)
        body = await r.json()
        assert r.status == 200 and len(body["members"]) <= 200
        page = [m["customer_id"] for m in body["members"]]
        assert not set(page) & gone_so_far  # nobody who had left before this page
        seen.extend(page)
        cursor = body["next_cursor"]
        pages += 1
        # between pages: 60 leave, 40 new ones join (the set grows and shrinks: rehashing)
        gone = [leaving.pop() for _ in range(min(60, len(leaving)))]
        gone_so_far.update(gone)
        await view.apply_many([record(wire_change(c, 2, segments=[], previous=["buyer"]))
                               for c in gone])
        await view.apply_many([record(wire_change(f"n-{newcomer + i}", 1, segments=["buyer"]))
                               for i in range(40)])
        newcomer += 40
    assert staying <= set(seen)  # every member present for the whole scan
    assert pages >= 20  # 3,000 members, about 100 a page


async def test_members_errors_unknown_segment_bad_cursor_bad_limit_and_the_token(
        redis_client: aioredis.Redis, unique: str, query_api_factory: Any) -> None:
    prefix = f"{unique}:"
    view = RedisView(redis_client, prefix=prefix, clock=lambda: BASE_AT / 1000 + 60)
    await view.apply(record(wire_change("c-1", 1, segments=["buyer"])))
    api = await query_api_factory(prefix)
    r = await api.get("/v1/segments/nope/members", headers=BEARER)
    body = await r.json()
    assert r.status == 404 and "no segment 'nope'" in body["error"] and "vip" in body["error"]
    # in the view but not in the rules (an older version's segment): served
    r = await api.get("/v1/segments/buyer/members", headers=BEARER)
    assert r.status == 200 and [m["customer_id"] for m in (await r.json())["members"]] == ["c-1"]
    # in the rules, never entered: an empty segment
    r = await api.get("/v1/segments/vip/members", headers=BEARER)
    assert r.status == 200 and await r.json() == {"segment": "vip", "size": 0, "members": [],
                                                  "next_cursor": None}
    for query, word in (("cursor=abc", "cursor"), ("cursor=-1", "cursor"),
                        ("cursor=99999999999999999999", "cursor"), ("limit=0", "limit"),
                        ("limit=1001", "limit"), ("limit=ten", "limit")):
        r = await api.get(f"/v1/segments/buyer/members?{query}", headers=BEARER)
        assert r.status == 400 and word in (await r.json())["error"], query
    r = await api.get("/v1/segments/buyer/history?resolution=second", headers=BEARER)
    assert r.status == 400 and "resolution" in (await r.json())["error"]
    for path in ("/v1/segments/buyer/members", "/v1/segments/buyer/history",
                 "/v1/overlap"):
        for given in (None, "Bearer wrong", TOKEN):
            r = await api.get(path, headers={} if given is None else {"Authorization": given})
            assert r.status == 401, (path, given)
    # Redis down: 503 with a message, not a crash
    down = stub_worker(prefix, f"redis://127.0.0.1:{closed_port()}/0")
    client = TestClient(TestServer(build_app(down, [AudienceRoutes(down)])))
    await client.start_server()
    try:
        r = await client.get("/v1/segments/vip/members", headers=BEARER)
        assert r.status == 503 and "Redis view is unavailable" in (await r.json())["error"]
    finally:
        await client.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------- history, overlap


async def test_overlap_counts_and_jaccard_equal_the_simulated_states(
        redis_client: aioredis.Redis, unique: str, query_api_factory: Any) -> None:
    prefix = f"{unique}:"
    replayed = await replay_into_view(redis_client, prefix, customers=300, events=4000, seed=3)
    api = await query_api_factory(prefix)
    r = await api.get("/v1/overlap", headers=BEARER)
    body = await r.json()
    assert r.status == 200
    assert body["segments"] == [s.id for s in sorted(RETAIL.segments, key=lambda s: s.index)]
    members = {s: set(replayed.members(s)) for s in body["segments"]}
    nonzero = 0
    for i, a in enumerate(body["segments"]):
        assert body["sizes"][a] == len(members[a])
        for j, b in enumerate(body["segments"]):
            both, either = len(members[a] & members[b]), len(members[a] | members[b])
            assert body["both"][i][j] == both, (a, b)
            assert body["jaccard"][i][j] == (None if either == 0 else round(both / either, 6))
            nonzero += a != b and both > 0
    assert nonzero > 0, "no two segments overlap: the test checks nothing"
    r = await api.get("/v1/overlap?segments=vip,growth,vip", headers=BEARER)
    picked = await r.json()
    assert picked["segments"] == ["vip", "growth"]
    assert picked["both"][0][1] == 0  # one group: exclusive
    r = await api.get("/v1/overlap?segments=vip,nope", headers=BEARER)
    assert r.status == 400 and "no segment 'nope'" in (await r.json())["error"]
    r = await api.get("/v1/overlap?segments=Bad-Id", headers=BEARER)
    assert r.status == 400


async def test_size_history_follows_the_changes(
        redis_client: aioredis.Redis, unique: str, query_api_factory: Any) -> None:
    prefix = f"{unique}:"
    now = 1_800_000_000  # seconds; the history is read relative to the wall clock
    view = RedisView(redis_client, prefix=prefix, clock=lambda: now)
    t0 = (now - 3600) * 1000
    # 3 join in the first minute, 1 more two minutes later, then one leaves
    await view.apply_many([record(wire_change(f"c-{i}", 1, segments=["buyer"], at_ms=t0 + i))
                           for i in range(3)])
    await view.apply(record(wire_change("c-3", 1, segments=["buyer"], at_ms=t0 + 120_000)))
    await view.apply(record(wire_change("c-0", 2, segments=[], previous=["buyer"],
                                        at_ms=t0 + 180_000)))
    minute = await aud.size_history(redis_client, KeyLayout(prefix), "buyer", "minute",
                                    now=now)
    start = t0 // 1000 - (t0 // 1000) % 60
    assert minute["points"] == [[start, 3], [start + 120, 4], [start + 180, 3]]
    assert minute["size"] == 3 and minute["step"] == 60
    hour = await aud.size_history(redis_client, KeyLayout(prefix), "buyer", "hour", now=now)
    assert hour["points"] == [[start - start % 3600, 3]] and hour["step"] == 3600
    api = await query_api_factory(prefix)
    r = await api.get("/v1/segments/buyer/history", headers=BEARER)
    body = await r.json()
    assert r.status == 200 and body["points"][-1][1] == 3 and body["resolution"] == "minute"


# ------------------------------------------------------------------------- export


async def test_export_csv_and_jsonl_equal_the_simulated_states(
        redis_client: aioredis.Redis, redis_url: str, unique: str, tmp_path: Path) -> None:
    prefix = f"{unique}:"
    replayed = await replay_into_view(redis_client, prefix)
    sizes = await replayed.view.sizes()
    seg = max(sizes, key=lambda s: sizes[s])  # the largest: several SSCAN batches
    want = replayed.members(seg)
    assert len(want) > 128
    out_csv, out_jsonl = tmp_path / "m.csv", tmp_path / "m.jsonl"
    result = await asyncio.to_thread(run_export, seg, "--format", "csv", "--out",
                                     str(out_csv), "--redis-url", redis_url, "--prefix", prefix)
    assert result.exit_code == 0, result.stderr
    assert f"exported {len(want):,} members of {seg} to {out_csv} (csv)" in result.stderr
    result = await asyncio.to_thread(run_export, seg, "--format", "jsonl", "--out",
                                     str(out_jsonl), "--redis-url", redis_url, "--prefix",
                                     prefix)
    assert result.exit_code == 0, result.stderr
    lines = [orjson.loads(line) for line in out_jsonl.read_bytes().splitlines()]
    assert len(lines) == len(want)  # each member once
    assert {r["customer_id"]: r["entered_at"] for r in lines} == want
    for r in lines:
        assert r["label"] == LABELS[seg] and r["why"] == replayed.why(seg, r["customer_id"])

    text = out_csv.read_bytes().decode("utf-8")
    assert text.endswith("\r\n")
    table = list(csv.reader(io.StringIO(text)))
    header, rows = table[0], table[1:]
    terms = list(dict.fromkeys(t for r in lines for t in r["why"]))
    assert header == ["customer_id", "label", "entered_at", *terms] and terms
    assert len(rows) == len(want)
    by_id = {r["customer_id"]: r for r in lines}
    for row in rows:
        cid, label, entered, *values = row
        assert label == LABELS[seg] and entered == want[cid]
        why = by_id[cid]["why"]
        assert values == [aud._cell(why.get(t)) for t in terms]
        for t, v in zip(terms, values, strict=True):  # numbers read back as numbers
            if isinstance(why.get(t), (int, float)) and not isinstance(why.get(t), bool):
                assert float(v) == pytest.approx(why[t])

    # standard output, the same rows
    result = await asyncio.to_thread(run_export, seg, "--format", "jsonl", "--redis-url",
                                     redis_url, "--prefix", prefix, "--quiet")
    assert result.exit_code == 0 and result.stderr == ""
    assert sorted(result.stdout.splitlines()) == sorted(
        out_jsonl.read_text().splitlines())


async def test_export_reports_progress_for_large_segments(
        redis_client: aioredis.Redis, redis_url: str, unique: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"{unique}:"
    view = RedisView(redis_client, prefix=prefix, clock=lambda: BASE_AT / 1000 + 60)
    ids = [f"c-{i:05d}" for i in range(2500)]
    await view.apply_many([record(wire_change(c, 1, segments=["vip"])) for c in ids])
    out = tmp_path / "vip.csv"
    result = await asyncio.to_thread(run_export, "vip", "--out", str(out), "--redis-url",
                                     redis_url, "--prefix", prefix)
    assert result.exit_code == 0 and "exporting" not in result.stderr  # below the threshold
    monkeypatch.setattr(segments_export, "PROGRESS_FROM", 2000)
    monkeypatch.setattr(segments_export, "PROGRESS_EVERY", 0.0)
    result = await asyncio.to_thread(run_export, "vip", "--out", str(out), "--redis-url",
                                     redis_url, "--prefix", prefix)
    assert result.exit_code == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("exporting")]
    assert progress and progress[-1] == "exporting vip: 2,500 of about 2,500 members"
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert {r[0] for r in rows[1:]} == set(ids) and len(rows) == 2501
    assert rows[1][1] == "VIP" and rows[0] == ["customer_id", "label", "entered_at"]


async def test_export_exits_2_for_an_unknown_segment_or_no_redis(
        redis_client: aioredis.Redis, redis_url: str, unique: str, tmp_path: Path) -> None:
    prefix = f"{unique}:"
    out = tmp_path / "x.csv"
    result = await asyncio.to_thread(run_export, "vip", "--redis-url", redis_url, "--prefix",
                                     prefix, "--out", str(out))
    assert result.exit_code == 2 and "has no segments under the prefix" in result.stderr
    view = RedisView(redis_client, prefix=prefix, clock=lambda: BASE_AT / 1000 + 60)
    await view.apply(record(wire_change("c-1", 1, segments=["buyer", "reader"])))
    result = await asyncio.to_thread(run_export, "vipp", "--redis-url", redis_url, "--prefix",
                                     prefix, "--out", str(out))
    assert result.exit_code == 2
    assert "error: no segment 'vipp'" in result.stderr and "buyer, reader" in result.stderr
    result = await asyncio.to_thread(run_export, "vip", "--redis-url",
                                     f"redis://127.0.0.1:{closed_port()}/0", "--out", str(out))
    assert result.exit_code == 2 and "error: cannot read the Redis view" in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written
    result = await asyncio.to_thread(run_export, "buyer", "--format", "xml")
    assert result.exit_code == 2 and "xml" in result.stderr
