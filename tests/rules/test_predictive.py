"""Model functions in rules (issue 15 phase 2): p_alive(), expected_purchases(h), clv(h),
cluster() with settings.models; values equal to rules/models on the same purchase summaries,
the exact instant a threshold flips with time alone (one ms before it the segment does not hold,
at it it does), the model's inputs in `why`, and load errors with line and column."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from model.changes import SegmentChange
from model.errors import RuleFileError
from model.events import encode_event
from rules.context import Ctx
from rules.loader import load_rules
from rules.models.bgnbd import (
    expected_order_value,
    expected_purchases,
    p_alive,
    p_alive_age_at,
)
from rules.models.file import BgNbdModel, KMeansModel, load_model
from rules.models.history import read_purchases, summarise
from rules.models.kmeans import nearest_centroid, standardise
from rules.ruleset import RuleSet
from streams.engine import Engine
from streams.generator import generate
from streams.simulate import Simulator
from tests.factories import DAY, HOUR, T0, purchase

EXAMPLES = Path(__file__).resolve().parents[2] / "rules" / "examples"
PREDICTIVE = EXAMPLES / "predictive.yaml"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet(load_rules(PREDICTIVE))


def _bg() -> BgNbdModel:
    m = load_model(EXAMPLES / "models" / "shop-bgnbd.json")
    assert isinstance(m, BgNbdModel)
    return m


def test_values_equal_the_models_on_the_fitted_summaries(rules: RuleSet) -> None:
    """A generated log replayed by the Simulator up to `until`: p_alive(), expected_purchases
    and clv of every customer equal rules/models' functions on rules.models.history's summary
    of the same log (distinct purchase days, week units)."""
    until = T0 + 40 * DAY
    events = list(generate(customers=60, events=6000, seed=3, start_ms=T0, days=60,
                           currency="USD"))
    lines = [encode_event(e) for e in events]
    sim = Simulator(rules, until=until)
    sim.feed_lines(lines)
    sim.finish()
    m = _bg()
    summaries = {c.customer_id: c for c in summarise(read_purchases(lines, currency="USD"),
                                                     until, m.unit_ms)}
    assert len(summaries) > 20 and any(c.x > 0 for c in summaries.values())
    terms = {t.text: t for s in rules.segments for t in s.when.terms}
    checked = 0
    for cid, st in sim.states.items():
        ctx = Ctx(st, until, rules.settings.resolution_ms, st.cands, rules.groups_before)
        c = summaries.get(cid)
        if c is None:
            assert terms["p_alive()"].fn(ctx) is None
            continue
        assert terms["p_alive()"].fn(ctx) == p_alive(m.params, c.x, c.t_x, c.T)
        h = 30 * DAY / m.unit_ms
        assert terms["expected_purchases(30d)"].fn(ctx) == expected_purchases(
            m.params, h, c.x, c.t_x, c.T)
        assert m.spend is not None
        assert terms["clv(365d)"].fn(ctx) == pytest.approx(
            expected_purchases(m.params, 365 * DAY / m.unit_ms, c.x, c.t_x, c.T)
            * expected_order_value(m.spend, c.x, c.mean_value), rel=1e-12)
        checked += 1
    assert checked > 20


def _churn_instant(m: BgNbdModel, first: int, last: int, days: int) -> int:
    """The first ms at which P(alive) < 0.3 after purchases at `first` and on later days."""
    T = p_alive_age_at(m.params, 0.3, days - 1, (last - first) / m.unit_ms)
    assert T is not None
    guess = int(first + T * m.unit_ms)
    x, t_x = days - 1, (last - first) / m.unit_ms

    def below(t: int) -> bool:
        return p_alive(m.params, x, t_x, (t - first) / m.unit_ms) < 0.3
    t = guess - 5
    while below(t):
        t -= 1
    while not below(t):
        t += 1
    return t


@pytest.mark.parametrize("clock", ["event", "wall"])
def test_likely_to_churn_at_the_exact_instant(rules: RuleSet, clock: str) -> None:
    """Three purchase days, then nothing: the customer enters likely_to_churn with no event at
    the first millisecond P(alive) < 0.3, both when time is driven by events (the Simulator's
    clock moved by another customer's event) and by timers (Engine.fire at the due instant)."""
    m = _bg()
    buys = [T0, T0 + 3 * DAY + 5 * HOUR, T0 + 3 * DAY + 9 * HOUR, T0 + 6 * DAY + HOUR]
    at = _churn_instant(m, T0, T0 + 6 * DAY + HOUR, 3)
    engine = Engine(rules)
    st = None
    for ts in buys:
        st = engine.apply(st, purchase(ts, 50.0, "c1", currency="USD"), ts).state
    assert st is not None
    assert st.due.get("likely_to_churn") == at
    if clock == "wall":
        before = engine.fire(st, at - 1)
        assert not any("likely_to_churn" in c.entered for c in before.changes)
        assert "likely_to_churn" not in st.members  # other segments may change before
        out = engine.fire(st, at)
        entered = [c for c in out.changes if "likely_to_churn" in c.entered]
    else:
        changes: list[SegmentChange] = []
        sim = Simulator(rules, on_change=changes.append)
        for ts in buys:
            sim.feed(purchase(ts, 50.0, "c1", currency="USD"))
        sim.feed(purchase(at - 1, 1.0, "other", currency="USD"))
        assert "likely_to_churn" not in sim.states["c1"].members
        sim.feed(purchase(at, 1.0, "other2", currency="USD"))
        entered = [c for c in changes if "likely_to_churn" in c.entered]
        assert "likely_to_churn" in sim.states["c1"].members
    assert len(entered) == 1 and entered[0].at == at and entered[0].cause.kind == "time"
    why = entered[0].details["likely_to_churn"]["why"]
    assert why["p_alive()"] < 0.3 <= p_alive(m.params, 2, (buys[-1] - T0) / m.unit_ms,
                                                  (at - 1 - T0) / m.unit_ms)
    assert why["lifetime_orders()"] == 4
    inputs = why["p_alive() inputs"]
    assert inputs["model"] == "churn" and inputs["x"] == 2 and inputs["repeat"] == "days"
    assert inputs["T"] == (at - T0) / m.unit_ms
    assert orjson.loads(orjson.dumps(why)) == why  # JSON, as change records carry it


def test_cluster_changes_at_the_exact_instant(rules: RuleSet) -> None:
    """A regular who stops buying: days_since_last_purchase() grows until the nearest centroid
    is "lapsing": the due instant is the first ms at which the nearest centroid changes."""
    km = load_model(EXAMPLES / "models" / "shop-clusters.json")
    assert isinstance(km, KMeansModel)
    engine = Engine(rules)
    st = None
    for k in range(12):
        ts = T0 + k * 2 * DAY
        st = engine.apply(st, purchase(ts, 900.0, "c2", currency="USD"), ts).state
    assert st is not None and "cluster_regulars" in st.members
    at = st.due["cluster_regulars"]
    last = T0 + 22 * DAY
    spend, orders = 12 * 900.0, 12

    def label(t: int) -> str:
        z = standardise([spend, orders, (t - last) / DAY], km.mean, km.scale)
        return km.label(nearest_centroid(z, km.centroids))
    assert label(at - 1) == "regulars" and label(at) == "lapsing"
    assert not any("cluster_lapsing" in c.entered for c in engine.fire(st, at - 1).changes)
    assert "cluster_regulars" in st.members
    out = engine.fire(st, at)
    [change] = [c for c in out.changes if "cluster_lapsing" in c.entered]
    assert change.at == at and "cluster_regulars" in change.exited
    why = change.details["cluster_lapsing"]["why"]
    assert why["cluster()"] == "lapsing"
    assert set(why["cluster() inputs"]["features"]) == set(km.features)


def _write(tmp_path: Path, settings_models: str, when: str) -> Path:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for name in ("shop-bgnbd.json", "shop-clusters.json"):
        shutil.copy(EXAMPLES / "models" / name, models / name)
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nsettings:\n  currency: USD\n" + settings_models
                    + f"segments:\n  - id: s\n    when: {when}\n")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(RuleFileError) as exc:
        load_rules(path)
    return [str(p) for p in exc.value.problems]


