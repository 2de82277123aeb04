"""Audiences read from the Redis view: a segment's members page by page (an `SSCAN` cursor on
its member set), a whole segment exported as CSV or JSON lines, its size history (the series the
view's apply script keeps next to the sizes) and the overlap between segments (`SINTERCARD`).

Shared by the worker's Query API (`/v1/segments/{id}/members`, `/v1/segments/{id}/history`,
`/v1/overlap`: routes that `segmenter worker` adds to the worker's web server, see
`connectors.audience_web`), the dashboard (`/api/segments/{id}/...`, `/api/overlap`) and
`segmenter segments export`. The keys are documented in docs/redis.md; the HTTP answers in
README.md ("Audiences: members, history, overlap") and docs/dashboard.md.
"""

from __future__ import annotations

import csv
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import IO, Any

import orjson
import redis.asyncio as aioredis

from connectors.redis_view import (
    DEFAULT_SIZES_HOUR_KEEP,
    DEFAULT_SIZES_MINUTE_KEEP,
    SIZE_RESOLUTIONS,
    KeyLayout,
)

DEFAULT_LIMIT = 100  # members per page when `limit` is not given
MAX_LIMIT = 1000  # the largest `limit` accepted
EXPORT_BATCH = 1000  # members read per round trip by an export
MAX_OVERLAP = 50  # segments in one overlap matrix (1,225 intersections)
KEEP = {"minute": DEFAULT_SIZES_MINUTE_KEEP, "hour": DEFAULT_SIZES_HOUR_KEEP}
EXPORT_FORMATS = ("csv", "jsonl")
CSV_FIXED = ("customer_id", "label", "entered_at")
_CURSOR = re.compile(r"[0-9]{1,20}")
_SEGMENT = re.compile(r"[a-z][a-z0-9_]*")


class AudienceError(ValueError):
    """A bad request parameter (cursor, limit, resolution, segment list): HTTP 400."""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def parse_cursor(value: str | None) -> int:
    """The `cursor` parameter: absent or `0` starts a scan; otherwise a `next_cursor` given by
    an earlier page (a decimal SSCAN cursor)."""
    if value is None or value == "":
        return 0
    if not _CURSOR.fullmatch(value) or int(value) >= 2**64:
        raise AudienceError("cursor must be a next_cursor value from an earlier page "
                            "(a decimal number; 0 or none starts over)")
    return int(value)


