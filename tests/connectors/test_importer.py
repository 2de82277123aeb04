"""File import: reading JSONL and mapped CSV, rate limiting, and producing to the real broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from connectors.events import EventRules, EventValidator, input_topics
from connectors.importer import (
    FileReader,
    LocalTimes,
    import_file,
    parse_constants,
    parse_mapping,
    time_zone,
)
from model.errors import ImportFileError
from model.events import Event, Rejection, parse_rfc3339
from segmenter.cli import main
from streams.generator import generate_raw
from streams.runtime.settings import Settings
from tests.kafka_helpers import consume_json, create_topics

VALIDATOR = EventValidator(EventRules("PLN"), check_clock=False)
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def test_an_event_past_the_wall_clock_is_refused_whatever_the_workers_clock() -> None:
    """With an event-clock worker (no too_late check), an event at 9999-12-31 would still move
    its partition's clock there: refused too_far_in_future against the wall clock."""
    now = 1_790_000_000.0
    body = {"event_id": "e", "customer_id": "c", "type": "page_view"}
    for check_clock in (False, True):
        validator = EventValidator(EventRules("PLN"), check_clock=check_clock,
                                   clock=lambda: now)
        far = validator.check_object({**body, "ts": "9999-12-31T23:59:59Z"})
        assert not isinstance(far, Event) and far.reason == "too_far_in_future"
        old = validator.check_object({**body, "ts": START_MS})
        assert isinstance(old, Event) != check_clock  # too_late only for wall-clock workers


def write_generated(path: Path, events: int, bad_fraction: float) -> list[bytes]:
    records = list(generate_raw(customers=20, events=events, seed=7, start_ms=START_MS, days=3,
                                currency="PLN", bad_fraction=bad_fraction))
    path.write_bytes(b"\n".join(records) + b"\n\n")
    return records


def test_mapping_and_constants_are_checked() -> None:
    assert parse_mapping(["total=amount", " who = customer_id", "town=attributes.city"]) == {
        "total": "amount", "who": "customer_id", "town": "attributes.city"}
    for bad in (["total"], ["=amount"], ["total=price"], ["x=attributes."]):
        with pytest.raises(ImportFileError):
            parse_mapping(bad)
    assert parse_constants(["type=purchase", "currency=PLN", "ts=1714521600000"]) == {
        "type": "purchase", "currency": "PLN", "ts": 1714521600000}
    with pytest.raises(ImportFileError):
        parse_constants(["items=[]"])


def test_csv_columns_are_mapped_and_typed(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "\ufefforder,who,when,total,currency,town,note\n"
        "o-1,c-1,2024-05-01T10:00:00Z,12.50,PLN,Kraków,x\n"
        "\n"
        "o-2,c-2,1714557600000,7,PLN,,\"multi\nline\"\n"
        "o-3,c-3,2024-05-01T11:00:00Z,lots,PLN,,\n", encoding="utf-8")
    reader = FileReader(path, "csv", parse_mapping(
        ["order=event_id", "who=customer_id", "when=ts", "total=amount", "town=attributes.city"]),
        parse_constants(["type=purchase"]))
    records = reader.read_batch(10)
    assert reader.read_batch(10) == []
    reader.close()
    assert [r.line for r in records] == [2, 4, 6]
    first, second, third = (r.obj for r in records)
    assert first == {"type": "purchase", "event_id": "o-1", "customer_id": "c-1",
                     "ts": "2024-05-01T10:00:00Z", "amount": 12.5, "currency": "PLN",
                     "attributes": {"city": "Kraków"}}
    assert second is not None and second["ts"] == 1714557600000 and second["amount"] == 7
    assert "attributes" not in second
    assert third is not None and third["amount"] == "lots"
    assert isinstance(VALIDATOR.check_object(first), Event)
    rejection = VALIDATOR.check_object(third)
    assert not isinstance(rejection, Event) and rejection.reason == "bad_type"