def test_load_errors_carry_line_and_column(tmp_path: Path) -> None:
    one = "  models:\n    churn: models/shop-bgnbd.json\n"
    [p] = _problems(_write(tmp_path, "", "p_alive() < 0.3"))
    assert ":6:11: p_alive() needs a BG/NBD model" in p
    [p] = _problems(_write(tmp_path, "  models:\n    churn: models/missing.json\n",
                           "p_alive() < 0.3"))
    assert ":5:12: model 'churn': cannot read the model file models/missing.json" in p
    (tmp_path / "models" / "bad.json").write_text('{"format": 1, "kind": "bgnbd"}')
    problems = _problems(_write(tmp_path, "  models:\n    churn: models/bad.json\n",
                                "p_alive() < 0.3"))
    assert any(":5:12: model 'churn': invalid model file models/bad.json: missing 'r'" in p
               for p in problems)
    [p] = _problems(_write(tmp_path, one, "cluster() == \"regulars\""))
    assert ":8:11: cluster() needs a k-means model" in p
    [p] = _problems(_write(tmp_path, one, 'p_alive(model="chrun") < 0.3'))
    assert ":8:25: unknown model 'chrun'" in p and "did you mean 'churn'" in p
    two = one + "    other: models/shop-bgnbd.json\n"
    [p] = _problems(_write(tmp_path, two, "clv(365d) > 1"))
    assert ":9:11: settings.models has 2 BG/NBD models (churn, other)" in p
    assert load_rules(_write(tmp_path, two, 'clv(365d, model="other") > 1'))
    [p] = _problems(_write(tmp_path, one, "clv(0d) > 1"))
    assert "the horizon of clv() must be longer than 0" in p
    nospend = orjson.loads((EXAMPLES / "models" / "shop-bgnbd.json").read_bytes())
    for k in ("p", "q", "v"):
        del nospend[k]
    (tmp_path / "models" / "nospend.json").write_bytes(orjson.dumps(nospend))
    [p] = _problems(_write(tmp_path, "  models:\n    churn: models/nospend.json\n",
                           "clv(365d) > 1"))
    assert "clv() needs a spend model" in p
    eur = tmp_path / "eur.yaml"
    eur.write_text(_write(tmp_path, one, "p_alive() < 0.3").read_text().replace("USD", "EUR"))
    [p] = _problems(eur)
    assert "fitted on USD amounts, the rule file's currency is EUR" in p


