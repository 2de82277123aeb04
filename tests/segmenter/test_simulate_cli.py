"""`segmenter simulate` (issue 3, section 5): replay a JSONL log with an event clock through a rule
file; state, changes and rejects out; --until; exit codes; the summary."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from model.changes import format_ts
from model.events import Event, encode_event
from rules.loader import load_rules
from segmenter.cli import main
from streams.generator import generate, generate_raw
from tests.factories import DAY, HOUR, T0, event, purchase, rules_yaml, segment

ROOT = Path(__file__).resolve().parents[2]
RETAIL = ROOT / "rules" / "examples" / "retail.yaml"
RFC3339_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CHANGE_KEYS = {"customer_id", "seq", "at", "cause", "rules_version", "entered", "exited",
               "segments", "groups", "details"}


def simulate(*args: str, input: bytes | None = None) -> tuple[int, str, bytes]:
    result = CliRunner().invoke(main, ["simulate", *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr, result.stdout_bytes


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_events(path: Path, events: list[Event] | list[bytes]) -> Path:
    path.write_bytes(b"".join((e if isinstance(e, bytes) else encode_event(e)) + b"\n"
                              for e in events))
    return path


@pytest.fixture(scope="module")
def retail_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The retail example on a small generated log, all outputs written."""
    d = tmp_path_factory.mktemp("retail")
    log = write_events(d / "events.jsonl", list(generate(
        customers=60, events=3000, seed=3, start_ms=T0, days=120, profile_fraction=0.02)))
    code, err, _ = simulate("--rules", str(RETAIL), "--events", str(log),
                            "--out-state", str(d / "state.jsonl"),
                            "--out-changes", str(d / "changes.jsonl"),
                            "--out-rejects", str(d / "rejects.jsonl"))
    return {"code": code, "stderr": err, "state": jsonl(d / "state.jsonl"),
            "changes": jsonl(d / "changes.jsonl"), "rejects": jsonl(d / "rejects.jsonl")}


def test_retail_example_runs(retail_run: dict[str, Any]) -> None:
    assert retail_run["code"] == 0, retail_run["stderr"]
    assert retail_run["changes"]
    assert retail_run["rejects"] == []


def test_state_lines(retail_run: dict[str, Any]) -> None:
    ids = {s.id for s in load_rules(RETAIL).segments}
    states = retail_run["state"]
    assert len(states) > 30
    assert len({s["customer_id"] for s in states}) == len(states)
    for line in states:
        assert set(line) == {"customer_id", "segments", "metrics"}
        assert line["segments"] == sorted(line["segments"])
        assert set(line["segments"]) <= ids
        assert isinstance(line["metrics"], dict) and line["metrics"]
    assert any(line["segments"] for line in states)
    # the state agrees with the last change of each customer
    last: dict[str, list[str]] = {}
    for ch in retail_run["changes"]:
        last[ch["customer_id"]] = ch["segments"]
    for line in states:
        assert line["segments"] == last.get(line["customer_id"], [])


def test_change_records_have_the_spec_fields(retail_run: dict[str, Any]) -> None:
    rules = load_rules(RETAIL)
    by_id = {s.id: s for s in rules.segments}
    version = "sha256:" + hashlib.sha256(RETAIL.read_bytes()).hexdigest()
    seqs: dict[str, list[int]] = defaultdict(list)
    kinds: Counter[str] = Counter()
    for ch in retail_run["changes"]:
        assert set(ch) == CHANGE_KEYS
        seqs[ch["customer_id"]].append(ch["seq"])
        assert RFC3339_MS_Z.fullmatch(ch["at"]), ch["at"]
        assert ch["rules_version"] == version
        cause = ch["cause"]
        kinds[cause["kind"]] += 1
        assert cause["kind"] in ("event", "time")
        if cause["kind"] == "event":
            assert set(cause) == {"kind", "event_id", "event_type", "event_ts"}
            assert RFC3339_MS_Z.fullmatch(cause["event_ts"])
            assert cause["event_ts"] <= ch["at"]
        else:
            assert cause == {"kind": "time"}
        entered, exited, segments = ch["entered"], ch["exited"], ch["segments"]
        assert entered or exited
        assert entered == sorted(entered) and exited == sorted(exited)
        assert segments == sorted(segments)
        assert set(entered) <= set(segments)
        assert not set(exited) & set(segments)
        assert set(ch["details"]) == set(entered) | set(exited)
        for sid, detail in ch["details"].items():
            defn = by_id[sid]
            assert detail["label"] == defn.label
            assert detail["color"] == defn.color
            assert detail["icon"] == defn.icon
            assert detail["actions"] == dict(defn.actions)
            assert isinstance(detail["why"], dict) and detail["why"]
        for group, move in ch["groups"].items():
            assert set(move) == {"from", "to"}
            assert move["from"] != move["to"]
            members = [s.id for s in rules.segments if s.group == group]
            assert move["to"] is None or (move["to"] in segments and move["to"] in members)
            assert move["from"] is None or move["from"] in exited
    for cid, s in seqs.items():
        assert s == list(range(1, len(s) + 1)), cid
    assert kinds["event"] and kinds["time"]
    assert any(ch["groups"] for ch in retail_run["changes"])


