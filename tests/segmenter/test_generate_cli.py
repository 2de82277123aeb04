"""`segmenter generate`: JSON lines out, deterministic, bad records, argument errors."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from model.events import Event, Rejection, encode_event, parse_event
from segmenter.cli import main
from segmenter.commands.generate import generate as generate_command
from streams.generator import DAY_MS, generate

START = "2024-05-01T00:00:00Z"
START_MS = 1_714_521_600_000


def run(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, ["generate", *args])
    return result.exit_code, result.stdout_bytes, result.stderr


def test_command_object() -> None:
    assert generate_command.name == "generate"


def test_writes_jsonl_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    code, _, err = run("--customers", "50", "--events", "1000", "--seed", "5", "--start", START,
                       "--days", "10", "--out", str(out))
    assert code == 0, err
    lines = out.read_bytes().splitlines()
    assert len(lines) == 1000
    expected = generate(customers=50, events=1000, seed=5, start_ms=START_MS, days=10)
    assert lines == [encode_event(e) for e in expected]
    assert "wrote 1000 records" in err


def test_stdout_and_determinism() -> None:
    args = ("--customers", "20", "--events", "300", "--seed", "9", "--start",
            "2024-05-01T02:00:00+02:00", "--currency", "EUR")
    code, first, _ = run(*args)
    assert code == 0
    code, second, _ = run(*args, "--out", "-")
    assert code == 0
    assert first == second
    events = [parse_event(line, currency="EUR") for line in first.splitlines()]
    assert len(events) == 300
    assert all(isinstance(e, Event) for e in events)
    assert min(e.ts for e in events if isinstance(e, Event)) >= START_MS


def test_bad_fraction(tmp_path: Path) -> None:
    out = tmp_path / "mixed.jsonl"
    code, _, err = run("--customers", "30", "--events", "2000", "--seed", "1", "--start", START,
                       "--bad-fraction", "0.25", "--out", str(out))
    assert code == 0, err
    parsed = [parse_event(line, currency="PLN") for line in out.read_bytes().splitlines()]
    good = sum(1 for p in parsed if isinstance(p, Event))
    bad = sum(1 for p in parsed if isinstance(p, Rejection))
    assert good == 2000
    assert 0.2 < bad / (good + bad) < 0.3
    assert f"{bad} invalid" in err


def test_default_start_ends_near_now() -> None:
    code, data, _ = run("--customers", "10", "--events", "200", "--seed", "2", "--days", "3")
    assert code == 0
    now = int(time.time() * 1000)
    events = [parse_event(line, currency="PLN") for line in data.splitlines()]
    stamps = [e.ts for e in events if isinstance(e, Event)]
    assert len(stamps) == 200
    assert min(stamps) >= now - 3 * DAY_MS - 3_600_000 - 60_000
    assert max(stamps) <= now


def test_erasures_flag() -> None:
    args = ("--customers", "100", "--events", "40000", "--seed", "3", "--start", START)
    code, data, _ = run(*args)
    assert code == 0 and b'"customer_erased"' not in data
    code, data, _ = run(*args, "--erasures")
    assert code == 0 and b'"customer_erased"' in data


def test_argument_errors() -> None:
    base = ["--customers", "10", "--events", "10", "--seed", "1"]
    for extra in (["--start", "2024-05-01T00:00:00"], ["--start", "yesterday"],
                  ["--currency", "pln"], ["--bad-fraction", "1"], ["--days", "0"],
                  ["--customers", "0"]):
        code, _, err = run(*base, *extra)
        assert code == 2, extra
        assert "Invalid value" in err, extra
    code, _, err = run("--events", "10", "--seed", "1")
    assert code == 2
    assert "--customers" in err


def test_help() -> None:
    code, data, _ = run("--help")
    assert code == 0
    text = data.decode()
    for option in ("--customers", "--events", "--seed", "--start", "--days", "--currency",
                   "--bad-fraction", "--out"):
        assert option in text
