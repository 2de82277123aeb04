"""Customer state codec: decode(encode(s)) == s for states the engine really produces (generated
events through the shipped retail rules), including pending future events and profile
attributes; a decoded state carries on exactly like the original."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from importlib import resources

import orjson
import pytest

from model.changes import SegmentChange
from model.codec import FORMAT, decode_state, encode_state
from model.events import Event
from model.state import CustomerState
from rules.loader import load_rules_text
from rules.ruleset import RuleSet
from streams.engine import Engine
from streams.generator import generate
from streams.simulate import Simulator
from tests.factories import DAY, HOUR, MINUTE, T0, event, item, profile, purchase

RETAIL = RuleSet(load_rules_text(
    resources.files("rules").joinpath("examples", "retail.yaml").read_bytes()))
CUSTOMERS = 150
EVENTS = 6000


def generated(events: int = EVENTS) -> Iterator[Event]:
    return generate(customers=CUSTOMERS, events=events, seed=7, start_ms=T0, days=60,
                    profile_fraction=0.03)


@pytest.fixture(scope="module")
def simulated() -> Simulator:
    sim = Simulator(RETAIL)
    for ev in generated():
        sim.feed(ev)
    sim.finish()
    return sim


def round_trip(st: CustomerState) -> CustomerState:
    return decode_state(encode_state(st))


def test_round_trip_of_simulated_states(simulated: Simulator) -> None:
    states = simulated.states
    assert len(states) > CUSTOMERS // 2
    assert any(st.members for st in states.values())
    assert any(st.attributes for st in states.values())
    assert any(st.due for st in states.values())
    assert any(st.dedup for st in states.values())
    assert any(bk.cats for st in states.values() for bk in st.buckets.values())
    assert any(bk.sessions for st in states.values() for bk in st.buckets.values())
    for cid, st in states.items():
        data = encode_state(st)
        back = decode_state(data)
        assert back == st, cid
        assert encode_state(back) == data, cid
    sizes = [len(encode_state(st)) for st in states.values()]
    print(f"\nstate bytes per customer ({len(sizes)} customers, {EVENTS} events over 60 days, "
          f"retail rules): mean {sum(sizes) / len(sizes):.0f}, max {max(sizes)}, "
          f"min {min(sizes)}")


def test_round_trip_with_pending_future_events_and_attributes(simulated: Simulator) -> None:
    engine = Engine(RETAIL)
    assert simulated.clock is not None
    now = simulated.clock
    cids = sorted(simulated.states)[:10]
    for i, cid in enumerate(cids):
        st: CustomerState | None = copy.deepcopy(simulated.states[cid])
        future = [
            purchase(now + MINUTE + i, 123.45, cid, order_id=f"o-{i}",
                     items=[item("books", 2, 10.5), item("toys", 1, 102.45, sku="T-1")]),
            profile(now + 2 * MINUTE, cid, region="slaskie", note="zażółć \"gęślą\"",
                    score=1.5, active=True, gone=None),
            event("page_view", now + 3 * MINUTE, cid, session_id="s-9", url="https://x/y",
                  category="home", sku="HO-1"),
            event("email_open", now + 4 * MINUTE, cid, campaign_id="cmp-1"),
        ]
        for ev in future:
            out = engine.apply(st, ev, now)
            assert out.rejection is None
            st = out.state
        assert st is not None
        assert [p.ts for p in st.pending] == [ev.ts for ev in future]
        back = round_trip(st)
        assert back == st
        assert back.pending == future
        # both go on the same way once the pending events are due
        a = engine.fire(st, now + HOUR)
        b = engine.fire(back, now + HOUR)
        assert a.changes == b.changes
        assert encode_state(st) == encode_state(back)
        assert st.attributes["region"] == "slaskie"


def test_a_decoded_state_carries_on_like_the_original() -> None:
    events = list(generated(3000))
    half = len(events) // 2
    changes_a: list[SegmentChange] = []
    changes_b: list[SegmentChange] = []
    a = Simulator(RETAIL, on_change=changes_a.append)
    b = Simulator(RETAIL, on_change=changes_b.append)
    for ev in events[:half]:
        a.feed(ev)
        b.feed(ev)
    b.states = {cid: round_trip(st) for cid, st in b.states.items()}  # as if from a changelog
    for ev in events[half:]:
        a.feed(ev)
        b.feed(ev)
    a.finish()
    b.finish()
    assert changes_a == changes_b
    assert {c: encode_state(s) for c, s in a.states.items()} == {
        c: encode_state(s) for c, s in b.states.items()}


def test_round_trip_of_edge_states() -> None:
    fresh = CustomerState("c-ünïcode", rules_version="sha256:" + "0" * 64)
    assert round_trip(fresh) == fresh
    engine = Engine(RETAIL)
    out = engine.apply(None, purchase(T0, 0.1), T0)
    out = engine.apply(out.state, purchase(T0 + 1, 0.2), T0 + 1)
    out = engine.apply(out.state, event("email_unsubscribe", T0 + 2), T0 + 2)
    st = out.state
    assert st is not None
    assert st.lifetime_amount == 0.1 + 0.2  # not 0.3: floats survive bit for bit
    assert round_trip(st) == st
    assert round_trip(st).lifetime_amount == st.lifetime_amount
    assert round_trip(st).unsubscribed
    # written by the Faust worker: the first 20 slots, then a replay guard and an outbox
    old = [*orjson.loads(encode_state(st))[:20], {"0": 17}, []]
    faust = decode_state(orjson.dumps(old))
    assert faust == dataclasses.replace(  # the purchase occasions estimated
        st, pday_ts=T0 + 1, first_day_amount=st.gross / 2, first_amount=st.gross / 2)


def test_web_only_buckets_stay_small() -> None:
    engine = Engine(RETAIL)
    st = None
    for i in range(5):
        st = engine.apply(st, event("email_open", T0 + i * DAY), T0 + i * DAY).state
    assert st is not None
    assert round_trip(st) == st
    assert len(encode_state(st)) < 1000


def test_unknown_format_is_refused() -> None:
    raw = orjson.loads(encode_state(CustomerState("c")))
    assert raw[0] == FORMAT
    raw[0] = FORMAT + 1
    with pytest.raises(ValueError, match="format"):
        decode_state(orjson.dumps(raw))


def test_purchase_occasions_round_trip_and_older_states_decode() -> None:
    """Slot 20 holds the purchase occasions BG/NBD reads (distinct purchase days, the latest
    day's first instant, gross amount, first day's and first purchase's amounts): kept bit for
    bit; a state written before it (20 slots) decodes with them estimated from the lifetime
    facts, one without purchases with none; decoders that read 20 slots still read the rest."""
    engine = Engine(RETAIL)
    st = None
    for ts, amount in ((T0 + 3 * DAY + HOUR, 10.0), (T0 + 3 * DAY + 5 * HOUR, 2.5),
                       (T0 + 7 * DAY, 4.0), (T0 + 8 * DAY + 2 * HOUR, 1.25),
                       (T0 + 8 * DAY + HOUR, 0.75)):
        st = engine.apply(st, purchase(ts, amount), T0 + 9 * DAY).state
    assert st is not None
    assert (st.pdays, st.pday_ts, st.gross, st.first_day_amount, st.first_amount) == (
        3, T0 + 8 * DAY + HOUR, 18.5, 12.5, 10.0)
    raw = orjson.loads(encode_state(st))
    assert len(raw) == 21 and raw[20] == [3, T0 + 8 * DAY + HOUR, 18.5, 12.5, 10.0]
    assert round_trip(st) == st
    before = decode_state(orjson.dumps(raw[:20]))  # a state written before slot 20
    assert (before.pdays, before.pday_ts, before.gross, before.first_day_amount,
            before.first_amount) == (5, T0 + 8 * DAY + 2 * HOUR, 18.5, 3.7, 3.7)
    assert dataclasses.replace(before, pdays=3, pday_ts=T0 + 8 * DAY + HOUR,
                               first_day_amount=12.5, first_amount=10.0) == st
    no_purchase = engine.apply(None, event("email_open", T0), T0).state
    assert no_purchase is not None and orjson.loads(encode_state(no_purchase))[20] == 0
    assert decode_state(orjson.dumps(orjson.loads(encode_state(no_purchase))[:20])) \
        == no_purchase == round_trip(no_purchase)


def test_out_of_order_purchases_count_days_exactly() -> None:
    """A purchase arriving after a later one: on a day already counted (found in the buckets),
    on a new day in between, before the first day: the same occasions as in order."""
    engine = Engine(RETAIL)
    days = [(T0 + 5 * DAY, 1.0), (T0 + 2 * DAY + HOUR, 2.0), (T0 + 2 * DAY, 4.0),
            (T0 + 4 * DAY, 8.0), (T0 + 9 * DAY, 16.0), (T0 + 4 * DAY + 3 * HOUR, 32.0)]
    now = T0 + 10 * DAY
    shuffled = None
    for ts, amount in days:
        shuffled = engine.apply(shuffled, purchase(ts, amount), now).state
    ordered = None
    for ts, amount in sorted(days):
        ordered = engine.apply(ordered, purchase(ts, amount), now).state
    assert shuffled is not None and ordered is not None
    occ = (ordered.pdays, ordered.pday_ts, ordered.gross, ordered.first_day_amount,
           ordered.first_amount)
    assert occ == (4, T0 + 9 * DAY, 63.0, 6.0, 4.0)
    assert (shuffled.pdays, shuffled.pday_ts, shuffled.gross, shuffled.first_day_amount,
            shuffled.first_amount) == occ


def test_the_cached_bucket_encoding_follows_every_change_of_the_bucket() -> None:
    """encode_state caches each bucket's JSON on it: after every event (several into the same
    day bucket, out of order too) the encoding still decodes to the state as it is now."""
    rules = RuleSet(load_rules_text("version: 1\nsettings: {currency: PLN, resolution: 1d}\n"
                                    "segments:\n  - id: buyer\n"
                                    "    when: purchase_count(30d) >= 1\n"))
    engine = Engine(rules)
    st: CustomerState | None = None
    evs = [purchase(T0 + HOUR, 10.0, items=[item("books", 1, 10.0)]),
           event("page_view", T0 + 2 * HOUR, session_id="s-1"),
           purchase(T0 + 3 * HOUR, 5.0, items=[item("toys", 2, 2.5)]),
           purchase(T0 + MINUTE, 7.0),
           event("email_open", T0 + DAY + HOUR),
           purchase(T0 + DAY + 2 * HOUR, 3.0)]
    encodings = set()
    for i, ev in enumerate(evs):
        st = engine.apply(st, ev, T0 + DAY * 2 + i).state
        assert st is not None
        data = encode_state(st)
        encodings.add(data)
        assert decode_state(data) == st
        assert decode_state(encode_state(decode_state(data))) == st
    assert len(encodings) == len(evs)
    assert copy.deepcopy(st) == st


def test_buckets_written_out_of_order_decode_ascending() -> None:
    """A state written before the buckets were kept in order (an out-of-order event had opened
    an older bucket last) decodes with ascending buckets, equal to the state."""
    st: CustomerState | None = None
    engine = Engine(RETAIL)
    for ts in (T0 + 3 * DAY, T0 + 4 * DAY, T0 + DAY):
        st = engine.apply(st, purchase(ts, 10.0), T0 + 5 * DAY).state
    assert st is not None and list(st.buckets) == sorted(st.buckets)
    raw = orjson.loads(encode_state(st))
    raw[2] = raw[2][1:] + raw[2][:1]  # the oldest bucket last, as such a state was written
    decoded = decode_state(orjson.dumps(raw))
    assert list(decoded.buckets) == sorted(st.buckets)
    assert decoded == st
