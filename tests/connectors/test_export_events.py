"""`segmenter export-events` (issue 14) on the real broker: the input topics back into the JSONL
log; the interval filter, sorting by ts, the end offsets at the start, and the round trip
through `simulate` (the exported log gives the same changes as the original one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from model.changes import format_ts
from model.events import encode_event
from segmenter.cli import main
from streams.generator import generate
from tests.streams.workers import DAY, RETAIL, T0, cluster, produce, wire
from tests.terminal import on_a_terminal

pytestmark = pytest.mark.integration


def simulate_changes(log: Path, tmp: Path) -> list[dict[str, object]]:
    out = tmp / f"{log.stem}.changes.jsonl"
    result = CliRunner().invoke(main, ["simulate", "--rules", str(RETAIL), "--events", str(log),
                                       "--wall-now", "2030-01-01T00:00:00Z", "--quiet",
                                       "--out-changes", str(out)])
    assert result.exit_code == 0, result.output
    return [orjson.loads(x) for x in out.read_bytes().splitlines()]


async def test_export_round_trips_through_simulate(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str,
        tmp_path: Path) -> None:
    events = sorted(generate(customers=40, events=1500, seed=4, start_ms=T0, days=40,
                             profile_fraction=0.05), key=lambda e: e.ts)
    since, until = T0 + 5 * DAY, T0 + 35 * DAY
    inside = [e for e in events if since <= e.ts <= until]
    assert 0 < len(inside) < len(events)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c:
        # produced out of order (by topic), so that sorting by ts is the exporter's work
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in
                                        sorted(map(wire, events), key=lambda r: r[0])))
        out = tmp_path / "exported.jsonl"
        env = {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
               "SEGMENTER_TOPIC_PREFIX": f"{unique}."}
        result = await asyncio.to_thread(CliRunner().invoke, main, [
            "export-events", "--since", format_ts(since), "--until", format_ts(until),
            "--out", str(out)], env=env)
        assert result.exit_code == 0, result.output
        assert f"records read: {len(events)}; events written: {len(inside)}" in result.output
        exported = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        # a second export sees only what was there at its start; later events come next time
        late = events[:3]
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, late)))
        again = await asyncio.to_thread(
            CliRunner().invoke, main, ["export-events", "--since", format_ts(T0), "--out",
                                       str(tmp_path / "all.jsonl"), "--quiet"], env=env)
        assert again.exit_code == 0, again.output
        assert len((tmp_path / "all.jsonl").read_bytes().splitlines()) == len(events) + 3
    assert [e["ts"] for e in exported] == sorted(e["ts"] for e in exported)
    assert sorted(e["event_id"] for e in exported) == sorted(e.event_id for e in inside)
    original = tmp_path / "original.jsonl"
    original.write_bytes(b"".join(encode_event(e) + b"\n" for e in inside))
    assert simulate_changes(out, tmp_path) == simulate_changes(original, tmp_path)


async def test_export_shows_a_progress_bar_on_a_terminal(
        kafka_bootstrap: str, kafka_admin: AIOKafkaAdminClient, unique: str,
        tmp_path: Path) -> None:
    """With standard error on a terminal, the installed command draws its progress bar (this
    raised TypeError: rich's Progress has no `stderr` argument) and exports every event."""
    import sys

    events = sorted(generate(customers=10, events=200, seed=5, start_ms=T0, days=10),
                    key=lambda e: e.ts)
    async with cluster(kafka_bootstrap, kafka_admin, f"{unique}.", tmp_path) as c:
        await produce(kafka_bootstrap, ((c.topic(t), k, v) for t, k, v in map(wire, events)))
        out = tmp_path / "exported.jsonl"
        exe = str(Path(sys.executable).parent / "segmenter")
        code, terminal, stdout = await asyncio.to_thread(
            on_a_terminal, [exe, "export-events", "--since", format_ts(T0), "--out", str(out)],
            {"SEGMENTER_KAFKA_BOOTSTRAP": kafka_bootstrap,
             "SEGMENTER_TOPIC_PREFIX": f"{unique}."})
    assert code == 0, terminal
    assert "Traceback" not in terminal
    assert "exporting" in terminal, terminal
    assert f"events written: {len(events)}" in stdout + terminal
    assert len(out.read_bytes().splitlines()) == len(events)
