"""`segmenter generate`: write synthetic events as JSON lines (one wire-format object a line)."""

from __future__ import annotations

import time
from typing import BinaryIO

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from model.events import parse_rfc3339
from streams.generator import DAY_MS, HOUR_MS, generate_raw

_PROGRESS_STEP = 10_000


class _Rfc3339(click.ParamType):
    name = "RFC3339"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int):
            return value
        ms = parse_rfc3339(str(value))
        if ms is None:
            self.fail(f"{value!r} is not an RFC 3339 date-time with a zone offset "
                      f"(e.g. 2024-05-01T00:00:00Z)", param, ctx)
        return ms


class _Currency(click.ParamType):
    name = "CODE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None
                ) -> str:
        text = str(value)
        if len(text) != 3 or not (text.isascii() and text.isalpha() and text.isupper()):
            self.fail(f"{text!r} is not an ISO 4217 currency code (3 capital letters)", param, ctx)
        return text


@click.command("generate")
@click.option("--customers", type=click.IntRange(min=1), required=True,
              help="Number of distinct customers.")
@click.option("--events", type=click.IntRange(min=0), required=True,
              help="Number of valid events to write.")
@click.option("--seed", type=int, required=True, help="Random seed: same seed, same output.")
@click.option("--start", "start_ms", type=_Rfc3339(), default=None,
              help="Time of the first event, RFC 3339 with an offset. "
                   "Default: DAYS before now, at the start of the hour.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=90.0,
              show_default=True, help="Length of the period the events cover.")
@click.option("--currency", type=_Currency(), default="PLN", show_default=True,
              help="Currency of purchases and refunds (the rule file's settings.currency).")
@click.option("--bad-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True,
              help="Fraction of extra invalid records mixed in (for testing rejection).")
@click.option("--erasures/--no-erasures", default=False, show_default=True,
              help="Also emit a few customer_erased events.")
@click.option("--out", "out", type=click.File("wb"), default="-", show_default=True,
              help="Output file; '-' for standard output.")
def generate(customers: int, events: int, seed: int, start_ms: int | None, days: float,
             currency: str, bad_fraction: float, erasures: bool, out: BinaryIO) -> None:
    """Write synthetic customer events as JSON lines (the Kafka wire format).

    Customers have personas (VIP, regular, occasional, window shopper, newsletter reader,
    lapsing, new customer) with different purchase, email and web behaviour. Events are in
    time order; about 50% web, 35% email, 15% purchases and refunds, 0.5% profile updates.
    """
    if start_ms is None:
        start_ms = (int(time.time() * 1000) - int(days * DAY_MS)) // HOUR_MS * HOUR_MS
    try:
        records = generate_raw(customers=customers, events=events, seed=seed, start_ms=start_ms,
                               days=days, currency=currency, erasures=erasures,
                               bad_fraction=bad_fraction)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    expected = round(events / (1.0 - bad_fraction))
    console = Console(stderr=True)
    began = time.perf_counter()
    written = 0
    write = out.write
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task("generate", total=expected)
        for record in records:
            write(record)
            write(b"\n")
            written += 1
            if written % _PROGRESS_STEP == 0:
                progress.update(task, completed=min(written, expected))
    out.flush()
    elapsed = time.perf_counter() - began
    rate = written / elapsed if elapsed > 0 else 0.0
    click.echo(f"wrote {written} records ({events} events, {written - events} invalid) "
               f"for {customers} customers in {elapsed:.1f}s ({rate:,.0f}/s)", err=True)
