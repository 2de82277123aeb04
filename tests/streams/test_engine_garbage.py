"""The engine leaves no reference cycles behind: everything it drops is freed by reference
counting, so the cyclic garbage collector has nothing of the engine's to find.

A cycle made per evaluation is invisible to every other test and costs the worker dearly: each
young collection walks what the cycles keep alive (the compiled closure of an engagement
crossing did so: ~22k cyclic objects per 20k events on the retail rules, ~18k in each of a
worker's young collections). Runs compiled or as plain Python, like the rest of the suite.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rules.loader import load_rules
from rules.ruleset import RuleSet
from streams.generator import generate_raw
from streams.simulate import Simulator

EXAMPLES = Path(__file__).resolve().parents[2] / "rules" / "examples"
START_MS = 1_735_689_600_000  # 2025-01-01


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Collects first, then runs the block with the cyclic collector off; afterwards the list
    holds what a collection finds (the block's reference cycles)."""
    found: list[object] = []
    gc.collect()
    debug = gc.get_debug()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.garbage.clear()
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(debug)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("rule_file", ["retail.yaml", "predictive.yaml", "minimal.yaml"])
def test_the_engine_makes_no_cyclic_garbage(rule_file: str) -> None:
    rules = RuleSet(load_rules(EXAMPLES / rule_file))
    lines = list(generate_raw(customers=300, events=6_000, seed=11, start_ms=START_MS,
                              erasures=True, bad_fraction=0.01))
    sim = Simulator(rules)
    with cyclic_garbage() as found:
        sim.feed_lines(lines)
        sim.finish()
    assert sim.stats.applied > 5_000 and sum(sim.stats.rejected.values()) > 0
    assert sim.stats.changes > 0
    kinds = Counter(type(o).__name__ for o in found)
    assert not found, f"reference cycles left by the engine: {kinds.most_common(5)}"


def test_the_check_finds_a_cycle() -> None:
    with cyclic_garbage() as found:
        a: list[object] = []
        a.append(a)
        del a
    assert [type(o) for o in found] == [list]
