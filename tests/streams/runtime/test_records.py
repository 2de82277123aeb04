"""The task's record helpers: Kafka's murmur2 partitioner (compiled copy of aiokafka's)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runtime.records import murmur2, partition_for


def _signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


# Kafka's own expectations (clients/src/test/.../UtilsTest.java, testMurmur2), as Java ints
@pytest.mark.parametrize(("key", "java"), [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_matches_kafka(key: bytes, java: int) -> None:
    assert _signed(murmur2(key)) == java


@settings(max_examples=500)
@given(st.binary(max_size=70))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    # every tail length (0-3 bytes past the last whole word), high bytes included
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.text(max_size=40), st.integers(min_value=1, max_value=64))
def test_partition_for_is_the_default_partitioner(cid: str, partitions: int) -> None:
    key = cid.encode()
    assert partition_for(key, partitions) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
