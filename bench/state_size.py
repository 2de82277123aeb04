"""State bytes per customer: `model.codec.encode_state` of every customer after the 1M-event run
(mean, p50, p99, max), with a breakdown of where the bytes go.

    python -m bench.state_size                      # 1M events, 100k customers (cached log)
    python -m bench.state_size --events 100000 --customers 10000

`python -m bench.engine_throughput --state-size` measures the same thing at the end of the timed
run, without replaying the log a second time (that is what `python -m bench` does).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/state_size.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench.common import (
    RETAIL,
    command_line,
    default_json,
    event_log,
    machine_info,
    percentile,
    pin_to_one_core,
    rel,
    write_json,
)
from model.codec import encode_state
from model.state import CustomerState

# Parts of the encoded state, measured as the JSON of that part alone (approximate shares: the
# commas and brackets of the enclosing array are left out).
_PARTS = ("buckets", "dedup", "first_last_ts", "members_cands_due", "other")


def _part_sizes(st: CustomerState, total: int) -> dict[str, int]:
    from model.codec import _bucket_out

    dumps = orjson.dumps
    buckets = len(dumps([_bucket_out(b, bk) for b, bk in st.buckets.items()]))
    dedup = len(dumps(st.dedup))
    ts = len(dumps(st.first_ts)) + len(dumps(st.last_ts))
    seg = len(dumps(st.members)) + len(dumps(sorted(st.cands))) + len(dumps(st.due))
    return {"buckets": buckets, "dedup": dedup, "first_last_ts": ts, "members_cands_due": seg,
            "other": total - buckets - dedup - ts - seg}


def measure(states: Mapping[str, CustomerState]) -> dict[str, Any]:
    """Sizes of encode_state over all customers, plus the time to encode them."""
    started = time.perf_counter()
    encoded = [encode_state(st) for st in states.values()]
    encode_s = time.perf_counter() - started
    sizes = sorted(len(b) for b in encoded)
    n = len(sizes)
    if n == 0:
        return {"customers": 0}
    parts = dict.fromkeys(_PARTS, 0)
    buckets = dedup = 0
    for st, data in zip(states.values(), encoded, strict=True):
        for k, v in _part_sizes(st, len(data)).items():
            parts[k] += v
        buckets += len(st.buckets)
        dedup += len(st.dedup)
    total = sum(sizes)
    return {
        "customers": n,
        "bytes_total": total,
        "bytes_mean": total / n,
        "bytes_p50": percentile(sizes, 50),
        "bytes_p90": percentile(sizes, 90),
        "bytes_p99": percentile(sizes, 99),
        "bytes_max": sizes[-1],
        "encode_us_per_customer": encode_s / n * 1e6,
        "buckets_mean": buckets / n,
        "dedup_entries_mean": dedup / n,
        "share_of_bytes": {k: v / total for k, v in parts.items()},
    }


def print_report(r: Mapping[str, Any]) -> None:
    if not r.get("customers"):
        print("no customers")
        return
    print(f"customers            {r['customers']:,}")
    print(f"state bytes mean     {r['bytes_mean']:,.0f}")
    print(f"            p50      {r['bytes_p50']:,.0f}")
    print(f"            p99      {r['bytes_p99']:,.0f}")
    print(f"            max      {r['bytes_max']:,.0f}")
    print(f"            total    {r['bytes_total'] / 1e6:,.1f} MB")
    print(f"encode_state         {r['encode_us_per_customer']:.1f} us/customer")
    print(f"buckets/customer     {r['buckets_mean']:.1f}   dedup entries/customer "
          f"{r['dedup_entries_mean']:.1f}")
    shares = ", ".join(f"{k} {v:.0%}" for k, v in r["share_of_bytes"].items())
    print(f"bytes by part        {shares}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=float, default=90.0)
    ap.add_argument("--rules", type=Path, default=RETAIL)
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    ap.add_argument("--json", type=Path, default=default_json("state_size"))
    args = ap.parse_args(argv)

    from rules.loader import load_rules
    from rules.ruleset import RuleSet
    from streams.simulate import Simulator

    cpu = pin_to_one_core(args.cpu)
    info = machine_info()
    log = event_log(args.events, args.customers, seed=args.seed, days=args.days)
    sim = Simulator(RuleSet(load_rules(args.rules)))
    print(f"replaying {log.name} (untimed) ...", file=sys.stderr)
    with open(log, "rb") as f:
        sim.feed_lines(f)
    sim.finish()
    result = measure(sim.states)
    print_report(result)
    write_json(args.json, {"benchmark": "state_size", "command": command_line(), "cpu": cpu,
                           "machine": info, "events": args.events, "customers": args.customers,
                           "rules": rel(args.rules), "state": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
