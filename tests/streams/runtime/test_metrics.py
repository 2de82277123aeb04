"""BatchHistogram exposes what a prometheus_client Histogram fed the same values exposes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.runtime.metrics import LATENCY_BUCKETS, BatchHistogram, Metrics


def _exposition(registry: CollectorRegistry) -> list[str]:
    # the reference Histogram also exports `_created` (a time stamp): not compared
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


@given(st.lists(st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS),  # on a bound: inclusive
                                   st.floats(min_value=0, max_value=100)), max_size=20),
                max_size=5))
def test_batch_histogram_exposes_like_histogram(batches: list[list[float]]) -> None:
    ours, reference = CollectorRegistry(), CollectorRegistry()
    hist = BatchHistogram("lat_seconds", "Latency.", LATENCY_BUCKETS, ours)
    ref = Histogram("lat_seconds", "Latency.", buckets=LATENCY_BUCKETS, registry=reference)
    for batch in batches:
        hist.observe_many(batch)
        for v in batch:
            ref.observe(v)
    assert _exposition(ours) == _exposition(reference)


def test_metrics_event_to_change_is_scraped() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.event_to_change.observe_many([0.003, 0.2, 40.0])
    m.event_to_change.observe_many([0.003])
    assert registry.get_sample_value("segmenter_event_to_change_seconds_count") == 4
    assert registry.get_sample_value("segmenter_event_to_change_seconds_bucket",
                                     {"le": "0.005"}) == 2
    assert registry.get_sample_value("segmenter_event_to_change_seconds_bucket",
                                     {"le": "+Inf"}) == 4
    assert registry.get_sample_value("segmenter_event_to_change_seconds_sum") == 40.206
