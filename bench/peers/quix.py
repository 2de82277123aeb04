"""Quix Streams (run with the peers' venv): a StreamingDataFrame over the input topic, the
equivalent work as a stateful function (RocksDB store, changelog topic on: Quix's defaults),
change records to the output topic; at-least-once or exactly-once. Stops itself (`app.stop()`)
once it has handled every preloaded record; `run()` then commits and closes the stores."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import orjson
from quixstreams import Application, State

from bench.peers.peer import Stopwatch, parse_args, report
from bench.peers.work import apply


def main() -> None:
    args = parse_args()
    watch = Stopwatch()
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
        processing_guarantee=args.guarantee.replace("_", "-"), state_dir=args.state_dir,
        commit_interval=1.0, loglevel="WARNING", use_changelog_topics=True)
    source = app.topic(args.topic, key_deserializer="str", value_deserializer="bytes")
    sink = app.topic(args.out, key_serializer="str", value_serializer="bytes")

    def work(raw: bytes, state: State) -> bytes | None:
        if not watch.wall0:
            watch.first()
        event: dict[str, Any] = orjson.loads(raw)
        customer, change = apply(state.get("c"), event)
        state.set("c", customer)
        watch.handled += 1
        if watch.handled >= args.events:
            app.stop()
        if change is None:
            return None
        watch.changes += 1
        return orjson.dumps(change)

    sdf = app.dataframe(source)
    sdf = sdf.apply(work, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(sink)
    app.run()
    report(watch.result(version=f"quixstreams {importlib.metadata.version('quixstreams')}"))


if __name__ == "__main__":
    main()
