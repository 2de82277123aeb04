"""Connector plumbing: backoff."""

from __future__ import annotations

import random

import pytest

from connectors.common import Backoff, backoff_delay


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    assert 50 <= backoff_delay(1000, 100, 100, random.Random(2)) <= 100


def test_backoff_needs_a_positive_base() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
