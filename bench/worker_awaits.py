"""The worker (as `python -m segmenter.commands.worker` builds it, from SEGMENTER_* variables)
plus one bench-only Faust task that samples, every few milliseconds, where the `segmenter` agent
task is suspended: the chain of `await`s from the agent down to the future it waits on.

py-spy shows the event loop idle in select() for much of the run; this shows what the agent is
waiting for meanwhile. Started by `python -m bench.worker_profile --awaits` (never on its own
in normal use); it writes its counts as JSON to $BENCH_AWAITS_OUT every second.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


WRAPPERS = frozenset({"coroutine_wrapper", "async_generator_asend", "async_generator_athrow"})


def await_chain(coro: Any, limit: int = 40) -> list[str]:
    """'qualname (file:line)' of every coroutine / generator / async generator the object is
    suspended in, outermost first, ending with the type of the awaited future."""
    out: list[str] = []
    obj = coro
    while obj is not None and len(out) < limit:
        frame = (getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
                 or getattr(obj, "ag_frame", None))
        if frame is not None:
            path = frame.f_code.co_filename.split("site-packages/")[-1]
            path = "/".join(path.split("/")[-2:])
            out.append(f"{frame.f_code.co_qualname} ({path}:{frame.f_lineno})")
        nxt = (getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
               or getattr(obj, "ag_await", None))
        if nxt is None and frame is None and type(obj).__name__ in WRAPPERS:
            # C-level wrappers (`await x.__await__()`, `async for`'s __anext__) keep the
            # coroutine / async generator they drive only as a GC reference
            nxt = next((o for o in gc.get_referents(obj)
                        if type(o).__name__ in WRAPPERS or hasattr(o, "cr_frame")
                        or hasattr(o, "ag_frame") or hasattr(o, "gi_frame")), None)
        if nxt is None:
            if frame is None:
                out.append(f"<{type(obj).__name__}>")
            break
        obj = nxt
    return out


def main() -> None:
    import faust
    import orjson
    from prometheus_client import CollectorRegistry

    from segmenter.metrics import Metrics
    from segmenter.settings import Settings
    from streams.app import create_app, ensure_topics, worker_datadir

    settings = Settings.from_env()
    worker_datadir(settings).parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))
    app = create_app(settings, Metrics(CollectorRegistry()))
    out_path = Path(os.environ["BENCH_AWAITS_OUT"])
    interval = float(os.environ.get("BENCH_AWAITS_INTERVAL", "0.005"))

    async def sample_awaits() -> None:
        agent: collections.Counter[str] = collections.Counter()
        others: collections.Counter[str] = collections.Counter()
        samples = 0
        last_write = time.monotonic()
        me = asyncio.current_task()
        while True:
            await asyncio.sleep(interval)
            samples += 1
            for task in asyncio.all_tasks():
                if task is me or task.done():
                    continue
                chain = await_chain(task.get_coro())
                text = " > ".join(chain)
                if "register_agents.<locals>.segmenter" in text:
                    # from the agent's own frame down to the awaited future
                    start = next(i for i, c in enumerate(chain)
                                 if c.startswith("register_agents.<locals>.segmenter"))
                    agent[" > ".join(chain[start:])] += 1
                elif chain:
                    others[" > ".join(chain[-3:])] += 1
            if time.monotonic() - last_write > 1.0:
                last_write = time.monotonic()
                out_path.write_bytes(orjson.dumps({
                    "samples": samples, "interval_s": interval,
                    "agent": dict(agent.most_common(60)),
                    "other_tasks": dict(others.most_common(60))}))

    app.task(sample_awaits)
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
