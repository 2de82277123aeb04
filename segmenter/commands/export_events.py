"""`segmenter export-events`: the input topics back into a JSONL event log (for dry runs)."""

from __future__ import annotations

import sys
from typing import Any

import click

from streams.runtime.settings import Settings


@click.command("export-events")
@click.option("--since", required=True, help="RFC 3339 instant: events with ts at or after it.")
@click.option("--until", help="RFC 3339 instant: events with ts at or before it (default: all).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL file to write (- for standard output).")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers [SEGMENTER_KAFKA_BOOTSTRAP].")
@click.option("--topic-prefix", help="Topic prefix [SEGMENTER_TOPIC_PREFIX].")
@click.option("--quiet", is_flag=True, help="No progress, no summary.")
def export_events_cmd(since: str, until: str | None, out_path: str, quiet: bool,
                      **flags: Any) -> None:
    """Read the input topics (purchases, email-events, web-activity, customer-profiles) back
    into the JSONL log that `simulate` and `rules diff` replay: the events whose ts is in
    [--since, --until], sorted by ts. Reads up to each partition's end at the start (events
    produced meanwhile are left out), showing progress on standard error."""
    import asyncio

    from connectors.export_events import ExportStats, export_events
    from model.events import parse_rfc3339

    since_ms = parse_rfc3339(since)
    until_ms = parse_rfc3339(until) if until is not None else None
    if since_ms is None or (until is not None and until_ms is None):
        raise click.UsageError("--since/--until must be RFC 3339 instants with a zone, e.g. "
                               "2026-11-01T00:00:00Z")
    settings = Settings.from_env(**{k: v for k, v in flags.items() if v is not None})
    show = not quiet and sys.stderr.isatty()

    def run(progress: Any) -> ExportStats:
        out = sys.stdout.buffer if out_path == "-" else open(out_path, "wb")  # noqa: SIM115
        try:
            return asyncio.run(export_events(settings, out, since_ms, until_ms, progress))
        finally:
            if out is not sys.stdout.buffer:
                out.close()

    try:
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(),
                          transient=True, console=Console(stderr=True)) as bar:
                task = bar.add_task("records", total=None)

                def progress(s: ExportStats) -> None:
                    bar.update(task, completed=s.records, total=s.total or None)
                stats = run(progress)
        else:
            stats = run(None)
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from exc
    if not quiet:
        click.echo(f"records read: {stats.records}; events written: {stats.written}; outside "
                   f"the interval: {stats.outside}; invalid: {stats.invalid}", err=True)
