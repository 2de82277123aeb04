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

import gc

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
