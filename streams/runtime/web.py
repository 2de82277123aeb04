"""The worker's HTTP server (aiohttp): Query API, health, readiness, metrics.

- `GET /v1/customers/{id}`: answered by the worker that owns the customer's partition; another
  worker forwards the request to the owner (found on the members topic) and relays its answer;
- `GET /v1/segments`: the definitions in force with sizes (all workers' from the Redis view
  when it is there, else this worker's);
- `GET /healthz`, `GET /readyz` (restore progress included), `GET /metrics`;
- routes of `WebExtension`s given by the layer that starts the worker: `segmenter worker` adds
  the audience routes (`/v1/segments/{id}/members`, `/v1/segments/{id}/history`,
  `/v1/overlap`, read from the Redis view by connectors.audience_web). This package never
  imports connectors (import-linter's layers): the extension comes in from above.
Every endpoint but `/healthz` and `/metrics` requires the bearer token when one is set, except
that `/readyz` without it still answers 200 or 503 with `{"ready": ...}` only (for probes).
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.query import customer_view, segments_view
from streams.runtime.records import partition_for
from streams.runtime.worker import Worker

log = logging.getLogger(__name__)
FORWARDED = "X-Segmenter-Forwarded"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebExtension(Protocol):
    """More GET routes for the worker's web server, behind the same bearer token."""

    def routes(self) -> Sequence[tuple[str, Handler]]:
        """(path, handler) pairs, e.g. ("/v1/segments/{segment_id}/members", handler)."""
        ...

    async def close(self) -> None:
        """Release what the routes hold (clients); called when the server stops."""
        ...


def build_app(worker: Worker, extensions: Sequence[WebExtension] = ()) -> web.Application:
    s = worker.settings
    token = s.api_token.encode()
    redis: list[Any] = []  # one pooled client, created on first use

    def authorized(request: web.Request) -> bool:
        if not token:
            return True
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, b"Bearer " + token)

    def unauthorized() -> web.Response:
        return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="segmenter"'})

    async def customer(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        cid = request.match_info["customer_id"]
        rb = worker.rulebook
        if rb is None:
            return web.json_response({"error": "no rules loaded yet"}, status=503)
        p = partition_for(cid.encode(), s.partitions)
        task = worker.tasks.get(p)
        if task is not None:
            st = task.store.get(cid)
            if st is None:
                return web.json_response({"error": f"no customer {cid!r}"}, status=404)
            now = max(task.now(_wall_ms()), st.last_eval or 0)
            return web.json_response(customer_view(rb.rules, st, now))
        if p in worker.starting:
            return web.json_response({"error": f"partition {p} is being restored here; "
                                      "try again shortly"}, status=503,
                                     headers={"Retry-After": "1"})
        owner = worker.members.owner(p)
        if owner is None or owner.worker_id == s.worker_id or not owner.url \
                or request.headers.get(FORWARDED):
            return web.json_response({"error": f"no worker owns partition {p} right now "
                                      "(rebalance?); try again shortly"}, status=503,
                                     headers={"Retry-After": "1"})
        return await _forward(request, f"{owner.url}/v1/customers/{cid}", owner.worker_id)

    async def segments(request: web.Request) -> web.Response:
        if not authorized(request):
            return unauthorized()
        rb = worker.rulebook
        if rb is None:
            return web.json_response({"error": "no rules loaded yet"}, status=503)
        if not redis:
            import redis.asyncio as aioredis

            redis.append(aioredis.from_url(s.redis_url, socket_timeout=0.5,
                                           socket_connect_timeout=0.5))
        sizes, scope = await _global_sizes(redis[0], s.redis_prefix)
        if sizes is None:
            sizes, scope = _local_sizes(worker), "worker"
        return web.json_response(segments_view(rb.rules, sizes, scope))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker_id": s.worker_id})

    async def readyz(request: web.Request) -> web.Response:
        status = 200 if worker.ready else 503
        if not authorized(request):  # probes carry no token: the verdict, no details
            return web.json_response({"ready": worker.ready}, status=status)
        rb = worker.rulebook
        body = {"ready": worker.ready, "worker_id": s.worker_id,
                "rules_version": rb.rules.version if rb is not None else None,
                "partitions": sorted(worker.assigned or ()),
                "restoring": {str(p): {"read": done, "total": total}
                              for p, (done, total) in sorted(worker.progress.items())}}
        return web.json_response(body, status=status)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(worker.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def close_redis(app: web.Application) -> None:
        for client in redis:
            await client.aclose()

    app = web.Application()
    app.router.add_get("/v1/customers/{customer_id}", customer)
    app.router.add_get("/v1/segments", segments)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    for extension in extensions:
        for path, handler in extension.routes():
            app.router.add_get(path, _guarded(handler, authorized, unauthorized))
    app.on_cleanup.append(close_redis)

    async def close_extensions(app: web.Application) -> None:
        for extension in extensions:
            await extension.close()

    app.on_cleanup.append(close_extensions)
    return app


def _guarded(handler: Handler, authorized: Callable[[web.Request], bool],
             unauthorized: Callable[[], web.Response]) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return unauthorized()
        return await handler(request)

    return guarded


async def start_web(worker: Worker, extensions: Sequence[WebExtension] = ()
                    ) -> web.AppRunner | None:
    """Serve the worker's pages on SEGMENTER_WEB_BIND:SEGMENTER_WEB_PORT (off when 0)."""
    s = worker.settings
    if not s.web_enabled:
        return None
    # a connection idle or without complete headers for this long is closed
    runner = web.AppRunner(build_app(worker, extensions), access_log=None,
                           keepalive_timeout=s.web_header_timeout)
    await runner.setup()
    await web.TCPSite(runner, s.web_bind, s.web_port).start()
    host = socket.gethostname() if s.web_bind in ("0.0.0.0", "::") else s.web_bind
    worker.url = f"http://{host}:{s.web_port}"
    log.info("web server on http://%s:%d", s.web_bind, s.web_port)
    return runner


async def serve(worker: Worker, extensions: Sequence[WebExtension] = ()) -> None:
    """Run `worker` with its web server (plus `extensions`' routes) until SIGTERM or SIGINT
    (then stop it cleanly)."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    runner = await start_web(worker, extensions)
    try:
        await worker.run()
    finally:
        if runner is not None:
            await runner.cleanup()


async def _forward(request: web.Request, url: str, owner: str) -> web.Response:
    headers = {FORWARDED: "1"}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(url, headers=headers) as r:
            body = await r.read()
            return web.Response(body=body, status=r.status,
                                content_type=r.content_type,
                                headers={"X-Segmenter-Served-By": owner})
    except (aiohttp.ClientError, TimeoutError) as exc:
        return web.json_response({"error": f"the owner ({owner}) did not answer: {exc}"},
                                 status=502)


def _wall_ms() -> int:
    import time

    return int(time.time() * 1000)


async def _global_sizes(client: Any, prefix: str) -> tuple[dict[str, int] | None, str]:
    """Segment sizes from the Redis view (all workers), if it is there."""
    try:
        raw = await client.hgetall(f"{prefix}segments:sizes")
    except Exception:
        return None, "worker"
    if not raw:
        return None, "worker"
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}, "all"


def _local_sizes(worker: Worker) -> dict[str, int]:
    out: dict[str, int] = {}
    for task in worker.tasks.values():
        for sid, n in task.sizes.items():
            out[sid] = out.get(sid, 0) + n
    return out
