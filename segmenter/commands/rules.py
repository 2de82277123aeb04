"""`segmenter rules ...`: work with rule files (validate; more subcommands join this group)."""

from __future__ import annotations

from pathlib import Path

import click

from rules.loader import load_rules
from segmenter.errors import RuleFileError


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
