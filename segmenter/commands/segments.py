"""`segmenter segments ...`: work with segments' audiences (each subcommand in its own module:
`outcome` in segments_outcome.py, `export` in segments_export.py)."""

from __future__ import annotations

import click

from segmenter.commands.segments_export import export
from segmenter.commands.segments_outcome import outcome


@click.group()
def segments() -> None:
    """Work with segments: export a segment's members, the outcome report of a control group."""


segments.add_command(export)
segments.add_command(outcome)
