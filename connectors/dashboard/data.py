"""What the dashboard shows, read from the Redis view (sizes, feed, counters, history) and the
worker's Query API (definitions, why, metrics), with a fallback when the Query API is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors import audience as aud
from connectors.dashboard.explain import explain, predictions
from connectors.redis_view import DEFAULT_PREFIX, KeyLayout, RedisView, minute_of

log = logging.getLogger(__name__)

DEFAULT_API_URL = "http://127.0.0.1:6066"
MAX_MINUTES = 2 * 24 * 60  # the view keeps its per-minute counters 2 days by default
NONE = "-"  # "in no segment of the group" in the transitions matrix
_REMEMBER = 32  # feed entries remembered between two polls
_SEGMENT_ID = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """How the dashboard reaches its data and who may see it."""

    prefix: str = DEFAULT_PREFIX  # the Redis view's key prefix
    api_url: str = DEFAULT_API_URL  # the worker's Query API
    token: str = ""  # bearer token: required from the browser, and sent to the Query API
    rules_path: Path | None = None  # definitions to show while the Query API is down
    api_timeout: float = 2.0  # seconds per Query API call
    definitions_ttl: float = 5.0  # seconds the Query API's definitions are cached
    feed_poll: float = 0.25  # seconds between two reads of the feed list
    feed_batch: int = 500  # newest entries read per poll (more new ones at once: a gap)
    history: int = 50  # changes shown on a customer's page
    # folder of control-group outcome reports, `<segment>.json` as `segmenter segments outcome
    # SEGMENT --json --out DIR/SEGMENT.json` writes them (shown on the segment's page)
    outcomes_dir: Path | None = None
    overlap_ttl: float = 5.0  # seconds an overlap matrix is reused (every pair's SINTERCARD)


class ApiUnavailable(Exception):
    """The Query API did not answer (down, refused, timed out, or answered an error)."""


# ------------------------------------------------------------------------- Query API


class QueryApi:
    """A small client of the worker's Query API (`GET /v1/segments`, `/v1/customers/{id}`)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str = "",
                 timeout: float = 2.0) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _get(self, path: str) -> tuple[int, Any]:
        try:
            async with self.session.get(self.url + path, headers=self.headers,
                                        timeout=self.timeout) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiUnavailable(f"{self.url} does not answer ({type(exc).__name__})") from exc
        try:
            return status, orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            raise ApiUnavailable(f"{self.url}{path}: not JSON (HTTP {status})") from exc

    async def segments(self) -> dict[str, Any]:
        status, data = await self._get("/v1/segments")
        if status != 200 or not isinstance(data, dict) or "segments" not in data:
            raise ApiUnavailable(f"/v1/segments answered HTTP {status}")
        return data

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer, or None when the worker does not know them (404)."""
        status, data = await self._get("/v1/customers/" + quote(customer_id, safe=""))
        if status == 404 and isinstance(data, dict) and "error" in data:
            return None
        if status != 200 or not isinstance(data, dict):
            raise ApiUnavailable(f"/v1/customers answered HTTP {status}")
        return data


def definitions_from_rule_file(path: Path) -> dict[str, Any]:
    """The shape of `GET /v1/segments` (without sizes) from a rule file on disk."""
    from rules.loader import format_duration, load_rules

    rule_file = load_rules(path)
    groups: dict[str, list[str]] = {}
    segments = []
    for s in rule_file.segments:
        if s.group is not None:
            groups.setdefault(s.group, []).append(s.id)
        segments.append({"id": s.id, "label": s.label, "description": s.description,
                         "color": s.color, "icon": s.icon, "group": s.group, "when": s.when_text,
                         "exit_when": s.exit_when_text,
                         "min_dwell": format_duration(s.min_dwell_ms) if s.min_dwell_ms else None,
                         "actions": dict(s.actions)})
    from streams.query import pipelines_view

    return {"name": rule_file.name, "rules_version": rule_file.content_hash, "groups": groups,
            "pipelines": pipelines_view(rule_file.pipelines), "segments": segments}


@dataclass
class Definitions:
    """The segment definitions in force: from the Query API (cached a few seconds), else the
    rule file given with `--rules`, else only the segment ids the Redis view has."""

    api: QueryApi | None
    fallback: dict[str, Any] | None
    ttl: float
    retry_after: float = 5.0  # seconds without asking a Query API that failed
    _cached: dict[str, Any] | None = None
    _cached_at: float = 0.0
    _failed_at: float | None = None
    _error: str = "no Query API configured"
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> tuple[dict[str, Any] | None, str, str | None]:
        """(definitions or None, source 'api' | 'rules-file' | 'api-stale' | 'none', the
        Query API's error or None)."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached_at < self.ttl:
                return self._cached, "api", None
            recently_failed = self._failed_at is not None and \
                now - self._failed_at < self.retry_after
            if self.api is not None and not recently_failed:
                try:
                    self._cached = await self.api.segments()
                    self._cached_at = now
                    self._failed_at = None
                    return self._cached, "api", None
                except ApiUnavailable as exc:
                    self._error = str(exc)
                    self._failed_at = time.monotonic()
            error = self._error
            if self.fallback is not None:
                return self.fallback, "rules-file", error
            if self._cached is not None:
                return self._cached, "api-stale", error
            return None, "none", error


# ------------------------------------------------------------------------- Redis reads


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def minute_starts(minutes: int, now: float) -> list[int]:
    """Epoch seconds of the last `minutes` UTC minutes, oldest first, ending with now's."""
    last = int(now // 60) * 60
    return [last - 60 * i for i in range(minutes - 1, -1, -1)]


class ViewReader:
    """Read-only queries on the Redis view (key layout: docs/redis.md)."""

    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = KeyLayout(prefix)
        self.view = RedisView(client, prefix=prefix)

    def transitions_key(self, minute: str) -> str:
        """Per-minute group transition counters (proposed addition to the view; read if there):
        hash `{g}:{from}>{to}` -> count, `-` for no segment of the group."""
        return f"{self.keys.prefix}transitions:{minute}"

    async def sizes(self) -> dict[str, int]:
        return await self.view.sizes()

    async def group_totals(self, groups: Iterable[str]) -> dict[str, int]:
        names = list(groups)
        if not names:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for g in names:
                pipe.hlen(self.keys.group(g))
            counts = await pipe.execute()
        return {g: int(n) for g, n in zip(names, counts, strict=True)}

    async def latest_rules_version(self) -> str | None:
        """The rule version of the newest change in the feed (when the Query API is down)."""
        raw = await self.client.lindex(self.keys.feed, 0)
        if raw is None:
            return None
        try:
            cid = orjson.loads(raw)["customer_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        version = await self.client.hget(self.keys.customer(cid), "rules_version")
        return None if version is None else _text(version)

    async def stats(self, minutes: int, now: float) -> tuple[list[int], list[dict[str, int]]]:
        """The per-minute counters of the last `minutes` minutes: (minute starts, counts)."""
        starts = minute_starts(minutes, now)
        async with self.client.pipeline(transaction=False) as pipe:
            for t in starts:
                pipe.hgetall(self.keys.stats(minute_of(t * 1000)))
            raw = await pipe.execute()
        return starts, [{_text(k): int(v) for k, v in h.items()} for h in raw]

    async def transition_counters(self, group: str, minutes: int, now: float
                                  ) -> Counter[tuple[str, str]] | None:
        """Summed transition counters of `group`, or None when the view keeps none."""
        starts = minute_starts(minutes, now)
        async with self.client.pipeline(transaction=False) as pipe:
            for t in starts:
                pipe.hgetall(self.transitions_key(minute_of(t * 1000)))
            raw = await pipe.execute()
        if not any(raw):
            return None
        out: Counter[tuple[str, str]] = Counter()
        head = f"{group}:"
        for h in raw:
            for k, v in h.items():
                name = _text(k)
                if name.startswith(head) and ">" in name:
                    src, dst = name[len(head):].split(">", 1)
                    out[(src or NONE, dst or NONE)] += int(v)
        return out

    async def feed_raw(self, count: int) -> list[bytes]:
        raw = await self.client.lrange(self.keys.feed, 0, count - 1)
        return [r if isinstance(r, bytes) else r.encode() for r in raw]

    async def customer(self, customer_id: str, history: int) -> dict[str, Any] | None:
        found = await self.view.customer(customer_id)
        if found is None:
            return None
        return {"seq": found.seq, "rules_version": found.rules_version,
                "updated_at": found.updated_at, "segments": found.segments,
                "groups": found.groups, "history": await self.view.history(customer_id, history)}


def transitions_from_feed(
    entries: Iterable[Mapping[str, Any]], group_of: Mapping[str, str], group: str, since_iso: str
) -> tuple[Counter[tuple[str, str]], str | None]:
    """Group moves of `group` in feed entries at or after `since_iso` (RFC 3339 UTC, compared as
    text, which orders the same). Returns the counts and the `at` of the oldest entry read."""
    out: Counter[tuple[str, str]] = Counter()
    oldest: str | None = None
    for e in entries:
        at = e.get("at")
        if not isinstance(at, str):
            continue
        oldest = at if oldest is None or at < oldest else oldest
        if at < since_iso:
            continue
        src = next((s for s in e.get("exited", ()) if group_of.get(s) == group), NONE)
        dst = next((s for s in e.get("entered", ()) if group_of.get(s) == group), NONE)
        if src != dst:
            out[(src, dst)] += 1
    return out, oldest


# ------------------------------------------------------------------------- the pages' data


class DashboardData:
    """Builds the JSON documents of the dashboard's API."""

    def __init__(self, reader: ViewReader, definitions: Definitions, api: QueryApi | None,
                 options: DashboardOptions) -> None:
        self.reader = reader
        self.definitions = definitions
        self.api = api
        self.options = options
        self._overlap_cache: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}

    async def _defs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        defs, source, error = await self.definitions.get()
        status = {"source": source, "api_ok": error is None, "api_error": error,
                  "api_url": self.options.api_url}
        return defs or {"name": None, "rules_version": None, "groups": {}, "segments": []}, status

    async def overview(self) -> dict[str, Any]:
        defs, status = await self._defs()
        sizes = await self.reader.sizes()
        segments = []
        known = set()
        for s in defs.get("segments", []):
            known.add(s["id"])
            segments.append({"id": s["id"], "label": s.get("label"), "color": s.get("color"),
                             "icon": s.get("icon"), "group": s.get("group"),
                             "size": sizes.get(s["id"], 0)})
        for sid in sorted(set(sizes) - known):  # in the view, not (or no more) in the rules
            segments.append({"id": sid, "label": None, "color": None, "icon": None,
                             "group": None, "size": sizes[sid], "undefined": True})
        groups = {g: list(ids) for g, ids in defs.get("groups", {}).items()}
        totals = await self.reader.group_totals(groups)
        version = defs.get("rules_version")
        if status["source"] != "api":
            version = await self.reader.latest_rules_version() or version
        return {"name": defs.get("name"), "rules_version": version, "status": status,
                "segments": segments,
                "groups": [{"name": g, "segments": ids, "total": totals.get(g, 0)}
                           for g, ids in groups.items()],
                "now": time.time()}

    async def stats(self, minutes: int, wanted: list[str], top: int) -> dict[str, Any]:
        minutes = max(1, min(MAX_MINUTES, minutes))
        starts, counts = await self.reader.stats(minutes, time.time())
        totals: dict[str, dict[str, int]] = defaultdict(lambda: {"entered": 0, "exited": 0})
        for minute in counts:
            for key, n in minute.items():
                seg, _, what = key.rpartition(":")
                if what in ("entered", "exited"):
                    totals[seg][what] += n
        if not wanted:
            ranked = sorted(totals, key=lambda s: (-(totals[s]["entered"] + totals[s]["exited"]),
                                                   s))
            wanted = ranked[:max(0, top)]
        series = {seg: {what: [m.get(f"{seg}:{what}", 0) for m in counts]
                        for what in ("entered", "exited")} for seg in wanted}
        return {"minutes": starts, "shown": wanted, "series": series, "totals": dict(totals)}

    async def transitions(self, group: str | None, minutes: int) -> dict[str, Any]:
        defs, status = await self._defs()
        groups: dict[str, list[str]] = {g: list(ids) for g, ids in defs.get("groups", {}).items()}
        if group is None or group not in groups:
            group = next(iter(groups), None)
        minutes = max(1, min(MAX_MINUTES, minutes))
        now = time.time()
        result: dict[str, Any] = {"group": group, "groups": list(groups), "minutes": minutes,
                                  "order": [*groups.get(group or "", []), NONE], "cells": [],
                                  "source": None, "complete": True, "status": status}
        if group is None:
            return result
        counts = await self.reader.transition_counters(group, minutes, now)
        if counts is not None:
            result["source"] = "counters"
        else:
            group_of = {s: g for g, ids in groups.items() for s in ids}
            since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                  time.gmtime(minute_starts(minutes, now)[0]))
            entries = []
            for raw in await self.reader.feed_raw(10_000):
                with contextlib.suppress(orjson.JSONDecodeError):
                    entries.append(orjson.loads(raw))
            counts, oldest = transitions_from_feed(entries, group_of, group, since)
            result["source"] = "feed"
            result["feed_entries"] = len(entries)
            result["complete"] = oldest is None or oldest <= since
            result["covered_since"] = oldest
        result["cells"] = [{"from": src, "to": dst, "count": n}
                           for (src, dst), n in sorted(counts.items())]
        return result

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        view = await self.reader.customer(customer_id, self.options.history)
        api_error: str | None = "no Query API configured"
        live: dict[str, Any] | None = None
        if self.api is not None:
            try:
                live = await self.api.customer(customer_id)
                api_error = None
            except ApiUnavailable as exc:
                api_error = str(exc)
        if view is None and live is None:
            return None
        defs, _ = await self._defs()
        by_id = {s["id"]: s for s in defs.get("segments", [])}
        segments = []
        if live is not None:
            values = {**(live.get("metrics") or {})}
            for seg in live.get("segments", []):
                why = seg.get("why") or {}
                terms = {**values, **why}
                d = by_id.get(seg["id"], {})
                when = seg.get("when", d.get("when"))
                exit_when = seg.get("exit_when", d.get("exit_when"))
                segments.append({
                    "id": seg["id"], "label": seg.get("label"), "color": seg.get("color"),
                    "icon": seg.get("icon"), "group": seg.get("group", d.get("group")),
                    "entered_at": seg.get("entered_at"), "when": when, "exit_when": exit_when,
                    "why": why, "conditions": explain(when, terms),
                    "exit_conditions": explain(exit_when, terms) if exit_when else []})
        elif view is not None:
            for sid, meta in view["segments"].items():
                d = by_id.get(sid, {})
                segments.append({
                    "id": sid, "label": meta.get("label", d.get("label")),
                    "color": meta.get("color", d.get("color")),
                    "icon": meta.get("icon", d.get("icon")), "group": d.get("group"),
                    "when": d.get("when"), "exit_when": d.get("exit_when"),
                    "why": None, "conditions": [], "exit_conditions": []})
        metrics = None if live is None else live.get("metrics")
        return {"customer_id": customer_id, "segments": segments,
                "metrics": metrics,
                # the model functions' values (P(alive), CLV, cluster, ...) among the terms the
                # worker evaluated: null without the Query API, [] when the rules use no model
                "predictions": None if live is None else predictions(metrics or {}),
                "seq": (live or view or {}).get("seq"),
                "rules_version": (live or view or {}).get("rules_version"),
                "evaluated_at": None if live is None else live.get("evaluated_at"),
                "view": None if view is None else {k: view[k] for k in
                                                   ("seq", "rules_version", "updated_at",
                                                    "groups")},
                "history": [] if view is None else view["history"],
                "status": {"api_ok": api_error is None, "api_error": api_error,
                           "api_url": self.options.api_url, "in_view": view is not None,
                           "in_api": live is not None}}

    # ------------------------------------------------------------- audiences (issue 14)

    async def known_segments(self) -> tuple[dict[str, str | None], set[str]]:
        """(segment id -> label of the definitions, in file order; every segment the
        definitions or the view know)."""
        defs, _ = await self._defs()
        labels = {s["id"]: s.get("label") for s in defs.get("segments", [])}
        return labels, set(labels) | await aud.view_segments(self.reader.client,
                                                              self.reader.keys)

    async def segment_label(self, segment: str) -> tuple[bool, str | None, set[str]]:
        """(known?, label, every known segment)."""
        labels, known = await self.known_segments()
        return segment in known, labels.get(segment), known

    async def members(self, segment: str, cursor: int, limit: int,
                      label: str | None) -> dict[str, Any]:
        return await aud.members_page(self.reader.client, self.reader.keys, segment,
                                      cursor=cursor, limit=limit, label=label)

    async def history(self, segment: str, resolution: str) -> dict[str, Any]:
        return await aud.size_history(self.reader.client, self.reader.keys, segment,
                                      resolution)

    async def overlap(self, wanted: list[str]) -> dict[str, Any]:
        """The overlap of `wanted` (all named must be known), or by default of the segments
        with members, in file order (at most audience.MAX_OVERLAP, the largest first kept)."""
        labels, known = await self.known_segments()
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise aud.AudienceError(aud.unknown_segment(unknown[0], known))
        if not wanted:
            sizes = await self.reader.sizes()
            ordered = [*labels, *sorted(known - set(labels))]
            wanted = [s for s in ordered if sizes.get(s, 0) > 0]
            if len(wanted) > aud.MAX_OVERLAP:
                keep = set(sorted(wanted, key=lambda s: -sizes[s])[:aud.MAX_OVERLAP])
                wanted = [s for s in wanted if s in keep]
        key = tuple(wanted)
        cached = self._overlap_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.options.overlap_ttl:
            return cached[1]  # every browser asks every 15 s: one read serves them all
        result = await aud.overlap(self.reader.client, self.reader.keys, wanted)
        result["labels"] = {s: labels.get(s) for s in result["segments"]}
        self._overlap_cache = {key: (time.monotonic(), result)}
        return result

    async def pipelines(self, minutes: int) -> dict[str, Any]:
        """Pipeline sizes (the view's `pipelines:sizes`) and the moves between pipelines in
        the last `minutes`, from the feed entries (which carry `pipeline` when it moved)."""
        defs, _ = await self._defs()
        defined = {p["id"]: p for p in defs.get("pipelines") or ()}
        raw = await self.reader.client.hgetall(self.reader.keys.pipeline_sizes)
        sizes = {_text(k): int(v) for k, v in raw.items()}
        minutes = max(1, min(MAX_MINUTES, minutes))
        since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                              time.gmtime(minute_starts(minutes, time.time())[0]))
        moves: Counter[tuple[str, str]] = Counter()
        oldest: str | None = None
        entries = 0
        for line in await self.reader.feed_raw(10_000):
            with contextlib.suppress(orjson.JSONDecodeError):
                e = orjson.loads(line)
                entries += 1
                at = e.get("at")
                if not isinstance(at, str):
                    continue
                oldest = at if oldest is None or at < oldest else oldest
                move = e.get("pipeline")
                if at >= since and isinstance(move, dict):
                    moves[(move.get("from") or NONE, move.get("to") or NONE)] += 1
        # the rules' pipelines in priority order (the default last), then any other the view
        # has (an older rule version's), largest first
        names = [*defined, *sorted(set(sizes) - set(defined), key=lambda p: (-sizes[p], p))]
        for src, dst in moves:
            for p in (src, dst):
                if p != NONE and p not in names:
                    names.append(p)
        return {"pipelines": [{"id": p, "label": defined.get(p, {}).get("label"),
                               "default": bool(defined.get(p, {}).get("default")),
                               "size": sizes.get(p, 0)} for p in names],
                "order": [*names, NONE], "minutes": minutes,
                "cells": [{"from": a, "to": b, "count": n} for (a, b), n in sorted(moves.items())],
                "feed_entries": entries, "complete": oldest is None or oldest <= since,
                "covered_since": oldest}

    def outcome_segments(self) -> list[str]:
        """The segments with a report in `outcomes_dir`, sorted."""
        folder = self.options.outcomes_dir
        if folder is None:
            return []
        try:
            return sorted(p.stem for p in folder.glob("*.json")
                          if _SEGMENT_ID.fullmatch(p.stem))
        except OSError:
            return []

    def outcome(self, segment: str) -> dict[str, Any] | None:
        """The segment's outcome report from `outcomes_dir` (None: no folder, no report, or
        not a report), with the file's modification time as `report_written_at`."""
        folder = self.options.outcomes_dir
        if folder is None or not _SEGMENT_ID.fullmatch(segment):
            return None
        path = folder / f"{segment}.json"
        try:
            report = orjson.loads(path.read_bytes())
            written = path.stat().st_mtime
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(report, dict) or report.get("segment") != segment or \
                not isinstance(report.get("treated"), dict):
            return None
        return {**report, "report_written_at": time.strftime(
            "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(written))}

    async def rules(self) -> dict[str, Any]:
        defs, status = await self._defs()
        sizes = await self.reader.sizes()
        segments = [{**s, "size": sizes.get(s["id"], 0)} for s in defs.get("segments", [])]
        return {"name": defs.get("name"), "rules_version": defs.get("rules_version"),
                "groups": defs.get("groups", {}), "segments": segments, "status": status}


# ------------------------------------------------------------------------- live feed


class FeedHub:
    """Polls the view's `feed` list and hands each subscriber the entries that are new since
    the last poll, as one JSON array (raw bytes, oldest first) per poll. One poller for all
    subscribers; it runs only while someone listens. A slow subscriber loses batches (counted
    in a `gap` notice) rather than slowing the others."""

    def __init__(self, reader: ViewReader, poll: float = 0.25, batch: int = 500,
                 queue_size: int = 64) -> None:
        self.reader = reader
        self.poll = poll
        self.batch = batch
        self.queue_size = queue_size
        self.subscribers: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task[None] | None = None
        self._seen: set[bytes] = set()
        self._primed = False

    def subscribe(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self.subscribers.add(queue)
        if self._task is None or self._task.done():
            self._primed = False
            self._task = asyncio.create_task(self._run(), name="dashboard-feed-poller")
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes]) -> None:
        self.subscribers.discard(queue)

    async def close(self) -> None:
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _broadcast(self, message: bytes) -> None:
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # a slow reader: it is told it missed some
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(b'{"gap":true}')

    async def poll_once(self) -> list[bytes]:
        """Read the feed; returns (and remembers) the entries new since the last call, oldest
        first. The first call only remembers where the feed is. A `gap` marker (b"") comes
        first when more changes arrived than one read holds."""
        raw = await self.reader.feed_raw(min(self.batch, 2 * _REMEMBER))
        if len(raw) < self.batch and (not self._primed or not self._seen.intersection(raw)):
            raw = await self.reader.feed_raw(self.batch)  # many new ones: read a full batch
        seen, self._seen = self._seen, set(raw[:_REMEMBER])
        if not self._primed:
            self._primed = True
            return []
        new: list[bytes] = []
        for entry in raw:
            if entry in seen:  # several, in case an erasure removed the newest one seen
                break
            new.append(entry)
        gap = bool(seen) and len(new) == len(raw) == self.batch
        new.reverse()
        return [b"", *new] if gap else new

    async def _run(self) -> None:
        failing = False
        while self.subscribers:
            try:
                new = await self.poll_once()
                if failing:
                    failing = False
                    self._broadcast(b'{"redis":"ok"}')
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("cannot read the feed from Redis: %s", exc)
                    self._broadcast(b'{"redis":"unavailable"}')
                failing = True
                await asyncio.sleep(1.0)
                continue
            if new and new[0] == b"":
                self._broadcast(b'{"gap":true}')
                new = new[1:]
            if new:
                self._broadcast(b'{"changes":[' + b",".join(new) + b"]}")
            await asyncio.sleep(self.poll)


__all__ = ["ApiUnavailable", "DashboardData", "DashboardOptions", "Definitions", "FeedHub",
           "QueryApi", "ViewReader", "definitions_from_rule_file", "transitions_from_feed"]
