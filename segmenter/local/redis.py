"""A local `redis-server` on 127.0.0.1, installed from Debian's package when missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model.errors import ServiceError
from segmenter.local.common import (
    Origin,
    ServiceStatus,
    owned_pid,
    port_open,
    run_tool,
    start_daemon,
    stop_process,
    tails,
    wait_until_ready,
)
from streams.runtime.settings import Settings

SERVICE = "redis"
DEBIAN_PACKAGE = "redis-server"


@dataclass(frozen=True, slots=True)
class RedisLayout:
    """Where the local Redis keeps its files (all under <state dir>/redis)."""

    root: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> RedisLayout:
        return cls(settings.state_dir / "redis")

    @property
    def config(self) -> Path:
        return self.root / "redis.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    @property
    def stdout_log(self) -> Path:
        return self.root / "stdout.log"


def render_redis_conf(port: int, root: Path) -> str:
    """The local Redis: loopback only, an append-only file fsynced every second in the state
    folder (a restart keeps the view, losing at most the last second, which the view's
    consumer replays), logs into the state folder."""
    return "\n".join(
        [
            "# Written by `segmenter local up`; edits are overwritten.",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"port {port}",
            "daemonize no",
            # Keep the command line (and so the config path) visible: `down` checks it.
            "set-proc-title no",
            f"dir {root}",
            f"logfile {root / 'redis.log'}",
            "loglevel notice",
            'save ""',
            "appendonly yes",
            "appendfsync everysec",
            "databases 16",
            "",
        ]
    )


def redis_server_binary(install: bool = True) -> str:
    """Path of `redis-server`; installs Debian's package when missing and running as root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            SERVICE,
            f"`redis-server` not found: install Debian's `{DEBIAN_PACKAGE}` package "
            f"(sudo apt-get install {DEBIAN_PACKAGE}) or point SEGMENTER_REDIS_URL at a server",
        )
    print(f"redis: installing Debian's {DEBIAN_PACKAGE} package ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_tool(SERVICE, ["apt-get", "update", "-qq"], timeout=600, env=env)
    run_tool(
        SERVICE,
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", DEBIAN_PACKAGE],
        timeout=900,
        env=env,
    )
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError(SERVICE, f"installed {DEBIAN_PACKAGE} but `redis-server` is not on PATH")
    return found


def _server_info(url: str) -> dict[str, str] | None:
    """INFO server of the Redis at `url`, or None when it does not answer."""
    import redis  # only when needed

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        info = client.info("server")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return {str(k): str(v) for k, v in info.items()}


def status(settings: Settings) -> ServiceStatus:
    if settings.redis_external:
        info = _server_info(settings.redis_url)
        return ServiceStatus(
            SERVICE,
            Origin.EXTERNAL,
            settings.redis_url,
            running=info is not None,
            version=info.get("redis_version") if info else None,
        )
    layout = RedisLayout.for_settings(settings)
    url = settings.redis_url
    pid = owned_pid(layout.pid_file, str(layout.config))
    info = _server_info(url) if port_open("127.0.0.1", settings.redis_port) else None
    version = info.get("redis_version") if info else None
    if pid is not None:
        return ServiceStatus(
            SERVICE,
            Origin.MANAGED,
            url,
            running=True,
            pid=pid,
            version=version,
            log_file=layout.log,
        )
    if info is not None:
        return ServiceStatus(SERVICE, Origin.FOREIGN, url, running=True, version=version)
    return ServiceStatus(SERVICE, Origin.NONE, url, running=False)


def start(settings: Settings) -> ServiceStatus:
    """Start the local Redis unless it (or another Redis on the port) already runs."""
    current = status(settings)
    if settings.redis_external:
        if not current.running:
            raise ServiceError(
                SERVICE, f"the external Redis at {settings.redis_url} does not answer"
            )
        return current
    if current.running:
        return current
    if port_open("127.0.0.1", settings.redis_port):
        raise ServiceError(
            SERVICE,
            f"port {settings.redis_port} on 127.0.0.1 is taken by a program that is not "
            "Redis; choose another with --redis-port / SEGMENTER_REDIS_PORT",
        )
    binary = redis_server_binary()
    layout = RedisLayout.for_settings(settings)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(render_redis_conf(settings.redis_port, layout.root))
    for log in (layout.log, layout.stdout_log):
        log.unlink(missing_ok=True)
    process = start_daemon(
        [binary, str(layout.config)],
        pid_file=layout.pid_file,
        output=layout.stdout_log,
        cwd=layout.root,
    )
    try:
        wait_until_ready(
            SERVICE,
            ready=lambda: _server_info(settings.redis_url) is not None,
            alive=lambda: process.poll() is None,
            timeout=settings.startup_timeout,
            logs=[layout.log, layout.stdout_log],
        )
    except ServiceError:
        stop_process(process.pid, timeout=5)
        layout.pid_file.unlink(missing_ok=True)
        raise
    info = _server_info(settings.redis_url) or {}
    return ServiceStatus(
        SERVICE,
        Origin.MANAGED,
        settings.redis_url,
        running=True,
        pid=process.pid,
        version=info.get("redis_version"),
        log_file=layout.log,
        started_now=True,
    )


def stop(settings: Settings, timeout: float = 15.0) -> bool:
    """Stop the Redis this project started; True if one was stopped."""
    if settings.redis_external:
        return False
    layout = RedisLayout.for_settings(settings)
    pid = owned_pid(layout.pid_file, str(layout.config))
    if pid is None:
        return False
    stop_process(pid, timeout)
    layout.pid_file.unlink(missing_ok=True)
    return True


def log_tail(settings: Settings) -> str:
    layout = RedisLayout.for_settings(settings)
    return tails([layout.log, layout.stdout_log])