def test_a_refitted_model_is_a_new_rules_version(tmp_path: Path) -> None:
    path = _write(tmp_path, "  models:\n    churn: models/shop-bgnbd.json\n", "p_alive() < 0.3")
    before = load_rules(path).content_hash
    model = orjson.loads((tmp_path / "models" / "shop-bgnbd.json").read_bytes())
    model["r"] *= 1.01
    (tmp_path / "models" / "shop-bgnbd.json").write_bytes(orjson.dumps(model))
    assert load_rules(path).content_hash != before


@pytest.mark.parametrize("seed", range(25))
def test_due_instants_agree_with_the_summaries_of_the_log(rules: RuleSet, seed: int) -> None:
    """Random purchase histories (several a day, out of order, refunds): after the last event,
    the due instants of likely_to_churn and buying_again_soon are the first ms at which their
    condition changes, computed independently from rules.models.history's summary of the
    log at that instant and the ms before (not from the engine's state)."""
    import random

    from model.events import parse_dict

    rnd = random.Random(seed)
    m = _bg()
    start = T0 + rnd.randrange(DAY)
    stamps = sorted(start + rnd.randrange(40 * DAY) for _ in range(rnd.randrange(2, 9)))
    stamps += [stamps[0] + rnd.randrange(HOUR)]  # often the first day again
    order = stamps[:]
    rnd.shuffle(order)
    now = max(stamps)
    lines = []
    engine = Engine(rules)
    st = None
    for i, ts in enumerate(order):
        e = purchase(ts, float(rnd.randrange(10, 400)), "c", currency="USD",
                     event_id=f"p{i}")
        lines.append(encode_event(e))
        st = engine.apply(st, e, now).state
        if rnd.random() < 0.3:
            r = parse_dict({"event_id": f"r{i}", "customer_id": "c", "type": "refund",
                            "ts": ts, "amount": 5.0, "currency": "USD"}, currency="USD")
            st = engine.apply(st, r, now).state  # type: ignore[arg-type]
    assert st is not None
    log = read_purchases(lines, currency="USD")

    def holds(seg: str, t: int) -> bool:
        [c] = summarise(log, t, m.unit_ms)
        if seg == "likely_to_churn":
            return p_alive(m.params, c.x, c.t_x, c.T) < 0.3 and len(stamps) >= 2
        return expected_purchases(m.params, 30 * DAY / m.unit_ms, c.x, c.t_x, c.T) >= 1

    timed: list[str] = []
    for seg in ("likely_to_churn", "buying_again_soon"):
        due = st.due.get(seg)
        now_holds = holds(seg, now)
        assert now_holds == (seg in st.members), seg
        if due is None:  # never changes with time alone: still the same 100 years later
            assert holds(seg, now + 100 * 365 * DAY) == now_holds, seg
            continue
        assert due > now and holds(seg, due - 1) == now_holds != holds(seg, due), (seg, due)
        timed.append(seg)
    assert "likely_to_churn" in timed  # P(alive) always falls below 0.3 in time
