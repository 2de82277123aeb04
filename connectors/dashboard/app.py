"""The dashboard's aiohttp application: the page, its static files, its JSON API and the live
feed (Server-Sent Events), behind the same bearer token as the Query API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from connectors import audience as aud
from connectors.dashboard.data import (
    DashboardData,
    DashboardOptions,
    Definitions,
    FeedHub,
    QueryApi,
    ViewReader,
    definitions_from_rule_file,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "segmenter_dashboard"
OPEN_PATHS = frozenset({"/login", "/healthz"})
FEED_SNAPSHOT = 200  # changes sent when a live-feed client connects
HEARTBEAT = 15.0  # seconds between SSE comments on a quiet feed

DATA: web.AppKey[DashboardData] = web.AppKey("data", DashboardData)
HUB: web.AppKey[FeedHub] = web.AppKey("hub", FeedHub)
OPTIONS: web.AppKey[DashboardOptions] = web.AppKey("options", DashboardOptions)
STREAMS = web.AppKey("streams", set[asyncio.Task[Any]])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------- auth


def session_value(token: str) -> str:
    """The cookie value proving the browser gave the token once (not the token itself)."""
    return hmac.new(token.encode(), b"segmenter-dashboard-session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and _same(header[7:].strip(), token):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and _same(cookie, session_value(token))


def _set_session(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict",
                        path="/", secure=request.secure)


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Segmenter dashboard: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;background:#f4f5f7;display:grid;place-items:center;
height:100vh;margin:0}}form{{background:#fff;padding:2em;border-radius:8px;
box-shadow:0 1px 4px #0002;min-width:20em}}input{{width:100%;padding:.5em;margin:.5em 0 1em;
box-sizing:border-box}}button{{padding:.5em 1.5em}}.err{{color:#b00020}}</style></head>
<body><form method="post" action="/login"><h2>Segmenter dashboard</h2>
<label for="token">Access token (SEGMENTER_API_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<input type="hidden" name="next" value="{next}">{error}
<button type="submit">Sign in</button></form></body></html>"""


def _login_page(next_path: str, error: str = "", status: int = 401) -> web.Response:
    body = LOGIN_PAGE.format(next=html.escape(next_path, quote=True),
                             error=f'<p class="err">{html.escape(error)}</p>' if error else "")
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def auth_middleware(token: str) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token or request.path in OPEN_PATHS:
            return await handler(request)
        given = request.query.get("token")
        if given is not None and request.method == "GET":
            # the link with ?token= is used once: set the cookie, drop the token from the URL
            if not _same(given, token):
                return _login_page(request.path, "Wrong token.")
            rest = [(k, v) for k, v in request.query.items() if k != "token"]
            target = request.path + (f"?{urlencode(rest)}" if rest else "")
            response = web.HTTPSeeOther(target)
            _set_session(response, request, token)
            raise response
        if _authorized(request, token):
            return await handler(request)
        if request.path.startswith("/api/"):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="segmenter"'})
        return _login_page(request.path_qs if request.method == "GET" else "/")

    return middleware


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    options = request.app[OPTIONS]
    if request.method == "GET":
        return _login_page(_safe_next(request.query.get("next")), status=200)
    form = await request.post()
    given = str(form.get("token", ""))
    target = _safe_next(str(form.get("next", "/")))
    if not options.token:
        raise web.HTTPSeeOther(target)
    if not _same(given, options.token):
        return _login_page(target, "Wrong token.")
    response = web.HTTPSeeOther(target)
    _set_session(response, request, options.token)
    raise response


# ------------------------------------------------------------------------- handlers


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query.get(name, default))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from exc
    return max(low, min(high, value))


async def overview(request: web.Request) -> web.StreamResponse:
    return json_response(await request.app[DATA].overview())


async def stats(request: web.Request) -> web.StreamResponse:
    minutes = _int(request, "minutes", 180, 1, 2880)
    top = _int(request, "top", 8, 0, 100)
    wanted = [s for s in request.query.get("segments", "").split(",") if s][:100]
    return json_response(await request.app[DATA].stats(minutes, wanted, top))


