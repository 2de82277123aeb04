"""Local services for development, tests and the demo: one Kafka broker and one Redis.

`up` starts what is missing (reusing whatever already runs), `down` stops only what this
project started, `status` tells what runs where. With SEGMENTER_KAFKA_BOOTSTRAP or
SEGMENTER_REDIS_URL set, that service is external and nothing local is started for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from model.errors import ServiceError
from segmenter.local import kafka, redis
from segmenter.local.common import Origin, ServiceStatus
from streams.runtime.settings import Settings

__all__ = [
    "SERVICES",
    "Origin",
    "ServiceStatus",
    "client_env",
    "down",
    "running_services",
    "status",
    "up",
]


class _Service(Protocol):
    def start(self, settings: Settings) -> ServiceStatus: ...
    def stop(self, settings: Settings, timeout: float = ...) -> bool: ...
    def status(self, settings: Settings) -> ServiceStatus: ...


SERVICES: tuple[str, ...] = ("kafka", "redis")
_MODULES: dict[str, _Service] = {"kafka": kafka, "redis": redis}


def _check(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in _MODULES]
    if unknown:
        raise ServiceError(", ".join(unknown), f"unknown service; choose from {SERVICES}")


def up(settings: Settings, services: Sequence[str] = SERVICES) -> list[ServiceStatus]:
    """Start each service unless it already runs. If one fails, those this call started are
    stopped again and the ServiceError (with the service's log tail) propagates."""
    _check(services)
    results: list[ServiceStatus] = []
    try:
        for name in services:
            results.append(_MODULES[name].start(settings))
    except BaseException:
        for done in results:
            if done.started_now:
                _MODULES[done.name].stop(settings)
        raise
    return results


def down(settings: Settings, services: Sequence[str] = SERVICES) -> list[str]:
    """Stop the services this project started (never foreign or external ones)."""
    _check(services)
    return [name for name in services if _MODULES[name].stop(settings)]


def status(settings: Settings, services: Sequence[str] = SERVICES) -> list[ServiceStatus]:
    _check(services)
    return [_MODULES[name].status(settings) for name in services]


def client_env(settings: Settings) -> dict[str, str]:
    """Environment variables that point a Segmenter process (or the tests) at the services."""
    return {
        "SEGMENTER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SEGMENTER_REDIS_URL": settings.redis_url,
    }


@contextmanager
def running_services(
    settings: Settings, services: Sequence[str] = SERVICES
) -> Iterator[list[ServiceStatus]]:
    """`up` on entry; on exit (also on Ctrl-C) stop exactly the services that `up` started."""
    started = up(settings, services)
    try:
        yield started
    finally:
        down(settings, [s.name for s in started if s.started_now])
