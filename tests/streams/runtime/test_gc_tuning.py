"""tune_gc: the collector's thresholds for worker and replay processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.runtime.gc_tuning import DEFAULT_THRESHOLD, tune_gc
from streams.runtime.settings import Settings


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


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
