"""Shared helpers of the benchmarks: CPU pinning, machine facts, memory, the cached event log,
result files."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CACHE = RESULTS / "cache"  # generated event logs (git-ignored, see bench/.gitignore)
RETAIL = ROOT / "rules" / "examples" / "retail.yaml"
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: fixed, so every run sees the same log
MIX = (0.5, 0.35, 0.15)  # web, email, purchases (+ refunds): the mix of the spec


def pin_to_one_core(cpu: int | None = None) -> int:
    """Pin this process to one CPU (the last allowed one unless told) and return it."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# The pure engine: what the benchmarks exercise (not the Kafka/Faust app around it).
ENGINE_FILES = ("streams/engine.py", "streams/simulate.py", "model/state.py", "model/codec.py",
                "streams/due_index.py", "model/events.py", "model/changes.py",
                "streams/generator.py", "rules/*.py", "rules/*.lark")


def engine_digest() -> str:
    """Short hash of the engine sources (ENGINE_FILES) as they are on disk: the work tree may
    differ from HEAD while others edit it."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted({f for pattern in ENGINE_FILES for f in ROOT.glob(pattern)}):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def machine_info() -> dict[str, Any]:
    import orjson

    return {
        "cpu": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "orjson": orjson.__version__,
        "git_head": _git_head(),
        "engine_digest": engine_digest(),
        "loadavg": list(loadavg()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def command_line() -> str:
    """How this benchmark was started, as a shell command run from the project root."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None else f"python {sys.argv[0]}"
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def log_path(events: int, customers: int, seed: int, days: float) -> Path:
    return CACHE / f"events-{events}e-{customers}c-seed{seed}-{days:g}d.jsonl"


def event_log(events: int, customers: int, *, seed: int = 42, days: float = 90.0,
              quiet: bool = False) -> Path:
    """The JSONL log of `generate_raw` for these arguments, generated once and cached."""
    from streams.generator import generate_raw

    path = log_path(events, customers, seed, days)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    started = time.perf_counter()
    if not quiet:
        print(f"generating {events:,} events for {customers:,} customers -> {path}",
              file=sys.stderr)
    with open(tmp, "wb") as out:
        for raw in generate_raw(customers=customers, events=events, seed=seed, start_ms=START_MS,
                                days=days, mix=MIX, profile_fraction=0.0):
            out.write(raw)
            out.write(b"\n")
    tmp.replace(path)
    if not quiet:
        print(f"  generated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def progress(lines: Iterable[bytes], total: int, label: str, every: int = 100_000,
             quiet: bool = False) -> Iterator[bytes]:
    """Pass lines through, printing the running rate to stderr every `every` lines."""
    if quiet:
        yield from lines
        return
    started = time.perf_counter()
    for n, line in enumerate(lines, 1):
        yield line
        if n % every == 0:
            dt = time.perf_counter() - started
            print(f"  {label}: {n:,}/{total:,} lines, {n / dt:,.0f}/s", file=sys.stderr)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def default_json(name: str) -> Path:
    return RESULTS / f"{name}.json"


def rel(path: Path) -> str:
    """A path relative to the project root when it is inside it (for reports)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)

