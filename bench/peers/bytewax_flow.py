"""Bytewax (run with the peers' venv): one worker in this process (`run_main`), KafkaSource over
the input topic (stops at the end of the partitions it found), the equivalent work as
`stateful_flat_map` keyed by customer id, change records to a KafkaSink. Recovery on (SQLite
snapshots of the state in a fresh folder at the end of every epoch, 1 s)."""

from __future__ import annotations

import importlib.metadata
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from bench.peers.peer import Stopwatch, parse_args, report
from bench.peers.work import State, apply


def main() -> None:
    args = parse_args()
    watch = Stopwatch()

    def work(state: State | None, raw: bytes) -> tuple[State, list[KafkaSinkMessage[Any, Any]]]:
        if not watch.wall0:
            watch.first()
        event: dict[str, Any] = orjson.loads(raw)
        state, change = apply(state, event)
        watch.handled += 1
        if change is None:
            return state, []
        watch.changes += 1
        return state, [KafkaSinkMessage(event["customer_id"], orjson.dumps(change))]

    flow = Dataflow("peers")
    messages = op.input("in", flow, KafkaSource([args.bootstrap], [args.topic], tail=False))
    keyed = op.map("key", messages, lambda m: (m.key.decode(), m.value))
    changes = op.stateful_flat_map("segments", keyed, work)
    op.output("out", op.map("unkey", changes, lambda kv: kv[1]),
              KafkaSink([args.bootstrap], args.out))
    db = Path(args.state_dir) / "recovery"
    db.mkdir(parents=True, exist_ok=True)
    init_db_dir(db, 1)
    run_main(flow, epoch_interval=timedelta(seconds=1), recovery_config=RecoveryConfig(db))
    report(watch.result(version=f"bytewax {importlib.metadata.version('bytewax')}"))


if __name__ == "__main__":
    main()
