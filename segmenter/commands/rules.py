"""`segmenter rules ...`: work with rule files (validate; more subcommands join this group)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click

from model.errors import RuleFileError
from rules.loader import load_rules
from streams.runtime.gc_tuning import tune_gc


@click.group()
def rules() -> None:
    """Check and manage segment rule files."""


@rules.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check rule FILES: print every problem as file:line:column, exit 1 if any.

    A valid file gets one line on standard output: its name, how many segments and groups it
    defines, and its rules_version (the hash that change events carry).
    """
    failed = False
    for path in files:
        try:
            rule_file = load_rules(path)
        except RuleFileError as exc:
            failed = True
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            count = len(exc.problems)
            click.echo(f"{path}: {count} problem{'' if count == 1 else 's'}", err=True)
            continue
        groups = {s.group for s in rule_file.segments if s.group is not None}
        click.echo(
            f"{path}: OK: {rule_file.name!r}, {len(rule_file.segments)} segments, "
            f"{len(groups)} group{'' if len(groups) == 1 else 's'}, "
            f"rules_version {rule_file.content_hash}"
        )
    if failed:
        raise SystemExit(1)


@rules.command()
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--events", "events_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL event log to replay through both versions.")
@click.option("--show", "show", default=10, show_default=True, type=click.IntRange(min=0),
              help="Customer ids listed per segment that customers enter or exit.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write every customer who moves as a JSON line (entered, exited, pipeline).")
def diff(old: Path, new: Path, events_path: str, show: int, out_path: str | None) -> None:
    """Replay an event log through OLD and NEW and report, per segment, how many customers
    would enter and exit it (their membership at the end of the log under NEW vs OLD), the
    first --show of them, and how many follow-ups and pipeline moves each version fires."""
    from rules.ruleset import RuleSet
    from segmenter.commands.dry_run import FiredCounter
    from streams.simulate import Simulator

    sims: list[Simulator] = []
    tune_gc()  # see streams/runtime/gc_tuning.py
    fired: list[FiredCounter] = []
    for path in (old, new):
        try:
            rules = RuleSet(load_rules(path))
            fired.append(FiredCounter(rules))
            sims.append(Simulator(rules, on_change=fired[-1].count))
        except RuleFileError as exc:
            click.echo(f"error: invalid rule file {path}:\n{exc}", err=True)
            raise SystemExit(2) from exc
    try:
        with open(events_path, "rb") as src:
            for line in src:
                if line.strip():
                    for sim in sims:
                        sim.feed_raw(line)
    except OSError as exc:
        click.echo(f"error: cannot read {events_path}: {exc.strerror}", err=True)
        raise SystemExit(2) from exc
    for sim in sims:
        sim.finish()
    before, after = sims
    ids = sorted(set(before.rules.by_id) | set(after.rules.by_id))
    entering = dict.fromkeys(ids, 0)
    exiting = dict.fromkeys(ids, 0)
    for cid in set(before.states) | set(after.states):
        a = set(before.states[cid].members) if cid in before.states else set()
        b = set(after.states[cid].members) if cid in after.states else set()
        for sid in b - a:
            entering[sid] += 1
        for sid in a - b:
            exiting[sid] += 1
    width = max((len(s) for s in ids), default=7)
    click.echo(f"{'segment':<{width}}  {'old':>8}  {'new':>8}  {'enter':>7}  {'exit':>7}")
    sizes_old, sizes_new = before.segment_sizes(), after.segment_sizes()
    for sid in ids:
        mark = "" if sid in after.rules.by_id else "  (removed)"
        if sid not in before.rules.by_id:
            mark = "  (new)"
        click.echo(f"{sid:<{width}}  {sizes_old.get(sid, 0):>8}  {sizes_new.get(sid, 0):>8}  "
                   f"{entering[sid]:>+7}  {-exiting[sid]:>+7}{mark}")
    click.echo(f"customers: {len(after.states)}; rules_version {before.rules.version} -> "
               f"{after.rules.version}")
    from segmenter.commands.dry_run import movers, report_movers

    moving = movers(before, after)
    report_movers(moving, fired[0], fired[1], show, click.echo)
    if out_path is not None:
        import orjson

        try:
            with open(out_path, "wb") as out:
                for mover in moving:
                    out.write(orjson.dumps(mover) + b"\n")
        except OSError as exc:
            click.echo(f"error: cannot write {out_path}: {exc.strerror}", err=True)
            raise SystemExit(2) from exc


@rules.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True,
              help="Re-evaluation under this version updates state but emits no changes "
                   "(for a definition edit that must not fire follow-ups).")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers [SEGMENTER_KAFKA_BOOTSTRAP].")
@click.option("--topic-prefix", help="Topic prefix [SEGMENTER_TOPIC_PREFIX].")
def publish(file: Path, quiet: bool, kafka_bootstrap: str | None,
            topic_prefix: str | None) -> None:
    """Validate FILE and publish it to the compacted `segmenter-rules` topic: every worker
    switches to it without a restart and re-evaluates all its customers."""
    import asyncio

    from streams.runtime.settings import Settings

    try:
        rule_file = load_rules(file)
    except RuleFileError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{file}: not published", err=True)
        raise SystemExit(1) from exc
    settings = Settings.from_env(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    asyncio.run(publish_rules(settings, file.read_text(encoding="utf-8"), str(file), quiet,
                              rule_file.model_files))
    click.echo(f"published {rule_file.name!r} {rule_file.content_hash}"
               f"{' (quiet)' if quiet else ''} to {settings.topic('segmenter-rules')}")


async def publish_rules(settings: object, text: str, source: str, quiet: bool = False,
                        models: Mapping[str, bytes] | None = None) -> None:
    """Produce one rules record (acks=all); creates the topics if they are missing."""
    from streams.runtime.app import ensure_topics
    from streams.runtime.rules_topic import publish
    from streams.runtime.settings import Settings

    assert isinstance(settings, Settings)
    await ensure_topics(settings)
    await publish(settings, text, source, quiet, models)