async def transitions(request: web.Request) -> web.StreamResponse:
    minutes = _int(request, "minutes", 60, 1, 2880)
    return json_response(await request.app[DATA].transitions(request.query.get("group"),
                                                             minutes))


async def rules(request: web.Request) -> web.StreamResponse:
    return json_response(await request.app[DATA].rules())


async def customer(request: web.Request) -> web.StreamResponse:
    customer_id = request.match_info["customer_id"]
    if not customer_id or len(customer_id) > 256:
        raise web.HTTPBadRequest(text="bad customer id")
    found = await request.app[DATA].customer(customer_id)
    if found is None:
        return json_response({"error": f"no customer {customer_id!r}",
                              "customer_id": customer_id}, status=404)
    return json_response(found)


async def _segment(request: web.Request) -> tuple[str, str | None]:
    """The {segment_id} of the path and its label; 404 for a segment nobody knows."""
    segment = request.match_info["segment_id"]
    found, label, known = await request.app[DATA].segment_label(segment)
    if not found:
        raise web.HTTPNotFound(text=orjson.dumps({"error": aud.unknown_segment(
            segment, known)}).decode(), content_type="application/json")
    return segment, label


def _bad_request(exc: aud.AudienceError) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": str(exc)}).decode(),
                              content_type="application/json")


async def segment_members(request: web.Request) -> web.StreamResponse:
    segment, label = await _segment(request)
    try:
        cursor = aud.parse_cursor(request.query.get("cursor"))
        limit = aud.parse_limit(request.query.get("limit"))
    except aud.AudienceError as exc:
        raise _bad_request(exc) from exc
    return json_response(await request.app[DATA].members(segment, cursor, limit, label))


async def segment_export(request: web.Request) -> web.StreamResponse:
    """The whole segment as a CSV (or `?format=jsonl`) download, as `segments export` writes."""
    segment, label = await _segment(request)
    fmt = request.query.get("format", "csv")
    if fmt not in aud.EXPORT_FORMATS:
        raise _bad_request(aud.AudienceError("format must be csv or jsonl"))
    data = request.app[DATA]
    with tempfile.TemporaryFile() as spool:
        await aud.export_members(data.reader.client, data.reader.keys, segment, fmt, spool,
                                 label=label)
        spool.seek(0)
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv"
            else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="{segment}-members.{fmt}"',
            "Cache-Control": "no-store", **SECURITY_HEADERS})
        await response.prepare(request)
        while chunk := spool.read(1 << 16):
            await response.write(chunk)
        await response.write_eof()
    return response


async def segment_history(request: web.Request) -> web.StreamResponse:
    segment, _ = await _segment(request)
    try:
        resolution = aud.parse_resolution(request.query.get("resolution"))
    except aud.AudienceError as exc:
        raise _bad_request(exc) from exc
    return json_response(await request.app[DATA].history(segment, resolution))


async def segment_outcome(request: web.Request) -> web.StreamResponse:
    """The segment's control-group outcome report (`--outcomes DIR`), or 404 saying how to
    make one."""
    segment = request.match_info["segment_id"]
    found = request.app[DATA].outcome(segment)
    if found is None:
        where = request.app[OPTIONS].outcomes_dir
        hint = "the dashboard was started without --outcomes DIR" if where is None else \
            f"write one with `segmenter segments outcome {segment} --rules FILE --events LOG " \
            f"--json --out {where / (segment + '.json')}`"
        return json_response({"error": f"no outcome report for {segment!r}: {hint}"},
                             status=404)
    return json_response(found)


async def outcomes(request: web.Request) -> web.StreamResponse:
    return json_response({"segments": request.app[DATA].outcome_segments()})


async def overlap(request: web.Request) -> web.StreamResponse:
    try:
        wanted = aud.parse_segments(request.query.get("segments"))
        return json_response(await request.app[DATA].overlap(wanted))
    except aud.AudienceError as exc:
        raise _bad_request(exc) from exc


async def pipelines(request: web.Request) -> web.StreamResponse:
    minutes = _int(request, "minutes", 60, 1, 2880)
    return json_response(await request.app[DATA].pipelines(minutes))


