"""`segmenter segments outcome SEGMENT`: treated vs control on a replayed event log.

The log is replayed through the engine offline exactly as `segmenter simulate` does; the report
(streams/outcome.py) compares the first entries of treated and held-out customers on the
segment's `outcome:` (rules/outcome.py) measured at entered_at + after / within.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import click
import orjson

from model.events import parse_rfc3339


def _instant(option: str, value: str | None) -> int | None:
    if value is None:
        return None
    parsed = parse_rfc3339(value)
    if parsed is None:
        click.echo(f"error: {option} {value!r} is not an RFC 3339 instant with a zone", err=True)
        sys.exit(2)
    return parsed


@click.command()
@click.argument("segment")
@click.option("--rules", "rules_path", required=True, type=click.Path(dir_okay=False),
              help="Rule file (YAML) in which SEGMENT has control: and outcome:.")
@click.option("--events", "events_path", required=True,
              help="JSONL event log (as `segmenter export-events` writes), or - for standard "
                   "input.")
@click.option("--until", help="RFC 3339 instant: replay up to it; only entries whose window "
                              "closed by then count (default: the last event's time).")
@click.option("--wall-now", help="RFC 3339 instant taken as the wall clock (default: now), as in "
                                 "`segmenter simulate`.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95,
              show_default=True, help="Level of the confidence interval.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report as one JSON object (what the dashboard reads).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write the JSON report to this file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def outcome(segment: str, rules_path: str, events_path: str, until: str | None,
            wall_now: str | None, confidence: float, as_json: bool, out_path: str | None,
            quiet: bool) -> None:
    """Report SEGMENT's outcome for treated vs held-out (control) customers.

    Each customer counts once, at their first entry in the log; the outcome is measured at
    entered_at + after (a metric) or within (a conversion), and only entries whose window has
    closed by the end of the log (or --until) count. Prints the means (rates), the difference
    treated - control with its confidence interval and p-value (Welch t-test; difference of
    proportions for a conversion). Exit code 0, or 2 for an invalid rule file, an unknown
    segment, a segment without control group or outcome, or unreadable input."""
    from segmenter.commands.simulate import _lines, load_ruleset_or_exit
    from streams.outcome import OutcomeError, OutcomeSimulator

    rules = load_ruleset_or_exit(rules_path)
    until_ms = _instant("--until", until)
    wall_ms = _instant("--wall-now", wall_now)
    try:
        sim = OutcomeSimulator(rules, segment, until=until_ms,
                               wall_now=wall_ms if wall_ms is not None
                               else int(time.time() * 1000))
    except OutcomeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    with ExitStack() as stack:
        try:
            if events_path == "-":
                src: IO[bytes] = sys.stdin.buffer
                total = None
            else:
                src = stack.enter_context(open(events_path, "rb"))
                total = Path(events_path).stat().st_size
        except OSError as exc:
            click.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
            sys.exit(2)
        sim.feed_lines(_lines(src, total, not quiet and sys.stderr.isatty()))
    sim.finish()
    report = sim.report(confidence)
    data = orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2)
    if out_path is not None:
        try:
            Path(out_path).write_bytes(data + b"\n")
        except OSError as exc:
            click.echo(f"error: {out_path}: {exc.strerror}", err=True)
            sys.exit(2)
    click.echo(data.decode() if as_json else report.text())
