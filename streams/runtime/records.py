"""Records a task writes besides its state: dead letters, re-keyed inputs (pure helpers)."""

from __future__ import annotations

import base64

import orjson
from aiokafka.partitioner import murmur2

from model.changes import format_ts
from model.events import Rejection


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives a key: Java clients and
    aiokafka agree on it; librdkafka clients (kcat) need `-X partitioner=murmur2_random`, and
    records that land elsewhere are re-keyed by the worker."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def dead_letter(key: bytes | None, value: bytes | None, rej: Rejection, *, topic: str,
                partition: int, offset: int, worker_id: str, now_ms: int) -> bytes:
    """A dead-letter record's value: the original key and value bytes, where they came from
    and why."""
    def text(b: bytes | None) -> str | None:
        if b is None:
            return None
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return None

    value = value or b""
    body = {
        "reason": str(rej.reason), "message": rej.message, "field": rej.field,
        "event_id": rej.event_id, "customer_id": rej.customer_id,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": text(key), "key_b64": base64.b64encode(key).decode() if key is not None else None,
        "value": text(value), "value_b64": base64.b64encode(value).decode(),
        "worker_id": worker_id, "at": format_ts(now_ms),
    }
    return orjson.dumps(body)