async def feed(request: web.Request) -> web.StreamResponse:
    limit = _int(request, "limit", FEED_SNAPSHOT, 1, 1000)
    raw = await request.app[DATA].reader.feed_raw(limit)
    raw.reverse()
    return web.Response(body=b'{"changes":[' + b",".join(raw) + b"]}",
                        content_type="application/json", headers={"Cache-Control": "no-store"})


async def feed_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: first the latest changes (`snapshot`), then every poll's new ones
    (`changes`), both as {"changes": [...]} oldest first; `status` events tell of a gap or of
    Redis going away and coming back."""
    hub = request.app[HUB]
    task = asyncio.current_task()
    streams = request.app[STREAMS]
    if task is not None:
        streams.add(task)
    queue = hub.subscribe()
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no", **SECURITY_HEADERS})
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        try:
            raw = await hub.reader.feed_raw(FEED_SNAPSHOT)
            raw.reverse()
            await response.write(b"event: snapshot\ndata: {\"changes\":[" + b",".join(raw)
                                 + b"]}\n\n")
        except (RedisError, OSError):
            await response.write(b'event: status\ndata: {"redis":"unavailable"}\n\n')
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), HEARTBEAT)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            kind = b"changes" if message.startswith(b'{"changes"') else b"status"
            await response.write(b"event: " + kind + b"\ndata: " + message + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(queue)
        if task is not None:
            streams.discard(task)
    return response


@web.middleware
async def service_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (RedisError, OSError) as exc:
        if not request.path.startswith("/api/"):
            raise
        log.warning("redis error on %s: %s", request.path, exc)
        return json_response({"error": f"the Redis view is unavailable: {exc}"}, status=503)


# ------------------------------------------------------------------------- the application


def create_dashboard_app(
    options: DashboardOptions,
    redis: aioredis.Redis,
    *,
    session: aiohttp.ClientSession | None = None,
) -> web.Application:
    """The dashboard over `redis` (the view under `options.prefix`) and the Query API at
    `options.api_url`. `session` is the HTTP client for the Query API (one is made and closed
    with the app when not given). The Redis client stays the caller's to close."""
    app = web.Application(middlewares=[security_headers, auth_middleware(options.token),
                                       service_errors])
    reader = ViewReader(redis, options.prefix)
    fallback = definitions_from_rule_file(options.rules_path) if options.rules_path else None
    app[OPTIONS] = options
    app[STREAMS] = set()
    app[HUB] = FeedHub(reader, options.feed_poll, options.feed_batch)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own = session is None
        client = session or aiohttp.ClientSession()
        api = QueryApi(client, options.api_url, options.token, options.api_timeout) \
            if options.api_url else None
        app[DATA] = DashboardData(reader, Definitions(api, fallback, options.definitions_ttl),
                                  api, options)
        yield
        await app[HUB].close()
        if own:
            await client.close()

    async def stop_streams(app: web.Application) -> None:
        tasks: set[asyncio.Task[Any]] = app[STREAMS]
        for task in tuple(tasks):
            task.cancel()
        await app[HUB].close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_streams)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/login", login)
    app.router.add_get("/api/overview", overview)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/transitions", transitions)
    app.router.add_get("/api/rules", rules)
    app.router.add_get("/api/feed", feed)
    app.router.add_get("/api/feed/stream", feed_stream)
    app.router.add_get("/api/customers/{customer_id}", customer)
    app.router.add_get("/api/segments/{segment_id}/members", segment_members)
    app.router.add_get("/api/segments/{segment_id}/export", segment_export)
    app.router.add_get("/api/segments/{segment_id}/history", segment_history)
    app.router.add_get("/api/segments/{segment_id}/outcome", segment_outcome)
    app.router.add_get("/api/outcomes", outcomes)
    app.router.add_get("/api/overlap", overlap)
    app.router.add_get("/api/pipelines", pipelines)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app


async def serve(app: web.Application, host: str, port: int, *,
                header_timeout: float = 10.0) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (0: any free port); returns the runner and the bound port.
    `header_timeout`: seconds a connection may stay without a complete request (slow or idle
    clients are cut; SEGMENTER_WEB_HEADER_TIMEOUT)."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                           keepalive_timeout=header_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = site._server
    if server is not None:
        with contextlib.suppress(AttributeError, IndexError):
            bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, bound


__all__ = ["create_dashboard_app", "serve", "session_value"]
