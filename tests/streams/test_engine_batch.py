"""Engine.apply_batch gives the same outcomes as Engine.apply record by record."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from model.events import Event
from model.state import CustomerState
from rules.model import RuleFile
from rules.ruleset import RuleSet
from streams.engine import Engine, Outcome
from tests.streams.test_engine_properties import rule_files, streams


def _records(events: list[Event]) -> list[tuple[Event, int]]:
    out: list[tuple[Event, int]] = []
    clock = None
    for ev in events:
        clock = ev.ts if clock is None or ev.ts > clock else clock
        out.append((ev, clock))
    return out


def _view(o: Outcome) -> tuple[object, ...]:
    return (o.changes, o.rejection, None if o.state is None else o.state.customer_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rf=rule_files(), events=streams())
def test_apply_batch_is_apply_record_by_record(rf: RuleFile, events: list[Event]) -> None:
    records = _records(events)
    one = Engine(RuleSet(rf))
    states: dict[str, CustomerState] = {}
    want = []
    for ev, now in records:
        o = one.apply(states.get(ev.customer_id), ev, now)
        if o.state is None:
            states.pop(ev.customer_id, None)
        else:
            states[ev.customer_id] = o.state
        want.append(_view(o))
    batch_states: dict[str, CustomerState] = {}
    got = Engine(RuleSet(rf)).apply_batch(batch_states, records)
    assert [_view(o) for o in got] == want
    assert batch_states == states
