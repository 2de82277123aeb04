"""`segmenter import FILE`: validate events from a JSONL or CSV file and produce them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import click

from connectors.common import (
    ensure_topics,
    make_producer,
    run_command,
    settings_from_flags,
    settings_options,
    setup_logging,
)
from connectors.events import EventValidator, event_rules, input_topics
from connectors.importer import (
    FORMATS,
    FileReader,
    ImportSummary,
    LocalTimes,
    detect_format,
    import_file,
    parse_constants,
    parse_mapping,
    time_zone,
)
from model.errors import ImportFileError, SegmenterError
from streams.runtime.settings import Settings


@click.command("import")
@settings_options
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="File format [default: csv for .csv/.tsv files, else jsonl].")
@click.option("--map", "mapping", multiple=True, metavar="COLUMN=FIELD",
              help="CSV: read event field FIELD from column COLUMN (repeatable). Columns named "
              "like a field are read without it; attributes.<name> fills profile attributes.")
@click.option("--set", "constants", multiple=True, metavar="FIELD=VALUE",
              help="CSV: give every record this field (e.g. type=purchase, currency=PLN).")
@click.option("--delimiter", help="CSV delimiter [default: ',' (tab for .tsv)].")
@click.option("--timezone", "zone_name", metavar="ZONE",
              help="CSV: read ts cells without a zone offset (e.g. 2026-11-30 10:00) as local "
              "times of this IANA zone (e.g. Europe/Warsaw) [default: such cells are refused].")
@click.option("--ts-format", metavar="FORMAT",
              help="CSV: strptime format of the ts cells, e.g. '%d.%m.%Y %H:%M' (local times "
              "need --timezone unless it has %z) [default: ISO, 2026-11-30 10:00[:00]].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="Produce at most N events per second [default: as fast as Kafka takes them].")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SEGMENTER_RULES", help="Rule file: its currency and clock limits are "
              "checked [SEGMENTER_RULES].")
@click.option("--currency", help="Currency of purchases, when no rule file is given.")
@click.option("--clock", type=click.Choice(["wall", "event"]), default=None,
              help="The workers' clock [SEGMENTER_CLOCK]: with 'wall', events older than the "
              "retention or too far in the future are rejected here already.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write each rejected record (line, reason, message) to this JSONL file.")
@click.option("--dry-run", is_flag=True, help="Validate only; produce nothing.")
def import_cmd(file: Path, fmt: str | None, mapping: tuple[str, ...],
               constants: tuple[str, ...], delimiter: str | None, zone_name: str | None,
               ts_format: str | None, rate: float | None,
               rules_path: Path | None, currency: str | None, clock: str | None,
               rejects_path: Path | None, dry_run: bool, **flags: Any) -> None:
    """Validate the events of FILE (JSON lines or CSV) and produce the valid ones to their
    topics, keyed by customer id (acks=all).

    Rejected records are skipped and summed up by reason code at the end. The exit status is
    0 when every record was accepted, 1 when some were rejected (the others are produced)."""
    settings = settings_from_flags(flags)
    if clock is not None:
        settings = settings.with_overrides(clock=clock)
    setup_logging("warning" if settings.log_level == "info" else settings.log_level)
    try:
        rules = event_rules(rules_path, currency)
        fmt = detect_format(file, fmt)
        columns = parse_mapping(mapping)
        fixed = parse_constants(constants)
        if fmt != "csv" and (columns or fixed or delimiter or zone_name or ts_format):
            raise ImportFileError("--map, --set, --delimiter, --timezone and --ts-format apply "
                                  "to CSV files only")
        local_times = LocalTimes(None if zone_name is None else time_zone(zone_name), ts_format)
        reader = FileReader(file, fmt, columns, fixed, delimiter, local_times)
    except SegmenterError as exc:
        raise click.UsageError(str(exc)) from exc
    validator = EventValidator(rules, check_clock=settings.clock == "wall")
    rejects: IO[bytes] | None = None
    try:
        if rejects_path is not None:
            rejects = rejects_path.open("wb")
        summary: ImportSummary = run_command(
            lambda: _run(settings, reader, validator, rate, rejects, dry_run))
    except OSError as exc:
        raise click.ClickException(f"cannot write {rejects_path}: {exc.strerror}") from exc
    finally:
        reader.close()
        if rejects is not None:
            rejects.close()
    _report(file, summary, dry_run, rejects_path)
    if summary.rejected_total:
        sys.exit(1)


async def _run(settings: Settings, reader: FileReader, validator: EventValidator,
               rate: float | None, rejects: IO[bytes] | None, dry_run: bool) -> ImportSummary:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    producer = None
    if not dry_run:
        await ensure_topics(settings, input_topics(settings))
        producer = make_producer(settings)
        await producer.start()
    try:
        with Progress(TextColumn("importing"), BarColumn(), DownloadColumn(),
                      TextColumn("{task.fields[events]} events, {task.fields[rejected]} "
                                 "rejected"), TimeRemainingColumn(), console=console,
                      transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("import", total=reader.size, events=0, rejected=0)

            def progress(position: int, summary: ImportSummary) -> None:
                bar.update(task, completed=position, events=summary.accepted,
                           rejected=summary.rejected_total)

            return await import_file(reader, validator, settings=settings, producer=producer,
                                     rate=rate, rejects=rejects, progress=progress)
    finally:
        if producer is not None:
            await producer.stop()


def _report(file: Path, summary: ImportSummary, dry_run: bool, rejects_path: Path | None
            ) -> None:
    rate = summary.accepted / summary.seconds if summary.seconds > 0 else 0.0
    verb = "validated" if dry_run else "imported"
    click.echo(f"{verb} {summary.accepted} of {summary.read} records from {file} in "
               f"{summary.seconds:.1f}s ({rate:,.0f} events/s); "
               f"{summary.rejected_total} rejected")
    if summary.rejected:
        click.echo("rejected by reason:")
        width = max(len(r) for r in summary.rejected)
        for reason, count in summary.rejected.most_common():
            click.echo(f"  {reason:<{width}}  {count}")
        if rejects_path is not None:
            click.echo(f"rejected records: {rejects_path}")
