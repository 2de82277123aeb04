"""The audience routes of the worker's Query API, read from the Redis view (connectors.audience):

- `GET /v1/segments/{id}/members?cursor=C&limit=N`: a page of members (SSCAN cursor);
- `GET /v1/segments/{id}/history?resolution=minute|hour`: the segment's size over time;
- `GET /v1/overlap?segments=a,b,c`: pairwise counts and Jaccard index.

`segmenter worker` hands `AudienceRoutes(worker)` to `streams.runtime.web.serve`, which puts the
routes behind the same bearer token as the other /v1 endpoints (streams/ never imports
connectors: the routes come in from the CLI). A segment neither the rules in force nor the view
knows is a 404; a bad cursor, limit, resolution or segment list a 400; Redis down a 503. Logs
carry no customer ids.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from connectors import audience as aud
from connectors.redis_view import KeyLayout
from streams.runtime.worker import Worker

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Answer = Callable[[aioredis.Redis, KeyLayout, dict[str, str | None], set[str]],
                  Awaitable[dict[str, Any]]]


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


class AudienceRoutes:
    """The routes above for one worker (its settings: Redis URL and the view's prefix; its
    rules in force: the segments that exist and their labels)."""

    def __init__(self, worker: Worker, client: aioredis.Redis | None = None) -> None:
        self.worker = worker
        self.keys = KeyLayout(worker.settings.redis_prefix)
        self._client = client
        self._own = client is None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.from_url(self.worker.settings.redis_url,
                                             socket_timeout=10.0, socket_connect_timeout=2.0)
        return self._client

    def routes(self) -> Sequence[tuple[str, Handler]]:
        return [("/v1/segments/{segment_id}/members", self.members),
                ("/v1/segments/{segment_id}/history", self.history),
                ("/v1/overlap", self.overlap)]

    async def close(self) -> None:
        if self._own and self._client is not None:
            await self._client.aclose()
            self._client = None

    def labels(self) -> dict[str, str | None]:
        """Segment id -> label of the rules in force, in file order ({} before rules load)."""
        rb = self.worker.rulebook
        if rb is None:
            return {}
        return {seg.id: seg.defn.label
                for seg in sorted(rb.rules.segments, key=lambda s: s.index)}

    async def _answer(self, request: web.Request, answer: Answer) -> web.Response:
        labels = self.labels()
        try:
            known = set(labels) | await aud.view_segments(self.client, self.keys)
            segment = request.match_info.get("segment_id")
            if segment is not None and segment not in known:
                return json({"error": aud.unknown_segment(segment, known)}, status=404)
            return json(await answer(self.client, self.keys, labels, known))
        except aud.AudienceError as exc:
            return json({"error": str(exc)}, status=400)
        except (RedisError, OSError) as exc:
            log.warning("the Redis view is unavailable for %s: %s", request.path.split("/")[2],
                        type(exc).__name__)
            return json({"error": f"the Redis view is unavailable: {exc}"}, status=503)

    async def members(self, request: web.Request) -> web.Response:
        segment, q = request.match_info["segment_id"], request.query

        async def answer(client: aioredis.Redis, keys: KeyLayout,
                         labels: dict[str, str | None], known: set[str]) -> dict[str, Any]:
            cursor, limit = aud.parse_cursor(q.get("cursor")), aud.parse_limit(q.get("limit"))
            return await aud.members_page(client, keys, segment, cursor=cursor, limit=limit,
                                          label=labels.get(segment))
        return await self._answer(request, answer)

    async def history(self, request: web.Request) -> web.Response:
        segment, q = request.match_info["segment_id"], request.query

        async def answer(client: aioredis.Redis, keys: KeyLayout,
                         labels: dict[str, str | None], known: set[str]) -> dict[str, Any]:
            return await aud.size_history(client, keys, segment,
                                          aud.parse_resolution(q.get("resolution")))
        return await self._answer(request, answer)

    async def overlap(self, request: web.Request) -> web.Response:
        async def answer(client: aioredis.Redis, keys: KeyLayout,
                         labels: dict[str, str | None], known: set[str]) -> dict[str, Any]:
            wanted = aud.parse_segments(request.query.get("segments"))
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise aud.AudienceError(aud.unknown_segment(unknown[0], known))
            segments = wanted or [*labels, *sorted(known - set(labels))]
            if len(segments) > aud.MAX_OVERLAP:
                raise aud.AudienceError(f"{len(segments)} segments: name at most "
                                        f"{aud.MAX_OVERLAP} with ?segments=a,b,...")
            return await aud.overlap(client, keys, segments)
        return await self._answer(request, answer)


__all__ = ["AudienceRoutes"]
