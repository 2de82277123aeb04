"""`segmenter segments export SEGMENT --format csv|jsonl [--out FILE]`: a segment's current
members from the Redis view (connectors.audience.export_members), with each member's label,
entered_at and the `why` values of the change that entered them."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import IO

import click

from connectors.redis_view import DEFAULT_PREFIX
from model.errors import SegmenterError
from streams.runtime.settings import Settings

PROGRESS_FROM = 10_000  # members: a larger segment's export reports progress on stderr
PROGRESS_EVERY = 1.0  # seconds between two progress lines


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.command()
@click.argument("segment")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv",
              show_default=True, help="csv: customer_id, label, entered_at, then a column per "
              "why term; jsonl: one JSON object per member.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: standard output).")
@click.option("--redis-url", help="Redis URL of the view [SEGMENTER_REDIS_URL].")
@click.option("--prefix", envvar="SEGMENTER_REDIS_PREFIX", default=DEFAULT_PREFIX,
              show_default=True, help="Key prefix of the Redis view [SEGMENTER_REDIS_PREFIX].")
@click.option("--quiet", is_flag=True, help="No progress or summary on stderr.")
def export(segment: str, fmt: str, out_path: Path | None, redis_url: str | None, prefix: str,
           quiet: bool) -> None:
    """Export SEGMENT's current members from the Redis view (`segmenter redis run`).

    Each member once, in no particular order, with the segment's label, when they entered
    (RFC 3339 UTC) and the values of the rule's terms when they did (`why`). For segments of
    10,000 members and more, progress goes to stderr; a summary line always does (unless
    --quiet). Exit code 0, or 2 when Redis cannot be reached, the segment is unknown to the
    view, or the file cannot be written."""
    try:
        settings = Settings.from_env(redis_url=redis_url)
    except SegmenterError as exc:
        _fail(str(exc))
        return
    code, message = asyncio.run(_export(settings.redis_url, prefix, segment, fmt, out_path,
                                        quiet))
    if code:
        _fail(message)
    if not quiet:
        click.echo(message, err=True)


async def _export(url: str, prefix: str, segment: str, fmt: str, out_path: Path | None,
                  quiet: bool) -> tuple[int, str]:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    from connectors.audience import export_members, segment_size, unknown_segment, view_segments
    from connectors.redis_view import KeyLayout

    keys = KeyLayout(prefix)
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        try:
            known = await view_segments(client, keys)
        except (RedisError, OSError) as exc:
            return 2, f"cannot read the Redis view at {url}: {exc}"
        if segment not in known:
            if not known:
                return 2, (f"the Redis view at {url} has no segments under the prefix "
                           f"{prefix!r} (is `segmenter redis run --prefix {prefix}` running?)")
            return 2, unknown_segment(segment, known, f"the Redis view {prefix!r} at {url}")
        total = await segment_size(client, keys, segment)
        show = not quiet and total >= PROGRESS_FROM
        last = [time.monotonic()]

        def progress(done: int) -> None:
            if show and time.monotonic() - last[0] >= PROGRESS_EVERY:
                last[0] = time.monotonic()
                click.echo(f"exporting {segment}: {done:,} of about {total:,} members",
                           err=True)

        partial = None
        try:
            if out_path is None:
                out: IO[bytes] = sys.stdout.buffer
                n = await export_members(client, keys, segment, fmt, out, progress=progress)
                out.flush()
            else:
                partial = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
                with partial.open("wb") as out:
                    n = await export_members(client, keys, segment, fmt, out,
                                             progress=progress)
                partial.replace(out_path)
                partial = None
        except (RedisError, OSError) as exc:
            what = "Redis" if isinstance(exc, RedisError) else (exc.filename or "output")
            return 2, f"export of {segment} failed ({what}): {exc}"
        finally:
            if partial is not None:
                partial.unlink(missing_ok=True)
        where = "standard output" if out_path is None else str(out_path)
        return 0, f"exported {n:,} members of {segment} to {where} ({fmt})"
    finally:
        await client.aclose()