def test_summary_on_stderr(retail_run: dict[str, Any]) -> None:
    err = retail_run["stderr"]
    assert "events applied: 3000" in err
    assert "events rejected: 0" in err
    assert f"customers: {len(retail_run['state'])}" in err
    assert f"segment changes: {len(retail_run['changes'])}" in err
    sizes = Counter(s for line in retail_run["state"] for s in line["segments"])
    m = re.search(r"segment sizes: (.*)", err)
    assert m is not None
    listed = dict(kv.split("=") for kv in m.group(1).split(", "))
    assert {k: int(v) for k, v in listed.items() if int(v)} == dict(sizes)
    assert "vip" in listed
    assert re.search(r"[\d,]+ events/s", err)


# ------------------------------------------------------------------ rejects


def test_bad_lines_are_rejected_with_a_reason_and_never_stop_the_run(tmp_path: Path) -> None:
    good = purchase(T0, 100, "c-1", event_id="p-1")
    lines: list[bytes] = [
        encode_event(good),
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"event_id": "x", "customer_id": "c-1", "type": "purchase", "ts": 1, '
        b'"amount": 1, "currency": "EUR"}',
        b'{"event_id": "x2", "customer_id": "c-1", "type": "teleport", "ts": 1}',
        b'{"event_id": "x3", "customer_id": "c-1", "ts": 1}',
        b'{"event_id": "x4", "customer_id": "c-1", "type": "refund", "ts": 1, '
        b'"amount": -5, "currency": "PLN"}',
        b'{"event_id": "x5", "customer_id": "c-1", "type": "page_view", '
        b'"ts": "2026-01-01T00:00:00"}',
        b"",
        encode_event(good),  # duplicate
        encode_event(event("page_view", T0 - 401 * DAY, "c-2")),  # too late
        # (never too_far_in_future: with the event clock, now includes the event's own ts)
        encode_event(purchase(T0 + HOUR, 50, "c-2")),  # good events after all of that
        encode_event(event("email_open", T0 + HOUR, "c-1")),
    ]
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    rejects_path = tmp_path / "rejects.jsonl"
    state_path = tmp_path / "state.jsonl"
    code, err, _ = simulate("--rules", str(RETAIL), "--events", str(log),
                            "--out-rejects", str(rejects_path), "--out-state", str(state_path))
    assert code == 0, err
    rejects = jsonl(rejects_path)
    assert [r["reason"] for r in rejects] == [
        "malformed_json", "bad_encoding", "not_an_object", "currency_mismatch",
        "unknown_event_type", "missing_field", "negative_amount", "bad_timestamp",
        "duplicate", "too_late"]
    for r in rejects:
        assert r["message"]
    assert rejects[3]["field"] == "currency" and rejects[3]["event_id"] == "x"
    assert rejects[8]["event_id"] == "p-1"
    assert "events applied: 3" in err
    assert "events rejected: 10" in err
    assert "duplicate: 1" in err and "too_late: 1" in err
    states = {s["customer_id"]: s for s in jsonl(state_path)}
    assert set(states) == {"c-1", "c-2"}
    assert "low_value" in states["c-2"]["segments"]