def parse_limit(value: str | None) -> int:
    """The `limit` parameter: 1..MAX_LIMIT, DEFAULT_LIMIT when absent."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise AudienceError(f"limit must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise AudienceError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def parse_resolution(value: str | None) -> str:
    resolution = value or "minute"
    if resolution not in SIZE_RESOLUTIONS:
        raise AudienceError("resolution must be minute or hour")
    return resolution


def parse_segments(value: str | None) -> list[str]:
    """A comma-separated segment list (empty: every segment)."""
    wanted = [s.strip() for s in (value or "").split(",") if s.strip()]
    bad = [s for s in wanted if not _SEGMENT.fullmatch(s)]
    if bad:
        raise AudienceError(f"not a segment id: {bad[0]!r}")
    wanted = list(dict.fromkeys(wanted))
    if len(wanted) > MAX_OVERLAP:
        raise AudienceError(f"at most {MAX_OVERLAP} segments at once")
    return wanted


async def view_segments(client: aioredis.Redis, keys: KeyLayout) -> set[str]:
    """The segments the view knows (a field in the sizes hash: ever had a member)."""
    return {_text(k) for k in await client.hkeys(keys.sizes)}


def unknown_segment(segment: str, known: set[str],
                    where: str = "the rules in force or the Redis view") -> str:
    """The message of a 404 / exit 2 for a segment that `where` does not know."""
    listed = ", ".join(sorted(known)[:20]) or "none"
    more = "" if len(known) <= 20 else f" and {len(known) - 20} more"
    return f"no segment {segment!r} in {where} (known: {listed}{more})"


# ------------------------------------------------------------------------- members


async def member_rows(client: aioredis.Redis, keys: KeyLayout, segment: str,
                      ids: Sequence[str], label: str | None = None) -> list[dict[str, Any]]:
    """`{customer_id, label, entered_at, why}` of each id, from the customer's hash (its
    `seg:`, `entered:` and `why:` fields for `segment`). An id no longer in the segment (it
    left between the scan and this read) is dropped. `label` fills in a label the view lacks.
    `entered_at` / `why` are None when the view did not see the change that entered (a view
    started after compaction)."""
    if not ids:
        return []
    fields = (f"seg:{segment}", f"entered:{segment}", f"why:{segment}")
    async with client.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hmget(keys.customer(cid), fields)
        answers = await pipe.execute()
    rows = []
    for cid, (meta_raw, entered, why_raw) in zip(ids, answers, strict=True):
        if meta_raw is None:
            continue  # left the segment (or was erased) since the scan saw it
        meta = orjson.loads(meta_raw) if meta_raw else {}
        rows.append({
            "customer_id": cid,
            "label": (meta.get("label") if isinstance(meta, dict) else None) or label,
            "entered_at": None if entered is None else _text(entered),
            "why": None if why_raw is None else orjson.loads(why_raw),
        })
    return rows


async def scan_ids(client: aioredis.Redis, keys: KeyLayout, segment: str, cursor: int,
                   limit: int) -> tuple[list[str], int]:
    """Member ids from `cursor` on: SSCAN steps until at least `limit` ids or the end (cursor
    0). Redis decides how many ids a step returns: a page may hold a few more than `limit`, and
    a set small enough for Redis's compact encoding (up to 128 ids, 512 all-integer ids) comes
    whole in one step."""
    key = keys.members(segment)
    ids: dict[str, None] = {}
    while True:
        cursor, batch = await client.sscan(key, cursor, count=max(1, limit - len(ids)))
        for m in batch:
            ids[_text(m)] = None
        if cursor == 0 or len(ids) >= limit:
            return list(ids), int(cursor)


async def segment_size(client: aioredis.Redis, keys: KeyLayout, segment: str) -> int:
    return int(await client.hget(keys.sizes, segment) or 0)


async def members_page(client: aioredis.Redis, keys: KeyLayout, segment: str, *,
                       cursor: int = 0, limit: int = DEFAULT_LIMIT,
                       label: str | None = None) -> dict[str, Any]:
    """One page: `{segment, size, members: [...], next_cursor}` (`next_cursor` None at the end).

    The SSCAN guarantee: a full scan (from cursor 0 until `next_cursor` is None) returns every
    customer who was a member for the whole scan; one who joined or left during it may or may
    not be returned; one may come twice (when Redis resizes the set meanwhile), never a
    customer who was not a member when their page was read."""
    ids, nxt = await scan_ids(client, keys, segment, cursor, limit)
    rows = await member_rows(client, keys, segment, ids, label)
    return {"segment": segment, "size": await segment_size(client, keys, segment),
            "members": rows, "next_cursor": None if nxt == 0 else str(nxt)}


async def iter_members(client: aioredis.Redis, keys: KeyLayout, segment: str, *,
                       batch: int = EXPORT_BATCH, label: str | None = None
                       ) -> AsyncIterator[list[dict[str, Any]]]:
    """Every member, a batch at a time (a full SSCAN; ids seen before are skipped, so each
    customer comes once: memory grows with the segment, about 100 bytes per member)."""
    seen: set[str] = set()
    cursor = 0
    while True:
        ids, cursor = await scan_ids(client, keys, segment, cursor, batch)
        fresh = [i for i in ids if i not in seen]
        seen.update(fresh)
        rows = await member_rows(client, keys, segment, fresh, label)
        if rows:
            yield rows
        if cursor == 0:
            return


def _cell(value: Any) -> str:
    """A why value in a CSV cell: text as is, numbers and booleans as JSON (`true`), lists and
    objects as JSON, none as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


