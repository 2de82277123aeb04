"""`segmenter models fit / report` (issue 15).

BG/NBD: the CDNow 1/10 sample shipped in the lifetimes wheel (read from the installed package,
never copied into the repo), turned into purchase events, fitted with the paper's 39-week
calibration ending 1997-09-30: the parameters are Fader, Hardie & Lee's (2005) to three
significant digits, and the report reproduces their calibration-vs-holdout comparison
(Figure 5), cross-checked against lifetimes' own calibration_and_holdout_data pipeline.
k-means: a generated log with three clearly separated kinds of customers gives three clusters
of the right sizes. Plus exit codes and messages of bad input.
"""

from __future__ import annotations

import random
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from model.events import encode_event
from rules.models.file import BgNbdModel, KMeansModel, load_model
from segmenter.cli import main
from tests.factories import DAY, T0, purchase
from tests.terminal import on_a_terminal

lifetimes = pytest.importorskip("lifetimes")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[2]
UNTIL = "1997-09-30T00:00:00Z"  # 39 weeks of calibration from 1997-01-01 (the paper's)
PAPER = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, section 5 (per week)
# FHL 2005 Figure 5 plots, per calibration-frequency group, the actual mean holdout repeat
# transactions against the BG/NBD's conditional expectation: the two curves track each other
# closely (within a few tenths of a purchase for 0-4, diverging a little more for the small
# groups of heavy buyers). Tolerances per group 0, 1, ..., 6, 7+:
TOLERANCE = [0.05, 0.25, 0.4, 0.4, 0.45, 0.5, 0.5, 0.5]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["models", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def cdnow_rows() -> list[tuple[str, str, int, float]]:
    """(customer id, YYYYMMDD, quantity, amount) per line of CDNOW_sample.txt. A line holds two
    ids: the customer's id in the full CDNOW master file, then its index 1..2357 in the sample
    (lifetimes' load_dataset docs); both name the same customer, the first is used."""
    text = files("lifetimes.datasets").joinpath("CDNOW_sample.txt").read_text()
    rows = []
    for line in text.splitlines():
        if line.strip():
            cid, _sample_id, date, quantity, amount = line.split()
            rows.append((cid, date, int(quantity), float(amount)))
    return rows


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cdnow")
    lines = []
    for i, (cid, date, _quantity, amount) in enumerate(cdnow_rows()):
        lines.append(orjson.dumps({
            "event_id": f"cdnow-{i}", "customer_id": cid, "type": "purchase",
            "ts": f"{date[:4]}-{date[4:6]}-{date[6:]}T00:00:00Z", "amount": amount,
            "currency": "USD"}))
    log = d / "cdnow.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    model = d / "cdnow.json"
    code, out, err = run("fit", "--events", str(log), "--until", UNTIL, "--time-unit", "week",
                         "--repeat", "days", "--out", str(model))
    assert code == 0, err
    assert "r=0.2426 alpha=4.414 a=0.7929 b=2.426" in out
    return {"log": log, "model": model, "dir": d}


def test_cdnow_sample_is_the_papers() -> None:
    rows = cdnow_rows()
    assert len(rows) == 6919 and len({r[0] for r in rows}) == 2357
    assert min(r[1] for r in rows) == "19970101" and max(r[1] for r in rows) == "19980630"


def test_fit_gives_the_papers_parameters(cdnow: dict[str, Path]) -> None:
    model = load_model(cdnow["model"])
    assert isinstance(model, BgNbdModel)
    assert model.time_unit == "week" and model.repeat == "days"
    for name, value in PAPER.items():
        fitted = getattr(model.params, name)
        assert f"{fitted:.3g}" == f"{value:.3g}", name  # three significant digits
        assert fitted == pytest.approx(value, abs=0.0005), name  # and as printed in the paper
    raw = orjson.loads(cdnow["model"].read_bytes())
    assert raw["format"] == 1 and raw["kind"] == "bgnbd" and raw["currency"] == "USD"
    assert raw["diagnostics"]["customers"] == 2357
    assert raw["diagnostics"]["log_likelihood"] == pytest.approx(-9582.4, abs=0.1)  # section 5
    assert raw["data"]["until"] == "1997-09-30T00:00:00.000Z"
    assert raw["data"]["first_event"] == "1997-01-01T00:00:00.000Z"
    assert raw["data"]["last_event"] == "1998-06-30T00:00:00.000Z"
    assert raw["data"]["purchases"] == 6919
    assert sum(raw["fitted"]["repeat_transactions"].values()) == 2357
    assert model.spend is not None and model.spend.q > 1  # Gamma-Gamma fitted on spend too
    assert raw["diagnostics"]["gamma_gamma"]["customers"] == 946


def test_report_reproduces_the_calibration_vs_holdout_comparison(
        cdnow: dict[str, Path]) -> None:
    code, out, err = run("report", str(cdnow["model"]), "--events", str(cdnow["log"]),
                         "--until", UNTIL, "--json")
    assert code == 0, err
    report = orjson.loads(out)
    assert report["holdout_length"] == pytest.approx(39.0)  # weeks 40-78
    groups = report["groups"]
    assert [g["group"] for g in groups] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert sum(g["customers"] for g in groups) == 2357
    for g, tol in zip(groups, TOLERANCE, strict=True):
        assert g["predicted"] == pytest.approx(g["actual"], abs=tol), g
    # the predictions increase with calibration frequency, as the actual means do
    predicted = [g["predicted"] for g in groups]
    assert predicted == sorted(predicted)

    # the same table from lifetimes' own pipeline on the raw file
    import pandas as pd

    rows = cdnow_rows()
    tx = pd.DataFrame({"id": [r[0] for r in rows],
                       "date": pd.to_datetime([r[1] for r in rows], format="%Y%m%d"),
                       "amount": [r[3] for r in rows]})
    # (monetary_value_col: without a value column, lifetimes 0.11.3's holdout aggregation
    # fails on pandas 3 with "No objects to concatenate")
    summary = lifetimes.utils.calibration_and_holdout_data(
        tx, "id", "date", calibration_period_end="1997-09-30",
        observation_period_end="1998-06-30", freq="D", monetary_value_col="amount")
    bg = lifetimes.BetaGeoFitter().fit(summary["frequency_cal"], summary["recency_cal"] / 7,
                                       summary["T_cal"] / 7)
    summary["predicted"] = bg.conditional_expected_number_of_purchases_up_to_time(
        39, summary["frequency_cal"], summary["recency_cal"] / 7, summary["T_cal"] / 7)
    summary["group"] = summary["frequency_cal"].clip(upper=7)
    for i, g in enumerate(groups):
        part = summary[summary["group"] == i]
        assert g["customers"] == len(part)
        assert g["actual"] == pytest.approx(part["frequency_holdout"].mean(), rel=1e-9)
        assert g["predicted"] == pytest.approx(part["predicted"].mean(), rel=1e-4)

    code, text, _ = run("report", str(cdnow["model"]), "--events", str(cdnow["log"]),
                        "--until", UNTIL)
    assert code == 0
    assert "39.00 weeks" in text and "7+" in text


def test_console_entry_point(cdnow: dict[str, Path]) -> None:
    exe = Path(sys.executable).parent / "segmenter"
    proc = subprocess.run([str(exe), "models", "report", str(cdnow["model"]), "--events",
                           str(cdnow["log"]), "--until", UNTIL], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "calibration: up to 1997-09-30" in proc.stdout


# ------------------------------------------------------------------------------- k-means

KMEANS_RULES = "version: 1\nsettings: {currency: PLN}\nsegments:\n" \
               "  - {id: buyer, when: purchase_count(30d) >= 1}\n"
FEATURES = ["purchase_amount(365d)", "purchase_count(365d)", "days_since_last_purchase()"]
KINDS = {"frequent": 50, "big": 30, "lapsed": 20}  # sizes, also the clusters' order


def _kinds_log(path: Path) -> int:
    """Frequent small buyers (every ~5 days, ~20 PLN), big occasional buyers (monthly, ~900
    PLN), lapsed customers (a few purchases 250-300 days before the end). Returns the end."""
    rnd = random.Random(7)
    end = T0 + 360 * DAY
    events = []
    for kind, n in KINDS.items():
        for i in range(n):
            cid = f"{kind}-{i:03d}"
            if kind == "frequent":
                times = [end - k * 5 * DAY - rnd.randrange(DAY) for k in range(60)]
                amounts = [20 + rnd.uniform(-5, 5) for _ in times]
            elif kind == "big":
                times = [end - k * 30 * DAY - rnd.randrange(3 * DAY) for k in range(11)]
                amounts = [900 + rnd.uniform(-100, 100) for _ in times]
            else:
                times = [end - (250 + rnd.randrange(50)) * DAY for _ in range(3)]
                amounts = [60 + rnd.uniform(-10, 10) for _ in times]
            events += [purchase(t, round(a, 2), cid) for t, a in zip(times, amounts,
                                                                       strict=True)]
    events.sort(key=lambda e: e.ts)
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    return end


def test_kmeans_finds_three_kinds(tmp_path: Path) -> None:
    from model.changes import format_ts

    end = format_ts(_kinds_log(tmp_path / "kinds.jsonl") + DAY)
    (tmp_path / "rules.yaml").write_text(KMEANS_RULES)
    args = ["--events", str(tmp_path / "kinds.jsonl"), "--until", end,
            "--rules", str(tmp_path / "rules.yaml")]
    feats = [a for f in FEATURES for a in ("--features", f)]
    code, out, err = run("fit", "--kind", "kmeans", *args, *feats, "--out",
                         str(tmp_path / "auto.json"))
    assert code == 0, err
    auto = load_model(tmp_path / "auto.json")
    assert isinstance(auto, KMeansModel)
    assert auto.diagnostics["chosen_by"] == "silhouette" and auto.diagnostics["k"] == 3

    code, out, err = run("fit", "--kind", "kmeans", *args, *feats, "--k", "3", "--labels",
                         ",".join(KINDS), "--out", str(tmp_path / "km.json"))
    assert code == 0, err
    model = load_model(tmp_path / "km.json")
    assert isinstance(model, KMeansModel)
    assert model.features == tuple(FEATURES)
    assert model.diagnostics["sizes"] == list(KINDS.values())
    assert [model.label(i) for i in range(3)] == list(KINDS)
    centroids = {model.label(i): model.raw_centroid(i) for i in range(3)}
    assert centroids["big"][0] > 5 * centroids["frequent"][0]  # spend
    assert centroids["frequent"][1] > 3 * centroids["big"][1]  # orders
    assert centroids["lapsed"][2] > 200 > centroids["big"][2]  # recency (days)

    code, out, err = run("report", str(tmp_path / "km.json"), *args, "--json")
    assert code == 0, err
    report: dict[str, Any] = orjson.loads(out)
    assert [(c["label"], c["size"]) for c in report["clusters"]] == list(KINDS.items())
    assert report["clustered"] == report["customers"] == sum(KINDS.values())
    code, text, _ = run("report", str(tmp_path / "km.json"), *args)
    assert code == 0 and "frequent: 50 customers" in text


# ------------------------------------------------------------------------------- bad input


def test_bad_input_exits_2(tmp_path: Path, cdnow: dict[str, Path]) -> None:
    out = str(tmp_path / "m.json")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "junk.jsonl").write_bytes(b"not json\n{\"type\": \"purchase\"}\n")
    (tmp_path / "views.jsonl").write_bytes(
        orjson.dumps({"event_id": "e1", "customer_id": "c1", "type": "page_view",
                      "ts": "2026-01-01T00:00:00Z"}) + b"\n")
    (tmp_path / "nan.jsonl").write_bytes(
        b'{"event_id": "e1", "customer_id": "c1", "type": "purchase", '
        b'"ts": "2026-01-01T00:00:00Z", "amount": NaN, "currency": "USD"}\n')
    one = b"".join(encode_event(purchase(T0 + k * DAY, 10.0, "only", currency="USD")) + b"\n"
                   for k in range(5))
    (tmp_path / "one.jsonl").write_bytes(one)
    cases = [
        (["--events", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["--events", str(tmp_path / "empty.jsonl")], "empty"),
        (["--events", str(tmp_path / "junk.jsonl")], "no valid event"),
        (["--events", str(tmp_path / "nan.jsonl")], "no valid event"),
        (["--events", str(tmp_path / "views.jsonl")], "no purchase event"),
        (["--events", str(tmp_path / "one.jsonl")], "only 1 customer"),
        (["--events", str(cdnow["log"]), "--features", "x"], "only apply to --kind kmeans"),
        (["--events", str(cdnow["log"]), "--kind", "kmeans"], "--features"),
        (["--events", str(cdnow["log"]), "--kind", "kmeans", "--features",
          "purchase_amount(30d)"], "--rules"),
    ]
    for args, message in cases:
        code, _, err = run("fit", "--until", "2026-06-01T00:00:00Z", "--out", out, *args)
        assert code == 2 and message in err, (args, err)
    code, _, err = run("fit", "--events", str(cdnow["log"]), "--until", "1990-01-01T00:00:00Z",
                       "--out", out)
    assert code == 2 and "no purchases up to the calibration end" in err
    code, _, err = run("fit", "--events", str(cdnow["log"]), "--until", "yesterday",
                       "--out", out)
    assert code == 2 and "RFC 3339" in err
    code, _, err = run("fit", "--events", str(cdnow["log"]), "--until", UNTIL, "--out", out,
                       "--bogus")
    assert code == 2 and "--bogus" in err
    assert not Path(out).exists()

    (tmp_path / "rules.yaml").write_text(KMEANS_RULES)
    code, _, err = run("fit", "--kind", "kmeans", "--events", str(cdnow["log"]), "--until",
                       UNTIL, "--out", out, "--rules", str(tmp_path / "rules.yaml"),
                       "--features", "purchase_count(30d) >= 1")
    assert code == 2 and "must be a number" in err
    (tmp_path / "bad.json").write_text('{"format": 1, "kind": "bgnbd"}')
    code, _, err = run("report", str(tmp_path / "bad.json"), "--events", str(cdnow["log"]),
                       "--until", UNTIL)
    assert code == 2 and "missing 'r'" in err
    code, _, err = run("report", str(cdnow["model"]), "--events", str(cdnow["log"]),
                       "--until", "1998-06-30T00:00:00Z")
    assert code == 2 and "holdout period is empty" in err


def _purchases_log(path: Path, rows: list[tuple[str, int, float]]) -> None:
    """(customer, day from T0, amount) -> one purchase event per row."""
    path.write_bytes(b"".join(
        encode_event(purchase(T0 + day * DAY, amount, cid, currency="USD")) + b"\n"
        for cid, day, amount in rows))


def test_nan_lines_among_good_ones_are_left_out_and_reported(
        tmp_path: Path, cdnow: dict[str, Path]) -> None:
    """NaN amounts (JSON's NaN, or "NaN" as text) among valid purchases: those lines are
    rejected by reason, the fit is the clean log's, and a warning on stderr says how many were
    left out (even with --quiet); the model file counts them."""
    log = tmp_path / "with-nan.jsonl"
    log.write_bytes(cdnow["log"].read_bytes()
                    + b'{"event_id": "n1", "customer_id": "00001", "type": "purchase", '
                      b'"ts": "1997-02-01T00:00:00Z", "amount": NaN, "currency": "USD"}\n'
                    + b'{"event_id": "n2", "customer_id": "00002", "type": "purchase", '
                      b'"ts": "1997-02-01T00:00:00Z", "amount": "NaN", "currency": "USD"}\n')
    out = tmp_path / "m.json"
    code, stdout, err = run("fit", "--events", str(log), "--until", UNTIL, "--out", str(out),
                            "--quiet")
    assert code == 0, err
    assert stdout == ""
    assert "warning: 2 line(s) of" in err and "malformed_json: 1" in err and \
        "bad_type: 1" in err
    model, clean = load_model(out), load_model(cdnow["model"])
    assert isinstance(model, BgNbdModel) and isinstance(clean, BgNbdModel)
    assert model.params == clean.params and model.spend == clean.spend
    assert model.data["rejected"] == {"malformed_json": 1, "bad_type": 1}
    code, _, err = run("fit", "--events", str(cdnow["log"]), "--until", UNTIL, "--out",
                       str(out), "--quiet")
    assert code == 0 and err == ""  # no warning for a clean log


def test_no_repeat_purchase_and_no_convergence_are_clear_errors(tmp_path: Path) -> None:
    """Every customer bought once: nothing to learn repeat behaviour from. A log lifetimes'
    optimiser cannot fit: one sentence on stderr (with the optimiser's reason), nothing of
    scipy's result dump on stdout, no model file."""
    out = tmp_path / "m.json"
    once = tmp_path / "once.jsonl"
    _purchases_log(once, [(f"c{i}", i, 10.0) for i in range(20)])
    code, stdout, err = run("fit", "--events", str(once), "--until", "2026-06-01T00:00:00Z",
                            "--out", str(out))
    assert code == 2 and stdout == ""
    assert err == "error: no customer purchased again after their first purchase up to the " \
                  "calibration end: repeat behaviour cannot be learnt\n"
    regular = tmp_path / "regular.jsonl"
    _purchases_log(regular, sorted(((f"c{i}", 30 * d + i % 27, 10.0 + i) for i in range(30)
                                    for d in range(1 + i % 4)), key=lambda r: r[1]))
    code, stdout, err = run("fit", "--events", str(regular), "--until",
                            "2026-06-01T00:00:00Z", "--out", str(out))
    assert code == 2 and stdout == "", stdout
    assert err.startswith("error: the BG/NBD fit did not converge on 30 customers, 22 repeat "
                          "buyers (the optimiser: ") and "penalizer" not in err
    assert err.count("\n") == 1 and not out.exists()


def test_kmeans_bad_input(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(KMEANS_RULES.replace("PLN", "USD"))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    same = tmp_path / "same.jsonl"
    _purchases_log(same, [(f"c{i}", i, 10.0) for i in range(20)])
    out = tmp_path / "k.json"
    base = ["fit", "--kind", "kmeans", "--until", "2026-06-01T00:00:00Z", "--out", str(out),
            "--rules", str(tmp_path / "rules.yaml")]
    cases = [
        (["--events", str(tmp_path / "empty.jsonl"), "--features", "purchase_count(365d)"],
         "no event applied up to 2026-06-01T00:00:00.000Z"),
        # every customer has the same feature vector: no clusters to find
        (["--events", str(same), "--features", "purchase_count(365d)"],
         "only 1 distinct feature vector(s): too few to choose k"),
        (["--events", str(same), "--features", "purchase_count(365d)", "--k", "2"],
         "only 1 distinct feature vector(s) cannot make 2 clusters"),
        (["--events", str(same), "--features", "purchase_count(365d)", "--k", "0"],
         "--k must be at least 1"),
        (["--events", str(same), "--features", "nope(3d)"], "invalid feature"),
    ]
    for args, message in cases:
        code, stdout, err = run(*base, *args)
        assert code == 2 and message in err and stdout == "", (args, err)
    assert not out.exists()


def test_bad_input_through_the_console_entry_point_has_no_traceback(tmp_path: Path) -> None:
    """The installed `segmenter` command: exit code 2 and one `error:` message per bad input,
    never a Python traceback."""
    exe = Path(sys.executable).parent / "segmenter"
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "nan.jsonl").write_bytes(
        b'{"event_id": "e1", "customer_id": "c1", "type": "purchase", '
        b'"ts": "2026-01-01T00:00:00Z", "amount": NaN, "currency": "USD"}\n')
    one = tmp_path / "one.jsonl"
    _purchases_log(one, [("only", d, 10.0) for d in range(5)])
    views = tmp_path / "views.jsonl"
    views.write_bytes(orjson.dumps({"event_id": "e1", "customer_id": "c1",
                                    "type": "page_view", "ts": "2026-01-01T00:00:00Z"}) + b"\n")
    for log, message in ((tmp_path / "empty.jsonl", "the event log is empty"),
                         (tmp_path / "nan.jsonl", "no valid event"),
                         (one, "only 1 customer(s) purchased"),
                         (views, "no purchase event")):
        proc = subprocess.run([str(exe), "models", "fit", "--events", str(log), "--until",
                               "2026-06-01T00:00:00Z", "--out", str(tmp_path / "m.json")],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 2, (log, proc.stderr)
        assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_fit_shows_a_progress_bar_on_a_terminal(tmp_path: Path,
                                                cdnow: dict[str, Path]) -> None:
    """With standard error on a terminal (a pseudo-terminal here), `models fit` draws rich's
    progress bar while it reads the log (this used to raise TypeError: Progress got `stderr`)
    and still writes the model."""
    exe = Path(sys.executable).parent / "segmenter"
    out = tmp_path / "m.json"
    code, terminal, stdout = on_a_terminal([str(exe), "models", "fit", "--events",
                                            str(cdnow["log"]), "--until", UNTIL, "--out",
                                            str(out)], cwd=ROOT)
    assert code == 0, terminal
    assert "replaying" in terminal and "━" in terminal, terminal
    assert "Traceback" not in terminal
    assert f"wrote {out}" in stdout and out.exists()
