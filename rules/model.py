"""A loaded, statically checked rule file (what the loader returns, the compiler consumes).

All durations are integer milliseconds. Everything is frozen: a RuleFile is a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.ast import Expr, Pos

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Default RFM grid: (R score, F score) -> cell name. R and F are 1..5.
_GRID_ROWS = {  # R score -> cell names for F = 1..5
    5: ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cannot_lose"),
}
DEFAULT_RFM_GRID: Mapping[tuple[int, int], str] = {
    (r, f): name for r, row in _GRID_ROWS.items() for f, name in enumerate(row, start=1)}


@dataclass(frozen=True, slots=True)
class EngagementSettings:
    half_life_ms: int = 14 * DAY_MS
    points: Mapping[str, float] = field(default_factory=dict)  # event type -> points


@dataclass(frozen=True, slots=True)
class RfmSettings:
    window_ms: int = 365 * DAY_MS
    recency_days: tuple[float, float, float, float] = (14, 30, 90, 180)
    frequency: tuple[float, float, float, float] = (1, 2, 4, 8)
    monetary: tuple[float, float, float, float] = (100, 500, 1500, 5000)
    grid: Mapping[tuple[int, int], str] = field(default_factory=lambda: dict(DEFAULT_RFM_GRID))


@dataclass(frozen=True, slots=True)
class RuleSettings:
    currency: str
    resolution_ms: int = HOUR_MS
    retention_ms: int = 400 * DAY_MS
    dedup_horizon_ms: int = 7 * DAY_MS
    future_tolerance_ms: int = 5 * MINUTE_MS
    engagement: EngagementSettings = field(default_factory=EngagementSettings)
    rfm: RfmSettings = field(default_factory=RfmSettings)
    control_salt: str | None = None  # salt of the control-group hash (rules/pipelines.py)
    # settings.models: name -> a loaded rules.models.file model (BgNbdModel | KMeansModel), for
    # p_alive(), expected_purchases(), clv(), cluster() (rules/predictive.py)
    models: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SegmentDef:
    id: str
    when: Expr
    when_text: str
    label: str | None = None
    color: str | None = None
    icon: str | None = None
    group: str | None = None
    exit_when: Expr | None = None
    exit_when_text: str | None = None
    min_dwell_ms: int = 0
    actions: Mapping[str, Any] = field(default_factory=dict)
    pos: Pos = field(default_factory=lambda: Pos(1, 1))
    description: str | None = None  # for people: shown by /v1/segments and the dashboard
    control_share: float | None = None  # `control: 10%` -> 0.1: share held out (control group)
    control_salt: str | None = None  # this segment's own salt (else settings.control_salt)
    outcome: OutcomeDef | None = None  # what the control group is compared on (rules/outcome.py)


@dataclass(frozen=True, slots=True)
class RuleFile:
    version: int
    name: str
    settings: RuleSettings
    segments: tuple[SegmentDef, ...]
    content_hash: str  # "sha256:<hex of the file's bytes>": the rules_version of change records
    source: str = "<string>"
    # `pipelines:` in file order; the default one (no `when`) last. Empty: no pipelines.
    pipelines: tuple[PipelineDef, ...] = ()
    # settings.models: model name -> the model file's bytes as read (a published rules record
    # carries them, so that every worker evaluates the same models wherever it runs)
    model_files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineDef:
    """One entry of `pipelines:` (see rules/pipelines.py for what it means)."""

    id: str
    when: tuple[str, ...]  # segment ids and group names as written; () for the default
    segments: frozenset[str]  # the segments that put a customer in (groups expanded)
    label: str | None = None
    description: str | None = None
    follow_ups: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # enter/exit -> items
    default: bool = False
    pos: Pos = field(default_factory=lambda: Pos(1, 1))


@dataclass(frozen=True, slots=True)
class OutcomeDef:
    """A segment's `outcome:` (rules/outcome.py): what its treated and held-out customers are
    compared on. Either a metric (`metric` set: a numeric rule expression evaluated at
    entered_at + `window_ms`) or a conversion (`event_type` set: any such event within
    `window_ms` after entering)."""

    window_ms: int  # `after` of a metric, `within` of a conversion
    metric: Expr | None = None
    metric_text: str | None = None
    event_type: str | None = None
    pos: Pos = field(default_factory=lambda: Pos(1, 1))

    @property
    def kind(self) -> str:
        return "conversion" if self.event_type is not None else "metric"
