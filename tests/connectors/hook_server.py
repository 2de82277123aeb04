"""A real HTTP(S) webhook receiver on 127.0.0.1 (ephemeral port) for the webhook tests: it
records every request, checks signatures, and per path can fail N times, fail always or be
slow."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from connectors.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature


@dataclass
class Behaviour:
    fail_first: int = 0  # the first N requests of each delivery id fail
    fail_if: Callable[[bytes], bool] | None = None  # ... only the bodies this says yes to
    fail_status: int = 503
    always: int | None = None  # answer every request with this status
    delay: float = 0.0  # seconds before answering
    retry_after: str | None = None


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    signature_ok: bool
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict[str, object]:
        value = orjson.loads(self.body)
        assert isinstance(value, dict)
        return value


class HookServer:
    def __init__(self, secret: bytes, ssl_context: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.ssl_context = ssl_context
        self.behaviour: dict[str, Behaviour] = {}
        self.hits: list[Hit] = []
        self._seen: Counter[tuple[str, str]] = Counter()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.arrived = asyncio.Event()

    def url(self, path: str) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def ok_hits(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path and 200 <= h.status < 300]

    async def start(self) -> HookServer:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        ok = verify_signature(self.secret, body, request.headers.get(SIGNATURE_HEADER))
        rule = self.behaviour.get(path, Behaviour())
        if rule.delay:
            await asyncio.sleep(rule.delay)
        key = (path, request.headers.get(DELIVERY_HEADER, ""))
        self._seen[key] += 1
        if not ok:
            status = 401
        elif rule.always is not None:
            status = rule.always
        elif self._seen[key] <= rule.fail_first and (rule.fail_if is None or rule.fail_if(body)):
            status = rule.fail_status
        else:
            status = 200
        self.hits.append(Hit(path, dict(request.headers), body, status, ok))
        self.arrived.set()
        headers = {"Retry-After": rule.retry_after} if rule.retry_after else None
        return web.Response(status=status, text="ok" if status < 300 else "no",
                            headers=headers)
