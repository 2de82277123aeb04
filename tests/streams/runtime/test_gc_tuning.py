"""tune_gc: the collector's thresholds for worker and replay processes."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from streams.runtime.gc_tuning import DEFAULT_THRESHOLD, CollectorHold, tune_gc
from streams.runtime.settings import Settings


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    enabled = gc.isenabled()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()
    if enabled:
        gc.enable()


def test_raises_the_young_threshold_and_freezes_what_exists() -> None:
    gc.unfreeze()
    assert tune_gc(60_000) == (60_000, 2, 100)
    assert gc.get_threshold() == (60_000, 2, 100)
    assert gc.get_freeze_count() > 0


def test_zero_leaves_cpythons_settings() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert tune_gc(0) == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="-5"):
        tune_gc(-5)


def test_the_workers_setting_defaults_to_the_tuned_threshold() -> None:
    assert Settings.from_env(env={}).gc_threshold == DEFAULT_THRESHOLD
    assert Settings.from_env(env={"SEGMENTER_GC_THRESHOLD": "0"}).gc_threshold == 0


def _collections_during(body: Callable[[], None]) -> int:
    """Young collections that run while body() does (counted by a gc callback)."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    try:
        body()
    finally:
        gc.callbacks.remove(count)
    return len(seen)


def _allocate(n: int) -> None:
    keep = [[i] for i in range(n)]  # containers that live until the end: they count
    assert len(keep) == n


def test_no_collection_runs_while_held_and_the_count_carries_over() -> None:
    gc.set_threshold(1_000, 10, 10)
    hold = CollectorHold()
    with hold.hold():
        assert not gc.isenabled() and hold.held
        assert _collections_during(lambda: _allocate(20_000)) == 0
    assert gc.isenabled() and not hold.held
    assert _collections_during(lambda: _allocate(20_000)) > 0


def test_holds_nest_and_overlap_the_collector_comes_back_after_the_last() -> None:
    hold = CollectorHold()
    first = hold.hold()
    second = hold.hold()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # released out of order, as across awaits
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_hold_that_asks_for_it_freezes_what_lives_on_at_the_last_release() -> None:
    gc.unfreeze()
    hold = CollectorHold()
    with hold.hold(freeze=True):
        with hold.hold():
            _allocate(100)
        assert gc.get_freeze_count() == 0
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
    with hold.hold():
        pass
    assert gc.get_freeze_count() == 0  # asked once, done once


def test_an_exception_releases_the_hold() -> None:
    hold = CollectorHold()
    with pytest.raises(RuntimeError), hold.hold():
        raise RuntimeError("boom")
    assert gc.isenabled() and not hold.held


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    hold = CollectorHold()
    with hold.hold():
        pass
    assert not gc.isenabled()
