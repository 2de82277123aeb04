"""`segmenter segments ...`: work with segments' audiences (each subcommand in its own module:
`outcome` in segments_outcome.py)."""

from __future__ import annotations

import click

from segmenter.commands.segments_outcome import outcome


@click.group()
def segments() -> None:
    """Work with segments: the outcome report of a control group, ..."""


segments.add_command(outcome)
