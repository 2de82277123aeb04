"""`segmenter simulate`: replay a JSONL event log through a rule file, offline."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
import orjson

from model.changes import SegmentChange, format_ts
from model.errors import RuleFileError
from model.events import Rejection, parse_rfc3339
from streams.runtime.gc_tuning import tune_gc
from streams.simulate import Simulator, customer_metrics

if TYPE_CHECKING:
    from rules.ruleset import RuleSet


def _open_out(stack: ExitStack, path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdout.buffer
    return stack.enter_context(open(path, "wb"))


def load_ruleset_or_exit(rules_path: str) -> RuleSet:
    """The rule file compiled, or its error on stderr and exit code 2."""
    from rules.loader import load_rules
    from rules.ruleset import RuleSet

    try:
        return RuleSet(load_rules(rules_path))
    except RuleFileError as exc:
        click.echo(f"error: invalid rule file {rules_path}:\n{exc}", err=True)
    except OSError as exc:
        click.echo(f"error: cannot read rule file {rules_path}: {exc.strerror}", err=True)
    sys.exit(2)


def _lines(src: IO[bytes], total: int | None, show: bool) -> Iterator[bytes]:
    if not show:
        yield from src
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("replaying"), BarColumn(), TransferSpeedColumn(),
                  transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task("events", total=total)
        done = 0
        for line in src:
            done += len(line)
            if done & 0xFFFF < len(line):
                progress.update(task, completed=done)
            yield line


@click.command()
@click.option("--rules", "rules_path", required=True, type=click.Path(dir_okay=False),
              help="Rule file (YAML).")
@click.option("--events", "events_path", required=True,
              help="JSONL event log, one event per line, or - for standard input.")
@click.option("--until", help="RFC 3339 instant: apply events up to it, then advance the clock "
                              "to it and fire what is due (default: the last event's time).")
@click.option("--wall-now", help="RFC 3339 instant taken as the wall clock (default: now): an "
                                 "event more than the rules' future_tolerance past it is "
                                 "rejected too_far_in_future, as the worker does.")
@click.option("--out-state", help="Write one JSON line per customer with state.")
@click.option("--out-changes", help="Write every segment change as a JSON line.")
@click.option("--out-rejects", help="Write every rejected event with its reason as a JSON line.")
@click.option("--quiet", is_flag=True, help="No summary, no progress bar.")
def simulate(rules_path: str, events_path: str, until: str | None, wall_now: str | None,
             out_state: str | None, out_changes: str | None, out_rejects: str | None,
             quiet: bool) -> None:
    """Replay an event log with an event clock and report the segment changes.

    now = the largest event time seen so far; due timers fire as the clock advances. Rejected
    events are counted by reason and never stop the run. Exit code 0, or 2 for an invalid rule
    file or unreadable input."""
    rules = load_ruleset_or_exit(rules_path)
    until_ms = None
    if until is not None:
        until_ms = parse_rfc3339(until)
        if until_ms is None:
            click.echo(f"error: --until {until!r} is not an RFC 3339 instant with a zone", err=True)
            sys.exit(2)
    wall_ms = int(time.time() * 1000)
    if wall_now is not None:
        parsed = parse_rfc3339(wall_now)
        if parsed is None:
            click.echo(f"error: --wall-now {wall_now!r} is not an RFC 3339 instant with a zone",
                       err=True)
            sys.exit(2)
        wall_ms = parsed
    with ExitStack() as stack:
        try:
            if events_path == "-":
                src: IO[bytes] = sys.stdin.buffer
                total = None
            else:
                src = stack.enter_context(open(events_path, "rb"))
                total = Path(events_path).stat().st_size
            changes_out = _open_out(stack, out_changes)
            rejects_out = _open_out(stack, out_rejects)
            state_out = _open_out(stack, out_state)
        except OSError as exc:
            click.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
            sys.exit(2)

        def on_change(ch: SegmentChange) -> None:
            if changes_out is not None:
                changes_out.write(ch.to_json() + b"\n")

        def on_reject(raw: bytes, rej: Rejection) -> None:
            if rejects_out is not None:
                rejects_out.write(orjson.dumps({
                    "reason": rej.reason, "message": rej.message, "field": rej.field,
                    "event_id": rej.event_id, "customer_id": rej.customer_id,
                    "raw": raw.decode("utf-8", "replace").rstrip("\n")}) + b"\n")

        tune_gc()  # see streams/runtime/gc_tuning.py
        sim = Simulator(rules, until=until_ms, wall_now=wall_ms, on_change=on_change,
                        on_reject=on_reject)
        show = not quiet and sys.stderr.isatty()
        started = time.perf_counter()
        sim.feed_lines(_lines(src, total, show))
        sim.finish()
        elapsed = time.perf_counter() - started
        if state_out is not None and sim.clock is not None:
            _write_state(state_out, sim)
    if not quiet:
        _summary(sim, elapsed)


def _write_state(out: IO[bytes], sim: Simulator) -> None:
    from streams.annotated import annotator_for

    assert sim.clock is not None
    pipelines = annotator_for(sim.rules.file)
    for cid in sorted(sim.states):
        st = sim.states[cid]
        line: dict[str, Any] = {"customer_id": cid, "segments": sorted(st.members)}
        if pipelines.default is not None:  # a rule file with pipelines: the current one
            line["pipeline"] = pipelines.pipeline_of(st.members)
        line["metrics"] = customer_metrics(sim.rules, st, sim.clock)
        out.write(orjson.dumps(line) + b"\n")


def _summary(sim: Simulator, elapsed: float) -> None:
    s = sim.stats
    total = s.applied + sum(s.rejected.values())
    rate = total / elapsed if elapsed > 0 else 0.0
    lines: list[Any] = [
        f"events applied: {s.applied}",
        f"events rejected: {sum(s.rejected.values())}"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in s.rejected.most_common()) + ")"
           if s.rejected else ""),
    ]
    if s.after_until:
        lines.append(f"events after --until (not applied): {s.after_until}")
    lines += [
        f"customers: {len(sim.states)}",
        f"segment changes: {s.changes} ({s.time_changes} time-driven)",
        f"clock: {format_ts(sim.clock) if sim.clock is not None else '-'}",
        "segment sizes: " + ", ".join(f"{k}={v}" for k, v in sim.segment_sizes().items()),
        *_pipeline_sizes(sim),
        f"throughput: {rate:,.0f} events/s ({elapsed:.2f} s)",
    ]
    for line in lines:
        click.echo(line, err=True)


def _pipeline_sizes(sim: Simulator) -> list[str]:
    from streams.annotated import annotator_for

    pipelines = annotator_for(sim.rules.file)
    if pipelines.default is None:
        return []
    sizes: Counter[str | None] = Counter({p.id: 0 for p in sim.rules.file.pipelines})
    sizes.update(pipelines.pipeline_of(st.members) for st in sim.states.values())
    return ["pipeline sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items())]
