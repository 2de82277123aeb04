"""`segmenter backfill`: load an event history into a new app before its workers go live."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from model.errors import SegmenterError
from streams.runtime.settings import Settings


@click.command()
@click.option("--rules", "rules_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Rule file (the version the workers will run).")
@click.option("--events", "events_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSONL event log (the format `segmenter simulate` reads).")
@click.option("--until", help="RFC 3339 instant up to which history is applied and timers fire "
                              "(default: now).")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers [SEGMENTER_KAFKA_BOOTSTRAP].")
@click.option("--topic-prefix", help="Topic prefix [SEGMENTER_TOPIC_PREFIX].")
@click.option("--app-id", help="App id = the workers' group [SEGMENTER_APP_ID].")
@click.option("--partitions", type=int, help="Partitions [SEGMENTER_PARTITIONS].")
def backfill(rules_path: Path, events_path: Path, until: str | None, **flags: Any) -> None:
    """Build every customer's state from an event log (the engine, offline, with the event
    clock) and write it through the changelog of a new app, before its workers start.

    Nothing fires: the log's change records go to segment-changes marked "quiet" (the Redis view
    and the dashboard fill in, memberships dated by event time; webhooks skip them), timers due
    by --until fire inside the replay, and the workers start with the events that arrive after
    (the group's offsets are set to the input topics' end). Refused when a worker of the group
    runs, when the changelog already holds states, or when the rules topic holds another
    version. Use it to go live with history; to change rules on a live system, publish them."""
    import asyncio

    from model.events import parse_rfc3339
    from rules.loader import load_rules_text
    from rules.ruleset import RuleSet
    from streams.runtime.backfill import backfill as run
    from streams.runtime.rules_topic import Seed

    try:
        settings = Settings.from_env(**flags)
        text = rules_path.read_text()
        seed = Seed(RuleSet(load_rules_text(text, source=str(rules_path))), text,
                    rules_path.name)
        wall = int(time.time() * 1000)
        until_ms = wall if until is None else parse_rfc3339(until)
        if until_ms is None:
            raise click.BadParameter(f"{until!r} is not an RFC 3339 instant with a zone",
                                     param_hint="--until")
        with events_path.open("rb") as lines:
            result = asyncio.run(run(settings, seed, (line for line in lines if line.strip()),
                                     until=until_ms, wall_now=max(wall, until_ms),
                                     progress=lambda text: click.echo(text, err=True)))
    except SegmenterError as exc:
        raise click.ClickException(str(exc)) from exc
    s = result.stats
    rejected = sum(s.rejected.values())
    click.echo(f"backfilled {result.customers} customers from {s.applied} events "
               f"({rejected} rejected, {s.after_until} after --until): {result.changes} quiet "
               "changes written; start the workers now", err=True)
    sys.exit(0)
