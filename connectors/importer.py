"""File import: read events from JSONL or CSV, validate them like the ingest, produce them.

Unlike the HTTP ingest, an import is not all-or-nothing: valid events are produced, rejected
ones are counted by reason (and written to a rejects file when asked). Files are read in a
worker thread, a batch at a time, so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiokafka import AIOKafkaProducer

from connectors.events import EventValidator, topic_of
from model.errors import ImportFileError
from model.events import Event, Rejection, RejectReason, parse_rfc3339
from streams.runtime.settings import Settings

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv")
# Event fields a CSV column can be mapped to (plus attributes.<name>).
CSV_FIELDS = ("event_id", "customer_id", "type", "ts", "amount", "currency", "order_id",
              "items", "campaign_id", "session_id", "url", "sku", "category", "attributes")
_JSON_FIELDS = frozenset({"items", "attributes"})
BATCH_LINES = 2000
MAX_PENDING_SENDS = 20_000


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of the file: its line number and either the raw JSON line or a mapped
    object (CSV)."""

    line: int
    raw: bytes | None = None
    obj: dict[str, Any] | None = None
    rejection: Rejection | None = None  # refused while reading (a local time that does not parse)

    def value(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.obj)


def detect_format(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "jsonl"


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """['col=field', ...] -> {col: field}; ImportFileError for a malformed pair or an unknown
    field."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        column, target = column.strip(), target.strip()
        if not sep or not column or not target:
            raise ImportFileError(f"--map {pair!r}: write COLUMN=FIELD, e.g. order_total=amount")
        if target not in CSV_FIELDS and not (target.startswith("attributes.")
                                             and len(target) > len("attributes.")):
            raise ImportFileError(f"--map {pair!r}: unknown event field {target!r} (fields: "
                                  f"{', '.join(CSV_FIELDS)}, attributes.<name>)")
        mapping[column] = target
    return mapping


def parse_constants(pairs: Sequence[str]) -> dict[str, Any]:
    """['field=value', ...] -> fields every CSV record gets (unless its columns set them)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in CSV_FIELDS or name in _JSON_FIELDS:
            raise ImportFileError(f"--set {pair!r}: write FIELD=VALUE with FIELD one of "
                                  f"{', '.join(f for f in CSV_FIELDS if f not in _JSON_FIELDS)}")
        out[name] = _cell(name, value)
    return out


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # the validator reports it (bad_type) with the line number


def _cell(field_name: str, text: str) -> Any:
    if field_name == "amount":
        return _number(text)
    if field_name == "ts":
        stripped = text.strip()
        return int(stripped) if stripped.isdigit() else text
    if field_name in _JSON_FIELDS:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text  # reported as bad_type
    return text


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. Europe/Warsaw); ImportFileError if there is none."""
    try:
        if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ImportFileError(f"--timezone {name!r}: unknown time zone (give an IANA name such "
                              f"as Europe/Warsaw, America/New_York or UTC)") from exc


@dataclass(frozen=True, slots=True)
class LocalTimes:
    """How CSV `ts` cells without a zone offset are read: as wall-clock times of `zone`, in the
    ISO form `2026-11-30 10:00[:00[.000]]` (or `T` between) or, with `ts_format`, in that
    strptime format. Cells with an offset (RFC 3339) and epoch milliseconds are taken as is."""

    zone: ZoneInfo | None = None
    ts_format: str | None = None

    def __post_init__(self) -> None:
        if self.ts_format is not None:
            try:
                datetime.strptime("", self.ts_format)
            except ValueError as exc:
                if "directive" in str(exc) or "stray %" in str(exc):
                    raise ImportFileError(f"--ts-format {self.ts_format!r}: {exc} (strptime "
                                          f"directives, e.g. '%d.%m.%Y %H:%M')") from exc
        if self.ts_format is not None and self.zone is None and "%z" not in self.ts_format:
            raise ImportFileError(f"--ts-format {self.ts_format!r} reads local times: give "
                                  f"--timezone too (or put %z in the format)")

    def convert(self, text: str) -> str | Rejection:
        """The RFC 3339 text (with the zone's offset at that instant) of a local time, or why
        it cannot be read. Text that already is RFC 3339 with an offset is returned as is."""
        stripped = text.strip()
        if parse_rfc3339(stripped) is not None:
            return stripped
        try:
            if self.ts_format is not None:
                local = datetime.strptime(stripped, self.ts_format)
            else:
                local = datetime.fromisoformat(stripped)
        except ValueError:
            expected = (f"the format {self.ts_format!r}" if self.ts_format is not None else
                        "a local time like 2026-11-30 10:00 or 2026-11-30T10:00:00")
            return self._rejection(f"ts {text!r} does not parse as {expected}")
        if local.tzinfo is not None:
            return _rfc3339(local)
        if self.zone is None:
            return self._rejection(f"ts {text!r} has no zone offset: give --timezone ZONE "
                                   f"(e.g. Europe/Warsaw) to read local times")
        aware = local.replace(tzinfo=self.zone)
        # a time the clocks skip (spring forward) does not survive a round trip through UTC
        back = aware.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None)
        if back != local:
            return self._rejection(f"ts {text!r} does not exist in {self.zone.key} (the clocks "
                                   f"were moved forward over it)")
        return _rfc3339(aware)  # an ambiguous time (clocks moved back) is its first occurrence

    @staticmethod
    def _rejection(message: str) -> Rejection:
        return Rejection(str(RejectReason.BAD_TIMESTAMP), message, "ts")


def _rfc3339(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    if offset.microseconds or offset.seconds % 60:  # RFC 3339 offsets are whole minutes
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


class FileReader:
    """Reads records a batch at a time (blocking: call `read_batch` in a thread)."""

    def __init__(self, path: Path, fmt: str, mapping: Mapping[str, str] | None = None,
                 constants: Mapping[str, Any] | None = None, delimiter: str | None = None,
                 local_times: LocalTimes | None = None) -> None:
        if fmt not in FORMATS:
            raise ImportFileError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
        if local_times is not None and fmt != "csv" and (local_times.zone is not None
                                                         or local_times.ts_format is not None):
            raise ImportFileError("--timezone and --ts-format apply to CSV files only")
        self.local_times = local_times or LocalTimes()
        self.path = path
        self.format = fmt
        self.mapping = dict(mapping or {})
        self.constants = dict(constants or {})
        try:
            self.size = path.stat().st_size
            self._file: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self._line = 0
        self._rows: Iterator[list[str]] | None = None
        self._columns: list[tuple[int, str]] = []
        if fmt == "csv":
            self._open_csv(delimiter or ("\t" if path.suffix.lower() == ".tsv" else ","))

    def _open_csv(self, delimiter: str) -> None:
        text = io.TextIOWrapper(self._file, encoding="utf-8-sig", newline="")
        self._text = text
        self._rows = csv.reader(text, delimiter=delimiter)
        try:
            header = next(self._rows)
        except StopIteration as exc:
            raise ImportFileError(f"{self.path}: empty CSV file (a header line is needed)") \
                from exc
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ImportFileError(f"{self.path}: cannot read the CSV header: {exc}") from exc
        self._line = 1
        names = [h.strip() for h in header]
        missing = [c for c in self.mapping if c not in names]
        if missing:
            raise ImportFileError(f"{self.path}: --map names column(s) not in the header: "
                                  f"{', '.join(missing)} (header: {', '.join(names)})")
        for index, name in enumerate(names):
            target = self.mapping.get(name, name if name in CSV_FIELDS else None)
            if target is not None:
                self._columns.append((index, target))
        targets = {t for _, t in self._columns}
        if not targets and not self.constants:
            raise ImportFileError(f"{self.path}: no column maps to an event field; use --map "
                                  f"COLUMN=FIELD (header: {', '.join(names)})")

    @property
    def position(self) -> int:
        """Bytes read so far (for progress)."""
        try:
            return self._file.tell()
        except (OSError, ValueError):
            return self.size

    def close(self) -> None:
        self._file.close()

    def read_batch(self, limit: int = BATCH_LINES) -> list[SourceRecord]:
        """Up to `limit` records; [] at the end of the file."""
        if self._rows is None:
            return self._jsonl_batch(limit)
        return self._csv_batch(limit)

    def _jsonl_batch(self, limit: int) -> list[SourceRecord]:
        out: list[SourceRecord] = []
        while len(out) < limit:
            line = self._file.readline()
            if not line:
                break
            self._line += 1
            stripped = line.strip()
            if stripped:
                out.append(SourceRecord(self._line, raw=stripped))
        return out

    def _csv_batch(self, limit: int) -> list[SourceRecord]:
        assert self._rows is not None
        out: list[SourceRecord] = []
        while len(out) < limit:
            start = self._text_line() + 1  # a quoted cell may span lines: report the first
            try:
                row = next(self._rows)
            except StopIteration:
                break
            except (UnicodeDecodeError, csv.Error) as exc:
                raise ImportFileError(f"{self.path}: line {start}: {exc}") from exc
            if not any(cell.strip() for cell in row):
                continue
            obj: dict[str, Any] = dict(self.constants)
            for index, target in self._columns:
                if index >= len(row) or row[index] == "":
                    continue
                value = row[index]
                if target.startswith("attributes."):
                    attributes = obj.setdefault("attributes", {})
                    if isinstance(attributes, dict):
                        attributes[target[len("attributes."):]] = value
                else:
                    obj[target] = _cell(target, value)
            rejection = None
            ts = obj.get("ts")
            if isinstance(ts, str):
                converted = self.local_times.convert(ts)
                if isinstance(converted, Rejection):
                    rejection = converted
                else:
                    obj["ts"] = converted
            out.append(SourceRecord(start, obj=obj, rejection=rejection))
        return out

    def _text_line(self) -> int:
        return int(getattr(self._rows, "line_num", 0))


@dataclass
class ImportSummary:
    read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class RateLimiter:
    """At most `rate` acquisitions per second on average (no bursts beyond one batch)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self._clock = clock
        self._next = clock()

    async def acquire(self, n: int = 1) -> None:
        now = self._clock()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next, now) + n / self.rate


