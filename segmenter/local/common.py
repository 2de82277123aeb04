"""Process plumbing shared by the local Kafka and Redis services: pid files, ports, log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from model.errors import ServiceError


class Origin(Enum):
    """Who runs a service, which decides whether `segmenter local down` may stop it."""

    MANAGED = "started by segmenter"  # our pid file, our config: ours to stop
    FOREIGN = "already running, not started by segmenter"  # answers on the port; left alone
    EXTERNAL = "external, set in the environment"  # SEGMENTER_KAFKA_BOOTSTRAP / _REDIS_URL
    NONE = "not running"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What `up` and `status` report about one service."""

    name: str  # "kafka" or "redis"
    origin: Origin
    address: str  # host:port or URL clients use
    running: bool
    pid: int | None = None
    version: str | None = None
    log_file: Path | None = None
    started_now: bool = False  # True when this very call started it

    def describe(self) -> str:
        version = f" {self.version}" if self.version else ""
        if not self.running:
            state = "not running" if self.origin is not Origin.EXTERNAL else "UNREACHABLE"
            text = f"{self.name}{version}: {state} ({self.address})"
        else:
            how = "started" if self.started_now else self.origin.value
            pid = f", pid {self.pid}" if self.pid else ""
            text = f"{self.name}{version}: running on {self.address} ({how}{pid})"
        if self.log_file is not None and self.origin is Origin.MANAGED:
            text += f"\n  log: {self.log_file}"
        return text


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie (reaping it first if it is our own child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def owned_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and its command line contains `marker`.

    A stale pid file (dead process, or a recycled pid running something else) is removed.
    """
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return None
    if process_alive(pid) and any(marker in arg for arg in process_cmdline(pid)):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def tails(paths: Sequence[Path], lines: int = 40) -> str:
    parts = []
    for path in paths:
        text = tail(path, lines)
        if text:
            parts.append(f"[{path}]\n{text}")
    return "\n".join(parts) or "(the log is empty)"


def start_daemon(
    argv: Sequence[str], *, pid_file: Path, output: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so Ctrl-C in the terminal does not reach it)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process


def stop_process(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.05)


def wait_until_ready(
    service: str,
    *,
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    timeout: float,
    logs: Sequence[Path],
) -> None:
    """Poll `ready()` until it holds; fail loudly, with the log tail, if the process dies or
    the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise ServiceError(service, "the process exited during start-up", tails(logs))
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServiceError(service, f"not ready after {timeout:.0f} s", tails(logs))
        time.sleep(0.25)


def run_tool(
    service: str,
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = 900,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a helper program to completion; its output goes into the error if it fails."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ServiceError(service, f"cannot run {argv[0]!r}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        out = (exc.output or b"").decode(errors="replace")
        raise ServiceError(service, f"{argv[0]} timed out after {timeout:.0f} s", out) from exc
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        lines = "\n".join(text.splitlines()[-40:])
        raise ServiceError(
            service, f"{' '.join(argv[:3])} ... failed with exit code {done.returncode}", lines
        )
    return text


def host_port(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)
