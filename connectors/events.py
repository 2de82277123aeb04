"""Validating and producing input events at the edge (HTTP ingest, file import).

The checks are the engine's own (`model.events.parse_event` / `parse_dict`, plus
`check_time` when the workers use the wall clock), so what the edge accepts the workers accept,
except for duplicates, which only the engine can see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from model.errors import ConfigError, RuleFileError
from model.events import (
    TOPIC_FOR_TYPE,
    Event,
    Rejection,
    check_time,
    parse_dict,
    parse_event,
)
from model.wire import DEFAULT_FUTURE_TOLERANCE_MS
from streams.runtime.settings import Settings

DEFAULT_RETENTION_MS = 400 * 86_400_000  # rules.model.RuleSettings' default


@dataclass(frozen=True, slots=True)
class EventRules:
    """What validation needs from the rule file."""

    currency: str
    retention_ms: int = DEFAULT_RETENTION_MS
    future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS


def event_rules(rules_path: Path | None, currency: str | None) -> EventRules:
    """The currency (and clock limits) from the rule file, or `currency` alone. ConfigError if
    neither is given, or if both are and they disagree."""
    if rules_path is None:
        if currency is None:
            raise ConfigError("give the rule file (--rules / SEGMENTER_RULES) or --currency: "
                              "purchases are checked against the rules' currency")
        return EventRules(currency)
    from rules.loader import load_rules

    try:
        settings = load_rules(rules_path).settings
    except RuleFileError as exc:
        raise ConfigError(f"invalid rule file {rules_path}:\n{exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read rule file {rules_path}: {exc.strerror or exc}") from exc
    if currency is not None and currency != settings.currency:
        raise ConfigError(f"--currency {currency} differs from the rule file's currency "
                          f"{settings.currency}")
    return EventRules(settings.currency, settings.retention_ms, settings.future_tolerance_ms)


class EventValidator:
    """parse_event / parse_dict with the rules' currency, then the clock checks."""

    def __init__(self, rules: EventRules, *, check_clock: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules = rules
        self.check_clock = check_clock
        self._clock = clock

    def _timed(self, result: Event | Rejection) -> Event | Rejection:
        """too_far_in_future against the wall clock always (whatever clock the workers use,
        such an event would move their event clock into the future); too_late only with
        `check_clock` (wall-clock workers would refuse it)."""
        if isinstance(result, Event):
            late = check_time(result, now_ms=int(self._clock() * 1000),
                              retention_ms=self.rules.retention_ms if self.check_clock
                              else 1 << 62,
                              future_tolerance_ms=self.rules.future_tolerance_ms)
            if late is not None:
                return late
        return result

    def check_bytes(self, raw: bytes) -> Event | Rejection:
        return self._timed(parse_event(raw, currency=self.rules.currency))

    def check_object(self, obj: Mapping[str, Any]) -> Event | Rejection:
        return self._timed(parse_dict(obj, currency=self.rules.currency))


def topic_of(settings: Settings, event: Event) -> str:
    """The (prefixed) input topic of an event's type."""
    return settings.topic(TOPIC_FOR_TYPE[event.type])


def input_topics(settings: Settings) -> list[str]:
    return sorted({settings.topic(t) for t in TOPIC_FOR_TYPE.values()})


async def produce_events(producer: AIOKafkaProducer, settings: Settings,
                         events: Sequence[tuple[Event, bytes]]) -> None:
    """Send (event, value bytes) pairs keyed by customer id to their topics and wait until
    Kafka acknowledged every one (raises KafkaError otherwise)."""
    futures = [await producer.send(topic_of(settings, event), value,
                                   key=event.customer_id.encode("utf-8"))
               for event, value in events]
    if futures:
        await asyncio.gather(*futures)
