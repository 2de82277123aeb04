"""A worker whose engine does nothing: the floor that Faust and aiokafka put under any agent.

Started by `python -m bench.worker_throughput --floor` in place of the real worker, with the same
topics, table, agents, commit and metrics; only `Processor.on_input` is replaced:

- BENCH_FLOOR=write: parse the record (for the customer id), write a 1.2 kB value (the mean
  encoded customer state) to the table (one changelog record), and send a change record for
  every 8th input (about the retail log's ratio of change records to events);
- BENCH_FLOOR=ack: the same without the table write.

The gap between these runs and the real worker is what the engine costs inside the worker; the
gap between them and the bare aiokafka ceiling is what Faust costs.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # also runnable as `python bench/...py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams import processor as proc_module
from streams.codec import encode_state
from streams.events import Rejection, parse_event
from streams.processor import Output, Send
from streams.state import CustomerState

CHANGE_EVERY = 8


def install(mode: str) -> None:
    if mode not in ("write", "ack"):
        raise SystemExit(f"BENCH_FLOOR must be 'write' or 'ack', got {mode!r}")
    # a decodable state of the mean size, so that a table rebuild still works
    blob = encode_state(CustomerState("floor", attributes={"pad": "x" * 1100}))
    counter = itertools.count()
    change = b'{"floor": true}'

    def on_input(self: Any, key: bytes | None, value: bytes, *, topic: str, partition: int,
                 offset: int, get: Any, parsed: Any = None) -> Output:
        ev = parsed if parsed is not None else parse_event(
            value, currency=self.rules.settings.currency)
        if isinstance(ev, Rejection):
            return Output(rejection=ev)
        out = Output(customer_id=ev.customer_id, event=ev)
        if mode == "write":
            out.write, out.state = True, blob
        if next(counter) % CHANGE_EVERY == 0:
            out.sends.append(Send("changes", ev.customer_id.encode(), change))
        return out

    proc_module.Processor.on_input = on_input  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ.get("BENCH_FLOOR", "write"))
    from segmenter.commands.worker import worker

    worker()