async def export_members(client: aioredis.Redis, keys: KeyLayout, segment: str, fmt: str,
                         out: IO[bytes], *, label: str | None = None,
                         batch: int = EXPORT_BATCH,
                         progress: Callable[[int], None] | None = None) -> int:
    """Write every member of `segment` to `out`; returns how many.

    - `jsonl`: one `{"customer_id", "label", "entered_at", "why"}` object per line;
    - `csv` (RFC 4180, UTF-8, CRLF): a header `customer_id,label,entered_at` then one column
      per `why` term (the term's text, e.g. `purchase_amount(180d)`, in the order first met),
      an empty cell where a member has no value for a term. The rows are spooled to a
      temporary file first, since the term columns are known only after the last member.

    `progress(done)` is called after each batch read from Redis."""
    if fmt not in EXPORT_FORMATS:
        raise AudienceError("format must be csv or jsonl")
    done = 0
    if fmt == "jsonl":
        async for rows in iter_members(client, keys, segment, batch=batch, label=label):
            out.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            done += len(rows)
            if progress is not None:
                progress(done)
        return done
    terms: dict[str, None] = {}
    with tempfile.TemporaryFile() as spool:
        async for rows in iter_members(client, keys, segment, batch=batch, label=label):
            for r in rows:
                if isinstance(r["why"], dict):
                    terms.update(dict.fromkeys(r["why"]))
                spool.write(orjson.dumps(r) + b"\n")
            done += len(rows)
            if progress is not None:
                progress(done)
        spool.seek(0)
        columns = list(terms)
        text = _Encoder(out)
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow([*CSV_FIXED, *columns])
        for line in spool:
            r = orjson.loads(line)
            why = r["why"] if isinstance(r["why"], dict) else {}
            writer.writerow([r["customer_id"], r["label"] or "", r["entered_at"] or "",
                             *(_cell(why.get(t)) for t in columns)])
    return done


class _Encoder:
    """A text sink for csv.writer over a binary file (UTF-8)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, text: str) -> int:
        return self.out.write(text.encode("utf-8"))


# ------------------------------------------------------------------------- size history


async def size_history(client: aioredis.Redis, keys: KeyLayout, segment: str,
                       resolution: str = "minute", now: float | None = None) -> dict[str, Any]:
    """`{segment, resolution, step, since, until, size, points}`: `points` = [[bucket start
    (epoch s), size at the end of that bucket], ...] oldest first, only buckets in which the
    size changed (between two points the size is the earlier one's); the first may be older
    than `since` (the size the window starts with)."""
    step = SIZE_RESOLUTIONS[resolution]
    until = int(time.time() if now is None else now)
    until -= until % step
    since = until - KEEP[resolution]
    raw = await client.zrange(keys.size_series(segment, resolution), 0, -1)
    points: list[list[int]] = []
    for member in raw:
        bucket, _, size = _text(member).partition(":")  # type: ignore[arg-type]
        points.append([int(bucket), int(size)])
    older = [p for p in points if p[0] <= since]
    points = older[-1:] + [p for p in points if p[0] > since]
    return {"segment": segment, "resolution": resolution, "step": step, "since": since,
            "until": until, "size": await segment_size(client, keys, segment),
            "points": points}


# ------------------------------------------------------------------------- overlap


async def overlap(client: aioredis.Redis, keys: KeyLayout, segments: Sequence[str]
                  ) -> dict[str, Any]:
    """Pairwise overlap of `segments` from their member sets: `{segments, sizes, both: [[...]],
    jaccard: [[...]]}`. `both[i][j]` = customers in both (the segment's size on the diagonal),
    `jaccard[i][j]` = both / in either (None when both are empty).

    Cost: SINTERCARD walks the smaller set of each pair, and Redis runs nothing else meanwhile.
    The commands are pipelined, not one MULTI, so the view's writes go on between two pairs
    (a MULTI over 50 large segments would hold Redis for seconds); a change applied during the
    read may make two cells disagree by that change."""
    segs = list(segments)[:MAX_OVERLAP]
    pairs = [(i, j) for i in range(len(segs)) for j in range(i + 1, len(segs))]
    async with client.pipeline(transaction=False) as pipe:
        for s in segs:
            pipe.scard(keys.members(s))
        for i, j in pairs:
            pipe.execute_command("SINTERCARD", 2, keys.members(segs[i]), keys.members(segs[j]))
        answers = await pipe.execute()
    sizes = [int(n) for n in answers[:len(segs)]]
    both = [[sizes[i] if i == j else 0 for j in range(len(segs))] for i in range(len(segs))]
    for (i, j), n in zip(pairs, answers[len(segs):], strict=True):
        both[i][j] = both[j][i] = int(n)

    def jaccard(i: int, j: int) -> float | None:
        either = sizes[i] + sizes[j] - both[i][j]
        return None if either == 0 else round(both[i][j] / either, 6)

    return {"segments": segs, "sizes": dict(zip(segs, sizes, strict=True)), "both": both,
            "jaccard": [[jaccard(i, j) for j in range(len(segs))] for i in range(len(segs))]}