def test_generated_bad_records_are_all_rejected(tmp_path: Path) -> None:
    raw = list(generate_raw(customers=20, events=400, seed=5, start_ms=T0, days=10,
                            bad_fraction=0.2))
    log = write_events(tmp_path / "events.jsonl", raw)
    code, err, _ = simulate("--rules", str(RETAIL), "--events", str(log),
                            "--out-rejects", str(tmp_path / "rejects.jsonl"))
    assert code == 0, err
    rejects = jsonl(tmp_path / "rejects.jsonl")
    assert len(rejects) == len(raw) - 400
    assert all(r["reason"] for r in rejects)
    assert "events applied: 400" in err


# ------------------------------------------------------------------ --until


UNTIL_RULES = rules_yaml(segment("buyer", "purchase_count(24h) >= 1"),
                         segment("lapsed", "days_since_last_purchase() > 1"))


def test_until_stops_applying_and_advances_the_clock(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(UNTIL_RULES)
    log = write_events(tmp_path / "events.jsonl", [
        purchase(T0, 100, "c-1"),
        purchase(T0 + HOUR, 100, "c-2"),
        purchase(T0 + 10 * DAY, 100, "c-1"),  # after --until: not applied
        event("page_view", T0 + 11 * DAY, "c-3"),
    ])
    until = T0 + 3 * DAY
    changes_path = tmp_path / "changes.jsonl"
    state_path = tmp_path / "state.jsonl"
    code, err, _ = simulate("--rules", str(rules), "--events", str(log),
                            "--until", format_ts(until), "--out-changes", str(changes_path),
                            "--out-state", str(state_path))
    assert code == 0, err
    changes = jsonl(changes_path)
    got = [(c["customer_id"], c["at"], c["cause"]["kind"], c["entered"], c["exited"])
           for c in changes]
    assert got == [
        ("c-1", format_ts(T0), "event", ["buyer"], []),
        ("c-2", format_ts(T0 + HOUR), "event", ["buyer"], []),
        ("c-1", format_ts(T0 + DAY), "time", [], ["buyer"]),
        ("c-1", format_ts(T0 + DAY + 1), "time", ["lapsed"], []),
        ("c-2", format_ts(T0 + 25 * HOUR), "time", [], ["buyer"]),
        ("c-2", format_ts(T0 + HOUR + DAY + 1), "time", ["lapsed"], []),
    ]
    states = {s["customer_id"]: s for s in jsonl(state_path)}
    assert set(states) == {"c-1", "c-2"}
    assert states["c-1"]["segments"] == ["lapsed"]
    # metrics are taken at the final clock, --until
    assert states["c-1"]["metrics"]["days_since_last_purchase()"] == 3.0
    assert states["c-1"]["metrics"]["lifetime_orders"] == 1
    assert "events applied: 2" in err
    assert "not applied): 2" in err
    assert f"clock: {format_ts(until)}" in err


def test_without_until_the_clock_stops_at_the_last_event(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(UNTIL_RULES)
    log = write_events(tmp_path / "events.jsonl", [
        purchase(T0, 100, "c-1"), event("page_view", T0 + DAY + 5, "c-2")])
    changes_path = tmp_path / "changes.jsonl"
    code, err, _ = simulate("--rules", str(rules), "--events", str(log),
                            "--out-changes", str(changes_path))
    assert code == 0, err
    assert [(c["at"], c["entered"], c["exited"]) for c in jsonl(changes_path)] == [
        (format_ts(T0), ["buyer"], []),
        (format_ts(T0 + DAY), [], ["buyer"]),
        (format_ts(T0 + DAY + 1), ["lapsed"], []),
    ]
    assert f"clock: {format_ts(T0 + DAY + 5)}" in err


def test_erased_customers_have_no_state_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(UNTIL_RULES)
    log = write_events(tmp_path / "events.jsonl", [
        purchase(T0, 100, "c-1"), purchase(T0, 100, "c-2"),
        event("customer_erased", T0 + HOUR, "c-1", event_id="erase-1")])
    changes_path = tmp_path / "changes.jsonl"
    state_path = tmp_path / "state.jsonl"
    code, err, _ = simulate("--rules", str(rules), "--events", str(log),
                            "--out-changes", str(changes_path), "--out-state", str(state_path))
    assert code == 0, err
    assert [s["customer_id"] for s in jsonl(state_path)] == ["c-2"]
    erasure = jsonl(changes_path)[-1]
    assert set(erasure) == CHANGE_KEYS
    assert erasure["customer_id"] == "c-1"
    assert erasure["seq"] == 2
    assert erasure["cause"] == {"kind": "erasure", "event_id": "erase-1",
                                "event_type": "customer_erased",
                                "event_ts": format_ts(T0 + HOUR)}
    assert (erasure["entered"], erasure["exited"], erasure["segments"]) == ([], ["buyer"], [])
    assert "customers: 1" in err


def test_events_from_standard_input(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(UNTIL_RULES)
    data = encode_event(purchase(T0, 100, "c-1")) + b"\n"
    code, err, out = simulate("--rules", str(rules), "--events", "-", "--out-changes", "-",
                              input=data)
    assert code == 0, err
    (change,) = [orjson.loads(line) for line in out.splitlines()]
    assert change["entered"] == ["buyer"]


# ------------------------------------------------------------------ errors


def test_invalid_rule_file_exits_2_with_the_problem(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text(rules_yaml(segment("a", "purchase_amout(30d) >= 1")))
    log = write_events(tmp_path / "events.jsonl", [purchase(T0)])
    code, err, _ = simulate("--rules", str(rules), "--events", str(log))
    assert code == 2
    assert "bad.yaml" in err
    assert "purchase_amout" in err and "purchase_amount" in err


def test_missing_rule_file_exits_2(tmp_path: Path) -> None:
    log = write_events(tmp_path / "events.jsonl", [purchase(T0)])
    code, err, _ = simulate("--rules", str(tmp_path / "nope.yaml"), "--events", str(log))
    assert code == 2
    assert "nope.yaml" in err


def test_missing_events_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    code, err, _ = simulate("--rules", str(RETAIL), "--events", str(missing))
    assert code == 2
    assert "missing.jsonl" in err
    assert "Traceback" not in err


def test_invalid_until_exits_2(tmp_path: Path) -> None:
    log = write_events(tmp_path / "events.jsonl", [purchase(T0)])
    code, err, _ = simulate("--rules", str(RETAIL), "--events", str(log),
                            "--until", "2026-01-01T00:00:00")
    assert code == 2
    assert "--until" in err


def test_an_event_past_the_wall_clock_is_refused_and_moves_no_clock(tmp_path: Path) -> None:
    """A log with one event at 9999-12-31: refused too_far_in_future against --wall-now (the
    real clock by default), and the other customer still leaves its window at the instant its
    own log says, not at year 9999."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_yaml(segment("buyer", "purchase_count(1d) >= 1")))
    log = write_events(tmp_path / "events.jsonl", [
        purchase(T0, customer_id="a"), purchase(253_402_300_799_000, customer_id="poison"),
        purchase(T0 + 2 * DAY, customer_id="b")])
    for extra in ([], ["--wall-now", format_ts(T0 + 3 * DAY)]):
        out, rej = tmp_path / "changes.jsonl", tmp_path / "rejects.jsonl"
        code, _, _ = simulate("--rules", str(rules), "--events", str(log), "--out-changes",
                              str(out), "--out-rejects", str(rej), *extra)
        assert code == 0
        assert [r["reason"] for r in jsonl(rej)] == ["too_far_in_future"]
        assert [(c["customer_id"], c["at"], c["exited"]) for c in jsonl(out)
                if c["exited"]] == [("a", format_ts(T0 + DAY), ["buyer"])]
    code, _, _ = simulate("--rules", str(rules), "--events", str(log), "--out-rejects",
                          str(rej), "--wall-now", format_ts(T0 + DAY))  # b is now 1 day ahead
    assert [r["reason"] for r in jsonl(rej)] == ["too_far_in_future"] * 2