Progress = Callable[[int, ImportSummary], Awaitable[None] | None]


async def import_file(
    reader: FileReader,
    validator: EventValidator,
    *,
    settings: Settings,
    producer: AIOKafkaProducer | None,
    rate: float | None = None,
    rejects: IO[bytes] | None = None,
    progress: Progress | None = None,
    batch_lines: int = BATCH_LINES,
) -> ImportSummary:
    """Validate every record and produce the valid ones (keyed by customer id, to their type's
    topic). `producer=None` is a dry run. Returns once Kafka acknowledged every event."""
    began = time.perf_counter()
    summary = ImportSummary()
    limiter = RateLimiter(rate) if rate else None
    pending: list[asyncio.Future[Any]] = []
    # with a rate, about ten batches a second keep the pace smooth
    step = max(1, min(batch_lines, int(rate // 10))) if rate else batch_lines
    while True:
        batch = await asyncio.to_thread(reader.read_batch, step)
        if not batch:
            break
        summary.read += len(batch)
        accepted: list[tuple[Event, bytes]] = []
        rejected_lines: list[bytes] = []
        for record in batch:
            if record.rejection is not None:
                result: Event | Rejection = record.rejection
            elif record.raw is not None:
                result = validator.check_bytes(record.raw)
            else:
                assert record.obj is not None
                result = validator.check_object(record.obj)
            if isinstance(result, Event):
                accepted.append((result, record.value()))
                continue
            summary.rejected[str(result.reason)] += 1
            if rejects is not None:
                rejected_lines.append(orjson.dumps({
                    "line": record.line, "reason": str(result.reason),
                    "message": result.message, "field": result.field,
                    "record": record.raw.decode("utf-8", "replace")
                    if record.raw is not None else record.obj}) + b"\n")
        if rejected_lines and rejects is not None:
            await asyncio.to_thread(rejects.writelines, rejected_lines)
        if limiter is not None and accepted:
            await limiter.acquire(len(accepted))
        if producer is not None:
            for event, value in accepted:
                pending.append(await producer.send(topic_of(settings, event), value,
                                                   key=event.customer_id.encode("utf-8")))
            if len(pending) >= MAX_PENDING_SENDS:
                await asyncio.gather(*pending)
                pending.clear()
        summary.accepted += len(accepted)
        if progress is not None:
            result_ = progress(reader.position, summary)
            if result_ is not None:
                await result_
    if pending:
        await asyncio.gather(*pending)
    summary.seconds = time.perf_counter() - began
    return summary
