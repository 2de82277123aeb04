"""Faust agents. Each is a thin loop: decode, hand to a pure function, send what it returns.

Walking skeleton: purchases are turned into a placeholder segment change keyed by customer id;
the real engine replaces `placeholder_change` later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import faust
import orjson

if TYPE_CHECKING:
    from streams.app import Topics

log = logging.getLogger(__name__)


def register_agents(app: faust.App, topics: Topics) -> None:
    """Attach the agents to `app`."""

    @app.agent(topics.purchases, name="purchases", concurrency=1)
    async def purchases(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            change = placeholder_change(event.key, event.value)
            if change is None:
                log.warning("skipping an undecodable purchase at offset %s", event.message.offset)
                continue
            key, value = change
            await topics.segment_changes.send(key=key, value=value)


def placeholder_change(key: bytes | None, value: bytes | None) -> tuple[bytes, bytes] | None:
    """A purchase (JSON object) -> (customer id, placeholder change record), or None when the
    record carries no JSON object or no customer id."""
    try:
        event: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    customer_id = key.decode("utf-8", "replace") if key else event.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        return None
    record = {
        "customer_id": customer_id,
        "placeholder": True,
        "cause": {"kind": "event", "event_id": event.get("event_id"), "topic": "purchases"},
        "entered": [],
        "exited": [],
        "segments": [],
    }
    return customer_id.encode(), orjson.dumps(record)