def test_csv_problems_are_reported_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ImportFileError, match="not in the header: zz"):
        FileReader(path, "csv", {"zz": "amount"})
    with pytest.raises(ImportFileError, match="no column maps"):
        FileReader(path, "csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFileError, match="empty CSV"):
        FileReader(empty, "csv", {"a": "amount"})


async def test_a_dry_run_counts_rejects_by_reason(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    records = write_generated(path, 300, 0.1)
    expected = Counter(str(r.reason) for raw in records
                       if not isinstance(r := VALIDATOR.check_bytes(raw), Event))
    assert expected  # the generator mixed bad records in
    reader = FileReader(path, "jsonl")
    rejects = tmp_path / "rejects.jsonl"
    with rejects.open("wb") as out:
        summary = await import_file(reader, VALIDATOR, settings=Settings.from_env(env={}),
                                    producer=None, rejects=out)
    reader.close()
    assert summary.read == len(records)
    assert summary.accepted == 300
    assert summary.rejected == expected
    lines = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert len(lines) == sum(expected.values())
    assert {"line", "reason", "message", "field", "record"} <= set(lines[0])


async def test_the_rate_limit_paces_production(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_generated(path, 40, 0.0)
    reader = FileReader(path, "jsonl")
    began = time.monotonic()
    summary = await import_file(reader, VALIDATOR, settings=Settings.from_env(env={}),
                                producer=None, rate=50)
    reader.close()
    elapsed = time.monotonic() - began
    assert summary.accepted == 40
    assert 0.6 <= elapsed < 5  # 40 events at 50/s: about 0.8 s


@pytest_asyncio.fixture(loop_scope="session")
async def topics(kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str
                 ) -> AsyncIterator[Settings]:
    settings = Settings.from_env(env={}, kafka_bootstrap=kafka_bootstrap,
                                 topic_prefix=f"{unique}.", partitions=2)
    names = input_topics(settings)
    await create_topics(kafka_admin, names, 2)
    yield settings
    await kafka_admin.delete_topics(names)


@pytest.mark.integration
async def test_import_produces_valid_events_to_their_topics(
        tmp_path: Path, topics: Settings, kafka_bootstrap: str) -> None:
    path = tmp_path / "events.jsonl"
    records = write_generated(path, 200, 0.05)
    good = [r for raw in records if isinstance(r := VALIDATOR.check_bytes(raw), Event)]
    per_topic = Counter(topics.topic(t) for t in
                        (("purchases" if e.type in ("purchase", "refund") else
                          "email-events" if e.type.startswith("email") else
                          "customer-profiles" if e.type.startswith(("profile", "customer"))
                          else "web-activity") for e in good))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        reader = FileReader(path, "jsonl")
        summary = await import_file(reader, VALIDATOR, settings=topics, producer=producer)
        reader.close()
    finally:
        await producer.stop()
    assert summary.accepted == 200
    landed = []
    for topic, count in per_topic.items():
        got = await consume_json(kafka_bootstrap, topic, count)
        landed.extend(got)
        assert all(r.key == r.value["customer_id"] for r in got)
    assert sorted(r.value["event_id"] for r in landed) == sorted(e.event_id for e in good)


@pytest.mark.integration
async def test_import_command_with_a_csv_file(
        tmp_path: Path, topics: Settings, kafka_bootstrap: str) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("id,customer,at,total\n"
                    "o-1,c-1,2024-05-01T10:00:00Z,10\n"
                    "o-2,c-2,2024-05-01T10:05:00Z,-3\n"
                    "o-3,c-1,2024-05-01T10:10:00Z,99.99\n")
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGMENTER_TOPIC_PREFIX": topics.topic_prefix}
    args = ["import", str(path), "--map", "id=event_id", "--map", "customer=customer_id",
            "--map", "at=ts", "--map", "total=amount", "--set", "type=purchase",
            "--set", "currency=EUR", "--rules", "rules/examples/minimal.yaml",
            "--clock", "event", "--rate", "1000"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args, env=env)
    assert result.exit_code == 1, result.output  # one record was rejected
    assert "imported 2 of 3 records" in result.output
    assert "negative_amount  1" in result.output
    got = await consume_json(kafka_bootstrap, topics.topic("purchases"), 2)
    assert sorted((r.key, r.value["event_id"], r.value["amount"]) for r in got) == [
        ("c-1", "o-1", 10), ("c-1", "o-3", 99.99)]

    usage = await asyncio.to_thread(CliRunner().invoke, main,
                                    ["import", str(path), "--currency", "EUR", "--map", "x"],
                                    env=env)
    assert usage.exit_code == 2 and "COLUMN=FIELD" in usage.output
    clean = tmp_path / "clean.jsonl"
    write_generated(clean, 20, 0.0)
    dry = await asyncio.to_thread(CliRunner().invoke, main,
                                  ["import", str(clean), "--currency", "PLN", "--dry-run",
                                   "--clock", "event"], env=env)
    assert dry.exit_code == 0 and "validated 20 of 20 records" in dry.output


def test_local_csv_times_are_read_in_the_given_time_zone(tmp_path: Path) -> None:
    """--timezone: local times get the zone's offset at that instant (winter and summer), a
    time the clocks skip and a cell that does not parse are refused with a reason, an
    ambiguous time is its first occurrence; RFC 3339 and epoch ms cells are kept."""
    warsaw = LocalTimes(time_zone("Europe/Warsaw"))
    assert warsaw.convert("2026-11-30 10:00") == "2026-11-30T10:00:00+01:00"
    assert warsaw.convert("2026-07-01T10:00:00.250") == "2026-07-01T10:00:00.250+02:00"
    assert warsaw.convert("2026-10-25 02:30") == "2026-10-25T02:30:00+02:00"
    assert warsaw.convert("2026-11-30T10:00:00Z") == "2026-11-30T10:00:00Z"
    gap = warsaw.convert("2026-03-29 02:30")
    assert isinstance(gap, Rejection) and gap.reason == "bad_timestamp" and gap.field == "ts"
    assert "does not exist in Europe/Warsaw" in gap.message
    garbage = warsaw.convert("30.11.2026 10:00")
    assert isinstance(garbage, Rejection) and "does not parse" in garbage.message
    dotted = LocalTimes(time_zone("America/New_York"), "%d.%m.%Y %H:%M")
    assert dotted.convert("30.11.2026 10:00") == "2026-11-30T10:00:00-05:00"
    naive = LocalTimes().convert("2026-11-30 10:00")
    assert isinstance(naive, Rejection) and "--timezone" in naive.message
    for bad in ("Europe/Warsw", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(ImportFileError, match="unknown time zone"):
            time_zone(bad)
    with pytest.raises(ImportFileError, match="give --timezone too"):
        LocalTimes(None, "%d.%m.%Y %H:%M")
    for bad_format in ("%d.%m.%Q", "%d.%m.%Y %"):
        with pytest.raises(ImportFileError, match="--ts-format"):
            LocalTimes(time_zone("UTC"), bad_format)

    path = tmp_path / "local.csv"
    path.write_text("event_id,customer_id,type,ts\n"
                    "e-1,c-1,page_view,2026-11-30 10:00\n"
                    "e-2,c-1,page_view,2026-03-29 02:15\n"
                    "e-3,c-1,page_view,1764493200000\n")
    reader = FileReader(path, "csv", local_times=warsaw)
    first, skipped, epoch = reader.read_batch()
    reader.close()
    assert first.rejection is None and first.obj is not None
    assert first.obj["ts"] == "2026-11-30T10:00:00+01:00"
    assert skipped.rejection is not None and skipped.line == 3
    assert epoch.rejection is None and epoch.obj is not None and epoch.obj["ts"] == 1764493200000
    with pytest.raises(ImportFileError, match="CSV files only"):
        FileReader(tmp_path / "local.csv", "jsonl", local_times=warsaw)


@pytest.mark.integration
async def test_import_command_reads_local_times_with_a_time_zone(
        tmp_path: Path, topics: Settings, kafka_bootstrap: str) -> None:
    path = tmp_path / "shop.csv"
    path.write_text("id,customer,at,total\n"
                    "o-1,c-1,2026-11-30 10:00,10\n"
                    "o-2,c-1,2026-07-01 10:00,20\n"
                    "o-3,c-2,2026-03-29 02:30,30\n"
                    "o-4,c-2,yesterday,40\n")
    env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "SEGMENTER_TOPIC_PREFIX": topics.topic_prefix}
    args = ["import", str(path), "--map", "id=event_id", "--map", "customer=customer_id",
            "--map", "at=ts", "--map", "total=amount", "--set", "type=purchase",
            "--set", "currency=PLN", "--currency", "PLN", "--clock", "event"]
    rejects = tmp_path / "rejects.jsonl"
    result = await asyncio.to_thread(CliRunner().invoke, main,
                                     [*args, "--timezone", "Europe/Warsaw", "--rejects",
                                      str(rejects)], env=env)
    assert result.exit_code == 1, result.output
    assert "imported 2 of 4 records" in result.output and "bad_timestamp  2" in result.output
    refused = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in refused] == [(4, "bad_timestamp"),
                                                          (5, "bad_timestamp")]
    assert "does not exist in Europe/Warsaw" in refused[0]["message"]
    assert "does not parse" in refused[1]["message"]
    got = await consume_json(kafka_bootstrap, topics.topic("purchases"), 2)
    assert sorted((r.value["event_id"], parse_rfc3339(r.value["ts"])) for r in got) == [
        ("o-1", 1_796_029_200_000), ("o-2", 1_782_892_800_000)]  # 09:00Z and 08:00Z

    for wrong, message in ((["--timezone", "Mars/Olympus"], "unknown time zone"),
                           (["--ts-format", "%d.%m.%Y"], "give --timezone too")):
        usage = await asyncio.to_thread(CliRunner().invoke, main, [*args, *wrong], env=env)
        assert usage.exit_code == 2 and message in usage.output, usage.output
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("")
    usage = await asyncio.to_thread(CliRunner().invoke, main,
                                    ["import", str(jsonl), "--currency", "PLN", "--timezone",
                                     "UTC"], env=env)
    assert usage.exit_code == 2 and "CSV files only" in usage.output
