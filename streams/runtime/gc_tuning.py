"""The garbage collector's settings for a long-running, allocation-heavy process.

CPython's cyclic collector runs a young collection every 700 container allocations and, now
and then, a full one that walks every object of the process. A worker holds millions of small
objects (each customer's buckets, dicts and sets) and allocates a few dozen per event, so with
the defaults it spends ~8% of its CPU in the collector (measured on the peers' rules with
`simulate`: 0.85 s of 10.5 s, half of it in full collections) and pauses for a walk of every
state now and then. Customer states hold no reference cycles; the collector only has library
garbage to find. So: what exists after start-up (modules, the rule set) is moved out of the
collector's sight (`gc.freeze`), and the young generation is collected every `threshold`
container allocations (default 50,000: 0.27 s of 9.0 s on the same run, no full collection).
The middle generation is collected every second young collection: what survives a young
collection in a worker is mostly new customer state, and letting it pile up for 20 young
collections made each middle collection a walk of ~1M objects, a latency spike (`python -m
bench.worker_latency --rate 2000`, p99 from the change records' CreateTime: 61-63 ms with 20,
43 ms with 2, 48-49 ms with CPython's defaults; simulate's throughput the same within noise).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

DEFAULT_THRESHOLD = 50_000


def tune_gc(threshold: int = DEFAULT_THRESHOLD) -> tuple[int, int, int]:
    """Apply the settings above to this process (0: leave CPython's defaults); returns the
    thresholds in force."""
    if threshold < 0:
        raise ValueError(f"the GC threshold must be >= 0, got {threshold}")
    if threshold:
        gc.freeze()
        gc.set_threshold(threshold, 2, 100)
    return gc.get_threshold()


class CollectorHold:
    """Holds the cyclic collector off while work that makes many short-lived objects runs,
    for one process (the worker owns one; holds nest and may overlap across awaits).

    - Around each fetch: every record of the fetch (its ConsumerRecord, the decoded Event and
      its items, the merger's entry) stays alive until the fetch is handled, and a young
      collection triggered meanwhile walks them all, then the middle one again. Held, the
      collector runs after the fetch is let go, and walks only what lives on (new customer
      state): on the peers' work (`python -m bench.peers --only segmenter`) the collector's
      time fell from 1.26 to 0.42 s per 200k events, on retail.yaml from 1.37 to 0.62 s.
    - Around a restore (`freeze=True`): millions of decoded states that live on; what was
      restored is then frozen out of later collections (`gc.freeze`).
    Allocation counts carry over: the first allocation after the last release collects if
    the young threshold was passed meanwhile. If the collector was off when the first hold
    began (a caller disabled it), it stays off."""

    def __init__(self) -> None:
        self._holds = 0
        self._was_enabled = False
        self._freeze = False

    @contextlib.contextmanager
    def hold(self, *, freeze: bool = False) -> Iterator[None]:
        if self._holds == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
        self._holds += 1
        self._freeze = self._freeze or freeze
        try:
            yield
        finally:
            self._holds -= 1
            if self._holds == 0:
                if self._freeze:
                    self._freeze = False
                    gc.freeze()
                if self._was_enabled:
                    gc.enable()

    @property
    def held(self) -> bool:
        return self._holds > 0
