"""Load a rule file (YAML) into a statically checked RuleFile, or report every problem in it.

`load_rules` / `load_rules_text` never stop at the first problem: they collect all of them (each
with file, line, column and, where one exists, a suggestion) and raise one RuleFileError. The
only exception is invalid YAML, after which nothing else can be read.

Positions come from PyYAML's composed nodes (`yaml.compose`), so a problem inside an expression
points at the exact character in the file, also for quoted and multi-line (block) scalars.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import heapq
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from model.errors import ModelFileError, RuleFileError, RuleProblem
from rules.ast import Binary, Call, Duration, Expr, In, Items, Keyword, Literal, Pos, Unary, calls
from rules.catalogue import EVENT_TYPES, FUNCTIONS, KEYWORDS, PREDICTIVE
from rules.model import (
    DAY_MS,
    DEFAULT_RFM_GRID,
    MINUTE_MS,
    EngagementSettings,
    RfmSettings,
    RuleFile,
    RuleSettings,
    SegmentDef,
)
from rules.models.file import BgNbdModel, KMeansModel, Model, parse_model, pick_model
from rules.outcome import OutcomeParser
from rules.parser import UNIT_MS, Locate, parse_expression, string_source, to_source
from rules.pipelines import PipelineParser

__all__ = ["check_number_expression", "dependency_order", "format_duration", "load_rules",
           "load_rules_text"]

ID_RE = re.compile(r"[a-z][a-z0-9_]*")
COLOR_RE = re.compile(r"#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})")
DURATION_RE = re.compile(r"(\d+)([mhdw])")

TOP_KEYS = ("version", "name", "settings", "segments", "pipelines")
SETTINGS_KEYS = ("currency", "resolution", "retention", "dedup_horizon", "future_tolerance",
                 "engagement", "rfm", "control_salt", "models")
ENGAGEMENT_KEYS = ("half_life", "points")
RFM_KEYS = ("window", "recency_days", "frequency", "monetary", "grid")
SEGMENT_KEYS = ("id", "label", "description", "color", "icon", "group", "when", "exit_when",
                "min_dwell", "actions", "control", "control_salt", "outcome")

MIN_RESOLUTION_MS = MINUTE_MS
MAX_RESOLUTION_MS = DAY_MS

# Active ISO 4217 currency codes.
CURRENCIES = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW
KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU
UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
""".split())  # noqa: SIM905 - a table is easier to check against the standard
_CURRENCY_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "zł": "PLN", "zl": "PLN",
                     "kč": "CZK", "ft": "HUF", "lei": "RON", "fr": "CHF"}

# Unit words people write in durations, and the unit they mean.
_UNIT_WORDS = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("d", "day", "days"), "d"),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), "w"),
}

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


def load_rules(path: str | Path) -> RuleFile:
    """Read and check the rule file at `path`; raises RuleFileError listing every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = RuleProblem(source, 1, 1, f"cannot read the rule file: {reason}")
        raise RuleFileError([problem]) from None
    return load_rules_text(raw, source=source)


def load_rules_text(text: str | bytes, *, source: str = "<string>",
                    models: Mapping[str, bytes] | None = None) -> RuleFile:
    """Check rule-file text; `source` names the file in problems and in RuleFile.source.

    `models` (model name -> model file bytes, e.g. from a published rules record) stands in
    for the files that settings.models names; without it they are read from disk."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    content_hash = "sha256:" + hashlib.sha256(raw).hexdigest()
    if isinstance(text, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = raw[:exc.start].decode("utf-8", errors="replace")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            raise RuleFileError([RuleProblem(
                source, line, column, "the rule file is not valid UTF-8 text")]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    loader = _Loader(source, text, models)
    rule_file = loader.load(content_hash)
    if loader.problems or rule_file is None:
        raise RuleFileError(sorted(loader.problems, key=lambda p: (p.line, p.column)))
    return rule_file


def check_number_expression(text: str, rule_file: RuleFile, *, source: str) -> Expr:
    """Parse and check one numeric expression written outside a rule file (a k-means feature of
    `segmenter models fit`) against `rule_file`'s settings and segment ids, with the checks of
    a rule: function names and signatures, windows within resolution and retention, types.
    Raises RuleFileError (positions are columns of `text`, on line 1 of `source`)."""
    loader = _Loader(source, text)
    settings = rule_file.settings
    loader.window = _Window(settings.resolution_ms, settings.retention_ms)
    if not text.strip():
        raise RuleFileError([RuleProblem(source, 1, 1, "an empty expression")])
    expr = parse_expression(text, file=source, line=1, column=1)
    checker = _ExprChecker(loader, settings, sorted(s.id for s in rule_file.segments))
    kind = checker.type_of(expr)
    if not loader.problems and kind not in ("number", "any"):
        loader.add(_start(expr), f"must be a number, but {to_source(expr)} is "
                                 f"{_TYPE_NAMES.get(kind, kind)}")
    if loader.problems:
        raise RuleFileError(sorted(loader.problems, key=lambda p: (p.line, p.column)))
    return expr


def dependency_order(rule_file: RuleFile) -> list[int]:
    """Indexes of `rule_file.segments` in an evaluation order: a segment comes after every
    segment whose membership its rules read (`in_segment`) and, in a group, after the segments
    before it in that group. Stable: file order wherever the dependencies leave a choice.
    Raises RuleFileError if there is a cycle (load_rules never returns such a file)."""
    nodes = [_GraphNode(s.id, s.group, (s.when,) if s.exit_when is None else (s.when, s.exit_when))
             for s in rule_file.segments]
    graph = _DependencyGraph.of(nodes, self_references=True)
    problems = graph.cycle_problems(rule_file.source)
    if problems:
        raise RuleFileError(problems)
    return graph.order()


def format_duration(ms: int) -> str:
    """Milliseconds -> the shortest exact duration text: 604800000 -> '1w', 5400000 -> '90m'."""
    for unit in ("w", "d", "h", "m"):
        if ms % UNIT_MS[unit] == 0:
            return f"{ms // UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


# --- the loader ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Window:
    """What expression windows are checked against (None when the settings were invalid)."""

    resolution_ms: int | None
    retention_ms: int | None


class _Loader:
    """One load: collects problems while turning YAML nodes into the model."""

    def __init__(self, source: str, text: str,
                 models: Mapping[str, bytes] | None = None) -> None:
        self.source = source
        self.given_models = models
        self.text = text
        self.problems: list[RuleProblem] = []
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.model_bytes: dict[str, bytes] = {}  # settings.models: name -> the file's bytes
        defaults = RuleSettings(currency="XXX")
        self.window = _Window(defaults.resolution_ms, defaults.retention_ms)

    # problems and positions

    def add(self, where: Node | Pos | tuple[int, int], message: str,
            suggestion: str | None = None) -> None:
        if isinstance(where, Node):
            line, column = where.start_mark.line + 1, where.start_mark.column + 1
        elif isinstance(where, Pos):
            line, column = where.line, where.column
        else:
            line, column = where
        self.problems.append(RuleProblem(self.source, line, column, message, suggestion))

    def index_position(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, index) - 1
        return line + 1, index - self._line_starts[line] + 1

    # top level

    def load(self, content_hash: str) -> RuleFile | None:
        try:
            root = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            self._yaml_problem(exc)
            return None
        except yaml.reader.ReaderError as exc:
            self.add(self.index_position(exc.position),
                     f"invalid YAML: unacceptable character {exc.character!r}")
            return None
        if root is None:
            self.add((1, 1), "the rule file is empty")
            return None
        self._check_duplicate_keys(root)
        top = self.mapping(root, "the rule file", TOP_KEYS, required=("version", "segments"))
        if top is None:
            return None
        version = self._version(top.get("version"))
        # no name: the file's name without its extension (retail.yaml -> retail)
        name = (self.text_value(top.get("name"), "name", required=True)
                if "name" in top else _stem(self.source))
        settings = self._settings(top.get("settings"))
        segments = self._segments(top.get("segments"), settings)
        pipelines = PipelineParser(self).pipelines(top.get("pipelines"), top.get("segments"))
        if self.problems or settings is None or segments is None or version is None or not name:
            return None
        if self.model_bytes:  # a model refitted into the same file is a new rules version
            digest = hashlib.sha256(content_hash.encode())
            for model_name, raw in sorted(self.model_bytes.items()):
                digest.update(b"\0" + model_name.encode() + b"\0" + raw)
            content_hash = "sha256:" + digest.hexdigest()
        return RuleFile(version, name, settings, segments, content_hash, self.source,
                        pipelines or (), dict(self.model_bytes))

    def _yaml_problem(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark is not None:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        lines = self.text.splitlines()
        if 0 < line <= len(lines) and re.match(r"\s*(-\s*)?(when|exit_when)\s*:", lines[line - 1]):
            message += "; if the expression contains ': ', ' #' or starts with a quote, put it " \
                       "in a block: `when: >-` and the expression on the next lines"
        self.add((line, column), message)

    def _check_duplicate_keys(self, root: Node) -> None:
        stack = [root]
        seen_nodes: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen_nodes:  # aliases share nodes
                continue
            seen_nodes.add(id(node))
            if isinstance(node, MappingNode):
                first: dict[str, Node] = {}
                for key, value in node.value:
                    if isinstance(key, ScalarNode):
                        if key.value in first:
                            line = first[key.value].start_mark.line + 1
                            self.add(key, f"duplicate key {key.value!r} (first at line {line})")
                        else:
                            first[key.value] = key
                    stack.append(value)
            elif isinstance(node, SequenceNode):
                stack.extend(node.value)

    # generic node readers

    def mapping(self, node: Node | None, what: str, keys: Iterable[str],
                required: Iterable[str] = ()) -> dict[str, Node] | None:
        """The values of a mapping by key; problems for unknown and missing keys."""
        if node is None:
            return None
        if not isinstance(node, MappingNode):
            self.add(node, f"{what} must be a mapping of 'key: value' lines")
            return None
        try:
            SafeConstructor().flatten_mapping(node)  # YAML merge keys: `<<: *defaults`
        except yaml.MarkedYAMLError as exc:
            self._yaml_problem(exc)
            return None
        allowed = tuple(keys)
        out: dict[str, Node] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                self.add(key, f"a key in {what} must be a plain name")
                continue
            if key.value not in allowed:
                near = difflib.get_close_matches(key.value, allowed, n=1)
                listing = ", ".join(allowed)
                self.add(key, f"unknown key {key.value!r} in {what} (known keys: {listing})",
                         near[0] if near else None)
                continue
            out[key.value] = value  # the last one wins, as in YAML (repeats are reported)
        for key in required:
            if key not in out:
                self.add(node, f"{what} is missing the required key {key!r}")
        return out

    def text_value(self, node: Node | None, what: str, *, required: bool = False) -> str | None:
        """A scalar as the text written (so `label: 2024` is the text '2024')."""
        if node is None:
            return None
        if not isinstance(node, ScalarNode):
            self.add(node, f"{what} must be a text, not a {_kind(node)}")
            return None
        if node.tag == _NULL_TAG or not node.value.strip():
            if required:
                self.add(node, f"{what} is empty")
            return None
        return str(node.value)

    def duration(self, node: Node | None, what: str, *, positive: bool) -> int | None:
        if node is None:
            return None
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
            self.add(node, f"{what} must be a duration such as 30d (units: m, h, d, w)")
            return None
        text = str(node.value).strip()
        match = DURATION_RE.fullmatch(text)
        if match is None:
            message, suggestion = _duration_problem(text)
            self.add(node, f"{what}: {message}", suggestion)
            return None
        ms = int(match[1]) * UNIT_MS[match[2]]
        if positive and ms == 0:
            self.add(node, f"{what} must be longer than 0")
            return None
        return ms

    def number(self, node: Node, what: str) -> float | None:
        if isinstance(node, ScalarNode) and node.tag in (_INT_TAG, _FLOAT_TAG):
            value = _construct(node)
            if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
                return value
        self.add(node, f"{what} must be a number")
        return None

    # version, settings

    def _version(self, node: Node | None) -> int | None:
        if node is None:
            return None
        if isinstance(node, ScalarNode) and node.tag == _INT_TAG and _construct(node) == 1:
            return 1
        self.add(node, f"unsupported version {_written(node)}: this Segmenter reads version 1",
                 "1")
        return None

    def _settings(self, node: Node | None) -> RuleSettings | None:
        fields = self.mapping(node, "settings", SETTINGS_KEYS, required=("currency",))
        if fields is None:
            return None
        currency = self._currency(fields.get("currency"))
        resolution = self.duration(fields.get("resolution"), "resolution", positive=True)
        if resolution is not None and not MIN_RESOLUTION_MS <= resolution <= MAX_RESOLUTION_MS:
            self.add(fields["resolution"], "resolution must be between 1m and 1d",
                     "1m" if resolution < MIN_RESOLUTION_MS else "1d")
            resolution = None
        retention = self.duration(fields.get("retention"), "retention", positive=True)
        defaults = RuleSettings(currency="XXX")
        check_resolution = resolution or defaults.resolution_ms
        if retention is not None and retention < check_resolution:
            shown = format_duration(check_resolution)
            self.add(fields["retention"], f"retention must be at least the resolution ({shown})",
                     shown)
            retention = None
        dedup = self.duration(fields.get("dedup_horizon"), "dedup_horizon", positive=False)
        tolerance = self.duration(fields.get("future_tolerance"), "future_tolerance",
                                  positive=False)
        # Windows are checked against valid settings only (no cascade of follow-up problems).
        valid_resolution = resolution if "resolution" in fields else defaults.resolution_ms
        valid_retention = retention if "retention" in fields else defaults.retention_ms
        self.window = _Window(valid_resolution, valid_retention)
        engagement = self._engagement(fields.get("engagement"))
        rfm = self._rfm(fields.get("rfm"))
        control_salt = PipelineParser(self).salt(fields.get("control_salt"), "control_salt")
        models = self._models(fields.get("models"), currency)
        if currency is None or None in (engagement, rfm) or models is None or any(
            key in fields and value is None
            for key, value in (("resolution", resolution), ("retention", retention),
                               ("dedup_horizon", dedup), ("future_tolerance", tolerance))
        ):
            return None
        assert engagement is not None and rfm is not None and models is not None
        settings = RuleSettings(
            currency=currency,
            resolution_ms=resolution or defaults.resolution_ms,
            retention_ms=retention or defaults.retention_ms,
            dedup_horizon_ms=defaults.dedup_horizon_ms if dedup is None else dedup,
            future_tolerance_ms=defaults.future_tolerance_ms if tolerance is None else tolerance,
            engagement=engagement,
            rfm=rfm,
            control_salt=control_salt,
            models=models,
        )
        if models and not self._features_ok(fields["models"], settings):
            return None
        return settings

    def _models(self, node: Node | None, currency: str | None) -> dict[str, Model] | None:
        """settings.models: model name -> model file (relative to the rule file's folder),
        each read and checked now; its problems are reported at the file name."""
        if node is None:
            return {}
        if not isinstance(node, MappingNode):
            self.add(node, "settings.models must map model names to model files, e.g. "
                           "{churn: models/shop.json}")
            return None
        ok = True
        out: dict[str, Model] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, ScalarNode) else ""
            if not ID_RE.fullmatch(name):
                self.add(key, f"model name {name!r} must start with a lower-case letter and "
                              "contain only a-z, 0-9 and _", _id_suggestion(name))
                ok = False
                continue
            written = self.text_value(value, f"settings.models.{name}", required=True)
            if written is None:
                ok = False
                continue
            path = Path(written)
            if not path.is_absolute():
                path = Path(self.source).parent / path
            given = self.given_models
            if given is not None and name not in given:
                self.add(value, f"model {name!r}: the published rules record carries no model "
                                f"file for it (publish with `segmenter rules publish`, which "
                                f"includes the model files)")
                ok = False
                continue
            try:
                raw = path.read_bytes() if given is None else given[name]
                model = parse_model(raw, source=written)
            except OSError as exc:
                self.add(value, f"model {name!r}: cannot read the model file {written}: "
                                f"{exc.strerror or exc} (a relative path is read from the rule "
                                "file's folder)")
                ok = False
                continue
            except ModelFileError as exc:
                for problem in exc.problems:
                    self.add(value, f"model {name!r}: invalid model file {written}: {problem}")
                ok = False
                continue
            if isinstance(model, BgNbdModel) and currency is not None \
                    and model.currency is not None and model.currency != currency:
                self.add(value, f"model {name!r} was fitted on {model.currency} amounts, the "
                                f"rule file's currency is {currency}")
                ok = False
                continue
            out[name] = model
            self.model_bytes[name] = raw
        return out if ok else None

    def _features_ok(self, node: Node, settings: RuleSettings) -> bool:
        """Each k-means feature is a numeric expression valid with these settings, without a
        model function of its own; problems at the model's file name."""
        values = {str(k.value): v for k, v in node.value if isinstance(k, ScalarNode)}
        ok = True
        for name, model in settings.models.items():
            if not isinstance(model, KMeansModel):
                continue
            for i, feature in enumerate(model.features):
                sub = _Loader(f"feature {i + 1}", feature)
                sub.window = self.window
                try:
                    expr = parse_expression(feature, file=sub.source, line=1, column=1)
                except RuleFileError as exc:
                    sub.problems.extend(exc.problems)
                else:
                    kind = _ExprChecker(sub, settings, []).type_of(expr)
                    if not sub.problems and kind not in ("number", "any"):
                        sub.add(_start(expr), "must be a number")
                    used = sorted({c.name for c in calls(expr) if c.name in PREDICTIVE})
                    if used:
                        sub.add(_start(expr), f"a feature cannot use {', '.join(used)}()")
                for problem in sub.problems:
                    self.add(values[name], f"model {name!r}: feature {i + 1} ({feature!r}), "
                                           f"column {problem.column}: {problem.message}",
                             problem.suggestion)
                    ok = False
        return ok

    def _currency(self, node: Node | None) -> str | None:
        text = self.text_value(node, "currency", required=True)
        if text is None or node is None:
            return None
        if text in CURRENCIES:
            return text
        suggestion = _CURRENCY_SYMBOLS.get(text.strip().lower())
        if suggestion is None and text.strip().upper() in CURRENCIES:
            suggestion = text.strip().upper()
        if suggestion is None:
            near = difflib.get_close_matches(text.strip().upper(), sorted(CURRENCIES), n=1)
            suggestion = near[0] if near else None
        self.add(node, f"currency {text!r} is not an ISO 4217 code (three capital letters, "
                       "e.g. PLN, EUR, USD)", suggestion)
        return None

    def _engagement(self, node: Node | None) -> EngagementSettings | None:
        default = EngagementSettings()
        fields = self.mapping(node, "settings.engagement", ENGAGEMENT_KEYS)
        if fields is None:
            return default if node is None else None
        ok = True
        half_life = self.duration(fields.get("half_life"), "engagement.half_life", positive=True)
        ok &= half_life is not None or "half_life" not in fields
        points: dict[str, float] = {}
        points_node = fields.get("points")
        if points_node is not None:
            if not isinstance(points_node, MappingNode):
                self.add(points_node, "engagement.points must map event types to points, "
                                      "e.g. {email_click: 3, purchase: 10}")
                ok = False
            else:
                for key, value in points_node.value:
                    event = key.value if isinstance(key, ScalarNode) else None
                    if event not in EVENT_TYPES:
                        near = difflib.get_close_matches(str(event), EVENT_TYPES, n=1)
                        self.add(key, f"unknown event type {event!r} in engagement.points",
                                 near[0] if near else None)
                        ok = False
                        continue
                    number = self.number(value, f"engagement.points.{event}")
                    if number is None:
                        ok = False
                    else:
                        points[event] = number
        if not ok:
            return None
        return EngagementSettings(
            half_life_ms=default.half_life_ms if half_life is None else half_life, points=points)

    def _rfm(self, node: Node | None) -> RfmSettings | None:
        default = RfmSettings()
        fields = self.mapping(node, "settings.rfm", RFM_KEYS)
        if fields is None:
            return default if node is None else None
        ok = True
        window = None
        if "window" in fields:
            window = self.duration(fields["window"], "rfm.window", positive=True)
            if window is None or not self.window_fits(window, fields["window"], "rfm.window",
                                                      None):
                ok = False
        thresholds: dict[str, tuple[float, float, float, float]] = {}
        for key in ("recency_days", "frequency", "monetary"):
            if key in fields:
                values = self._thresholds(fields[key], f"rfm.{key}")
                if values is None:
                    ok = False
                else:
                    thresholds[key] = values
        grid = self._grid(fields.get("grid"))
        if grid is None or not ok:
            return None
        return RfmSettings(
            window_ms=window or default.window_ms,
            recency_days=thresholds.get("recency_days", default.recency_days),
            frequency=thresholds.get("frequency", default.frequency),
            monetary=thresholds.get("monetary", default.monetary),
            grid=grid,
        )

    def _thresholds(self, node: Node, what: str) -> tuple[float, float, float, float] | None:
        if not isinstance(node, SequenceNode) or len(node.value) != 4:
            self.add(node, f"{what} must be a list of exactly 4 increasing numbers, "
                           "e.g. [14, 30, 90, 180]")
            return None
        numbers = [self.number(item, f"each value of {what}") for item in node.value]
        if any(n is None for n in numbers):
            return None
        a, b, c, d = (n for n in numbers if n is not None)
        if not a < b < c < d:
            self.add(node, f"{what} must be increasing, got {[a, b, c, d]}",
                     "[" + ", ".join(_number_text(n) for n in sorted({a, b, c, d})) + "]"
                     if len({a, b, c, d}) == 4 else None)
            return None
        return a, b, c, d

    def _grid(self, node: Node | None) -> dict[tuple[int, int], str] | None:
        grid = dict(DEFAULT_RFM_GRID)
        if node is None:
            return grid
        if not isinstance(node, MappingNode):
            self.add(node, 'rfm.grid must map cell names to lists of "RF" scores, '
                           'e.g. {champions: ["55", "54"]}')
            return None
        ok = True
        assigned: dict[tuple[int, int], str] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else ""
            if not ID_RE.fullmatch(str(name)):
                self.add(key, f"rfm cell name {name!r} must match [a-z][a-z0-9_]*",
                         _id_suggestion(str(name)))
                ok = False
                continue
            if not isinstance(value, SequenceNode):
                self.add(value, f'rfm.grid.{name} must be a list of "RF" scores such as ["54"]')
                ok = False
                continue
            for item in value.value:
                text = item.value if isinstance(item, ScalarNode) else ""
                if not re.fullmatch(r"[1-5][1-5]", str(text)):
                    self.add(item, f'rfm.grid.{name}: {_written(item)} is not an "RF" score: two '
                                   "digits 1-5, recency first (e.g. \"54\")")
                    ok = False
                    continue
                cell = (int(text[0]), int(text[1]))
                if cell in assigned and assigned[cell] != name:
                    self.add(item, f"rfm cell {text} is given to both {assigned[cell]!r} "
                                   f"and {name!r}")
                    ok = False
                assigned[cell] = name
        grid.update(assigned)
        return grid if ok else None

    # segments

    def _segments(self, node: Node | None, settings: RuleSettings | None
                  ) -> tuple[SegmentDef, ...] | None:
        if node is None:
            return None
        if not isinstance(node, SequenceNode):
            self.add(node, "segments must be a list: one '- id: ...' entry per segment")
            return None
        if not node.value:
            self.add(node, "segments is empty: define at least one segment")
            return None
        entries: list[tuple[MappingNode, dict[str, Node]]] = []
        first_line: dict[str, int] = {}
        for item in node.value:
            fields = self.mapping(item, "a segment", SEGMENT_KEYS, required=("id", "when"))
            if fields is None or not isinstance(item, MappingNode):
                continue
            entries.append((item, fields))
            id_node = fields.get("id")
            seg_id = self.text_value(id_node, "id", required=True)
            if seg_id is None or id_node is None:
                continue
            if not ID_RE.fullmatch(seg_id):
                self.add(id_node, f"segment id {seg_id!r} must start with a lower-case letter "
                                  "and contain only a-z, 0-9 and _", _id_suggestion(seg_id))
            elif seg_id in first_line:
                self.add(id_node, f"duplicate segment id {seg_id!r} (first defined at line "
                                  f"{first_line[seg_id]})")
            else:
                first_line[seg_id] = id_node.start_mark.line + 1
        checker = _ExprChecker(self, settings, sorted(first_line))
        out: list[SegmentDef] = []
        # Cycles are looked for among every segment whose rules could be parsed, also those with
        # other problems, so that one load reports them all.
        graph_nodes: list[_GraphNode] = []
        for item, fields in entries:
            segment = self._segment(item, fields, checker, graph_nodes)
            if segment is not None:
                out.append(segment)
        graph = _DependencyGraph.of(graph_nodes)
        self.problems.extend(graph.cycle_problems(self.source))
        return tuple(out)

    def _segment(self, item: MappingNode, fields: dict[str, Node], checker: _ExprChecker,
                 graph_nodes: list[_GraphNode]) -> SegmentDef | None:
        id_node = fields.get("id")
        seg_id = id_node.value if isinstance(id_node, ScalarNode) else None
        ok = True
        label = self.text_value(fields.get("label"), "label")
        description = self.text_value(fields.get("description"), "description")
        icon = self.text_value(fields.get("icon"), "icon")
        color = self._color(fields.get("color"))
        ok &= ("color" not in fields) or color is not None
        group = self.text_value(fields.get("group"), "group")
        if group is not None and not ID_RE.fullmatch(group):
            self.add(fields["group"], f"group name {group!r} must start with a lower-case letter "
                                      "and contain only a-z, 0-9 and _", _id_suggestion(group))
            ok = False
        min_dwell = self.duration(fields.get("min_dwell"), "min_dwell", positive=False)
        ok &= ("min_dwell" not in fields) or min_dwell is not None
        control = PipelineParser(self).percent(fields.get("control"), "control")
        control_salt = PipelineParser(self).salt(fields.get("control_salt"), "control_salt")
        ok &= ("control" not in fields) or control is not None
        outcome = OutcomeParser(self, checker).outcome(fields.get("outcome"), seg_id,
                                                       "control" in fields)
        ok &= ("outcome" not in fields) or outcome is not None
        actions: dict[str, Any] = {}
        if "actions" in fields:
            if isinstance(fields["actions"], MappingNode):
                actions = _construct(fields["actions"])
            else:
                self.add(fields["actions"], "actions must be a mapping, e.g. "
                                            "{pipeline: premium, followups: [call]}")
                ok = False
        when = self._expression(fields.get("when"), "when", seg_id, checker)
        exit_when = self._expression(fields.get("exit_when"), "exit_when", seg_id, checker)
        if not isinstance(seg_id, str) or not ID_RE.fullmatch(seg_id):
            return None
        parsed = tuple(e[0] for e in (when, exit_when) if e is not None)
        graph_nodes.append(_GraphNode(seg_id, group if ok else None, parsed))
        ok &= all(e is not None and e[2] for e in (when, exit_when) if e is not None)
        ok &= ("exit_when" not in fields) or exit_when is not None
        if not ok or when is None:
            return None
        return SegmentDef(
            id=seg_id, when=when[0], when_text=when[1], label=label, color=color, icon=icon,
            group=group, exit_when=exit_when[0] if exit_when else None,
            exit_when_text=exit_when[1] if exit_when else None,
            min_dwell_ms=min_dwell or 0, actions=actions, description=description,
            control_share=control, control_salt=control_salt, outcome=outcome,
            pos=Pos(item.start_mark.line + 1, item.start_mark.column + 1),
        )

    def _color(self, node: Node | None) -> str | None:
        if node is None:
            return None
        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            line = self.text.splitlines()[node.start_mark.line]
            if "#" in line:
                self.add(node, "color is empty: in YAML a # starts a comment, so quote the colour",
                         '"#' + line.split("#", 1)[1].split()[0] + '"' if
                         line.split("#", 1)[1].split() else None)
            else:
                self.add(node, "color is empty")
            return None
        text = self.text_value(node, "color")
        if text is None:
            return None
        if COLOR_RE.fullmatch(text):
            return text
        suggestion = "#" + text if COLOR_RE.fullmatch("#" + text) else None
        self.add(node, f"color {text!r} must be #RGB or #RRGGBB (hexadecimal digits)", suggestion)
        return None

    def _expression(self, node: Node | None, what: str, seg_id: str | None,
                    checker: _ExprChecker) -> tuple[Expr, str, bool] | None:
        """The parsed expression, its text and whether it passed the static checks (None if
        it could not be parsed)."""
        if node is None:
            return None
        if not isinstance(node, ScalarNode):
            self.add(node, f"{what} must be an expression written as text, not a {_kind(node)}")
            return None
        value = str(node.value)
        if not value.strip() or (node.style is None and value == "~"):
            self.add(node, f"{what} is empty: write a condition such as purchase_count(30d) >= 1")
            return None
        try:
            expr = parse_expression(value, file=self.source, line=node.start_mark.line + 1,
                                    column=node.start_mark.column + 1,
                                    locate=self._scalar_locator(node))
        except RuleFileError as exc:
            self.problems.extend(exc.problems)
            return None
        problems_before = len(self.problems)
        checker.check_condition(expr, what, seg_id)
        return expr, value.strip(), len(self.problems) == problems_before

    def window_fits(self, ms: int, where: Node | Pos, what: str, call: Call | None,
                    factor: int = 1) -> bool:
        """Is a window a positive multiple of the resolution that fits in the retention?"""
        resolution, retention = self.window.resolution_ms, self.window.retention_ms
        shown = format_duration(ms)

        def suggest(new_ms: int) -> str:
            text = format_duration(new_ms)
            if call is None:
                return text
            arg = next(a for a in call.args if isinstance(a, Duration))
            return _replace_arg(call, arg, text)

        if ms <= 0:
            self.add(where, f"{what} must be longer than 0",
                     suggest(resolution) if resolution else None)
            return False
        if resolution is not None and ms % resolution:
            nearest = max(resolution, (ms + resolution // 2) // resolution * resolution)
            self.add(where, f"{what} ({shown}) is not a multiple of the resolution "
                            f"({format_duration(resolution)})", suggest(nearest))
            return False
        if retention is not None and ms * factor > retention:
            if factor == 1:
                self.add(where, f"{what} ({shown}) is longer than the retention "
                                f"({format_duration(retention)}): shorten it or raise "
                                "settings.retention")
            else:
                step = resolution or MINUTE_MS
                longest = retention // factor // step * step
                self.add(where, f"{what} ({shown}) compares two consecutive {shown} periods, so "
                                f"{format_duration(ms * factor)} must fit in the retention "
                                f"({format_duration(retention)})",
                         suggest(longest) if longest > 0 else None)
            return False
        return True

    def _scalar_locator(self, node: ScalarNode) -> Locate:
        """Map offsets in a scalar's value to file positions by walking the value and the raw
        text side by side (the non-blank characters match, except for escape sequences)."""
        start = node.start_mark.index
        raw = self.text[start:node.end_mark.index]
        value = str(node.value)
        if node.style in ("|", ">"):
            p = raw.find("\n") + 1 if "\n" in raw else len(raw)
        elif node.style in ("'", '"'):
            p = 1
        else:
            p = 0
        where: list[int] = []
        for char in value:
            if char.isspace():
                where.append(p)
                continue
            while p < len(raw) and raw[p].isspace():
                p += 1
            found = raw.find(char, p, p + 8)
            if found < 0:
                where.append(p)
            else:
                where.append(found)
                p = found + 1
        where.append(p)

        def locate(offset: int) -> tuple[int, int]:
            return self.index_position(start + where[max(0, min(offset, len(value)))])

        return locate


# --- static checks of expressions ------------------------------------------------------------

_RESULT_TYPES = {"number": "number", "number?": "number", "bool": "bool", "string?": "string",
                 "any": "any"}
_KIND_HELP = {
    "window": "a duration such as 30d",
    "event_type": 'an event type in quotes, e.g. "email_click"',
    "segment": 'a segment id in quotes, e.g. "vip"',
    "string": 'a text in quotes, e.g. "region"',
    "category": 'a product category in quotes, e.g. "books"',
    "horizon": "a duration such as 365d",
    "model": 'a model name of settings.models in quotes, e.g. "churn"',
}
_TYPE_NAMES = {"number": "a number", "string": "a text", "bool": "a condition (true/false)",
               "null": "null", "duration": "a duration"}


class _ExprChecker:
    """Types, function signatures, windows and segment references of expressions."""

    def __init__(self, loader: _Loader, settings: RuleSettings | None, ids: list[str]) -> None:
        self.loader = loader
        self.settings = settings
        self.ids = ids
        grid = settings.rfm.grid if settings is not None else DEFAULT_RFM_GRID
        self.cells = sorted(set(grid.values()))
        self.segment_id: str | None = None

    def check_condition(self, expr: Expr, what: str, seg_id: str | None) -> None:
        self.segment_id = seg_id
        kind = self.type_of(expr)
        if kind not in ("bool", "any"):
            source = to_source(expr)
            self.loader.add(_start(expr), f"{what} must be a condition (true or false), but "
                                          f"{source} is {_TYPE_NAMES[kind]}",
                            f"{source} > 0" if kind == "number" else None)

    def type_of(self, expr: Expr) -> str:
        if isinstance(expr, Literal):
            return _literal_type(expr)
        if isinstance(expr, Duration):
            return "duration"
        if isinstance(expr, Items):
            self.loader.add(expr.pos, "a list is only allowed as the event types of count(), "
                                      'e.g. count(["page_view", "product_view"], 30d)')
            return "any"
        if isinstance(expr, Keyword):
            self.loader.add(expr.pos, f"{expr.name}=... is only allowed as a function argument")
            return "any"
        if isinstance(expr, Call):
            return self._call(expr)
        if isinstance(expr, Unary):
            kind = self.type_of(expr.operand)
            if expr.op == "not":
                self._need(expr.operand, kind, "bool", "the operand of 'not'")
                return "bool"
            self._need(expr.operand, kind, "number", "the operand of unary '-'")
            return "number"
        if isinstance(expr, Binary):
            left, right = self.type_of(expr.left), self.type_of(expr.right)
            if expr.op in ("and", "or"):
                self._need(expr.left, left, "bool", f"the operands of {expr.op!r}")
                self._need(expr.right, right, "bool", f"the operands of {expr.op!r}")
                return "bool"
            if expr.op in ("+", "-", "*", "/"):
                self._need(expr.left, left, "number", f"the operands of {expr.op!r}")
                self._need(expr.right, right, "number", f"the operands of {expr.op!r}")
                return "number"
            self._comparison(expr, left, right)
            return "bool"
        self._in(expr, self.type_of(expr.operand))
        return "bool"

    def _need(self, expr: Expr, kind: str, wanted: str, what: str) -> None:
        if kind in (wanted, "any"):
            return
        source = to_source(expr)
        suggestion = None
        if wanted == "bool" and kind == "number":
            suggestion = f"{source} > 0"
        self.loader.add(_start(expr), f"{what} must be {_TYPE_NAMES[wanted]}, but {source} is "
                                      f"{_TYPE_NAMES[kind]}", suggestion)

    def _comparison(self, expr: Binary, left: str, right: str) -> None:
        if "any" in (left, right):
            pass
        elif "null" in (left, right):
            if expr.op not in ("==", "!="):
                self.loader.add(expr.pos, f"a comparison with null is always false: use "
                                          f"'== null' or '!= null', not {expr.op!r}")
                return
        elif left != right:
            self.loader.add(expr.pos, f"cannot compare {_TYPE_NAMES[left]} with "
                                      f"{_TYPE_NAMES[right]}: {to_source(expr)}")
            return
        elif left == "bool" and expr.op not in ("==", "!="):
            self.loader.add(expr.pos, f"true/false values cannot be ordered with {expr.op!r}")
            return
        for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
            if isinstance(other, Literal) and isinstance(other.value, str):
                self._rfm_cell(side, other)

    def _in(self, expr: In, kind: str) -> None:
        for item in expr.items:
            item_kind = _literal_type(item)
            if item_kind == "null":
                self.loader.add(item.pos, "null in an 'in' list never matches (a comparison with "
                                          "null is false): test '== null' separately")
            elif kind not in ("any", "null") and item_kind != kind:
                self.loader.add(item.pos, f"the list of 'in' holds {_TYPE_NAMES[item_kind]} "
                                          f"but {to_source(expr.operand)} is {_TYPE_NAMES[kind]}")
            elif isinstance(item.value, str):
                self._rfm_cell(expr.operand, item)

    def _rfm_cell(self, side: Expr, literal: Literal) -> None:
        """`rfm_segment() == "champion"` can never be true: catch the typo."""
        if isinstance(side, Call) and side.name == "rfm_segment" and not side.args \
                and literal.value not in self.cells:
            near = difflib.get_close_matches(str(literal.value), self.cells, n=1)
            self.loader.add(literal.pos, f"rfm_segment() is never {literal.value!r}: the cells "
                                         f"are {', '.join(self.cells)}", near[0] if near else None)

    def _call(self, call: Call) -> str:
        sig = FUNCTIONS.get(call.name)
        if sig is None:
            near = difflib.get_close_matches(call.name, list(FUNCTIONS), n=1)
            self.loader.add(call.pos, f"unknown function {call.name!r}", near[0] if near else None)
            for arg in call.args:
                if isinstance(arg, Keyword):
                    self.type_of(arg.value)
                elif not isinstance(arg, Duration | Items):
                    self.type_of(arg)
            return "any"
        args = tuple(a for a in call.args if not isinstance(a, Keyword))
        self._keywords(call)
        params = sig.params
        if call.name == "count" and len(args) == 1 and isinstance(args[0], Duration):
            params = ("window",)  # count(w): events of every type
        if len(args) != len(params):
            wanted = ", ".join(params) or "none"
            count = len(params)
            self.loader.add(call.pos, f"{call.name}() takes {count} argument"
                                      f"{'' if count == 1 else 's'} ({wanted}), got "
                                      f"{len(args)}", _example_call(call, params))
        for kind, arg in zip(params, args, strict=False):
            if call.name == "count" and kind == "event_type" and isinstance(arg, Items):
                self._event_types(call, arg)
            else:
                self._argument(call, kind, arg)
        if call.name in ("rfm_f", "rfm_m", "rfm_segment") and self.settings is not None:
            # the default rfm.window (365d) must fit the file's resolution and retention too
            self.loader.window_fits(self.settings.rfm.window_ms, call.pos,
                                    f"settings.rfm.window, which {call.name}() uses,", None)
        if call.name in PREDICTIVE and self.settings is not None:
            self._model_ref(call)
        if call.name == "engagement_score" and self.settings is not None \
                and not self.settings.engagement.points:
            self.loader.add(call.pos, "engagement_score() is always 0: settings.engagement.points "
                                      "gives no event any points")
        return _RESULT_TYPES[sig.result]

    def _model_ref(self, call: Call) -> None:
        """The model a model function uses exists, is of its kind (the only one of its kind
        when not named) and, for clv(), has Gamma-Gamma."""
        assert self.settings is not None
        named = next((a.value for a in call.args if isinstance(a, Keyword)
                      and a.name == "model"), None)
        if named is not None and not (isinstance(named, Literal)
                                      and isinstance(named.value, str) and named.value):
            return  # reported by _keywords
        name = named.value if isinstance(named, Literal) else None
        models = self.settings.models
        picked = pick_model(models, PREDICTIVE[call.name], None if name is None else str(name),
                            call.name)
        if isinstance(picked, str):
            near = difflib.get_close_matches(str(name), list(models), n=1) if name else []
            self.loader.add(named.pos if isinstance(named, Literal) else call.pos, picked,
                            near[0] if near else None)
            return
        model_name, model = picked
        if call.name == "clv" and isinstance(model, BgNbdModel) and model.spend is None:
            self.loader.add(call.pos, f"clv() needs a spend model (Gamma-Gamma p, q, v) and "
                                      f"model {model_name!r} has none: fit it without "
                                      "--no-spend")

    def _keywords(self, call: Call) -> None:
        """name=value arguments: known for the function, given once, after the others."""
        allowed = KEYWORDS.get(call.name, {})
        seen: set[str] = set()
        after_keyword = False
        for arg in call.args:
            if not isinstance(arg, Keyword):
                if after_keyword:
                    self.loader.add(_start(arg), f"in {call.name}(), the arguments without a "
                                                 "name come first, then name=value")
                continue
            after_keyword = True
            if not allowed:
                self.loader.add(arg.pos, f"{call.name}() takes no name=value arguments",
                                _example_call(call, FUNCTIONS[call.name].params))
                continue
            if arg.name not in allowed:
                near = difflib.get_close_matches(arg.name, list(allowed), n=1)
                self.loader.add(arg.pos, f"{call.name}() has no argument {arg.name!r}: it "
                                         f"takes {', '.join(sorted(allowed))}",
                                near[0] if near else None)
                continue
            if arg.name in seen:
                self.loader.add(arg.pos, f"{arg.name}= is given twice in {call.name}()")
            seen.add(arg.name)
            value = arg.value
            if not (isinstance(value, Literal) and isinstance(value.value, str)):
                source = to_source(value)
                self.loader.add(_start(value), f"the {arg.name} of {call.name}() must be "
                                               f"{_KIND_HELP[allowed[arg.name]]}, not {source}",
                                string_source(str(value.value))
                                if isinstance(value, Literal) and value.value is not None
                                and not isinstance(value.value, bool) else None)
            elif not value.value:
                self.loader.add(value.pos, f"the {arg.name} of {call.name}() is empty")

    def _event_types(self, call: Call, arg: Items) -> None:
        """The list of count(["a", "b"], w): known event types, each once."""
        if not arg.items:
            self.loader.add(arg.pos, "the list of event types of count() is empty",
                            'count(["page_view", "product_view"], 30d)')
            return
        seen: set[object] = set()
        for item in arg.items:
            value = item.value
            if not isinstance(value, str):
                self.loader.add(item.pos, "the list of count() must hold event types in quotes, "
                                          f"not {to_source(item)}",
                                string_source(str(value)) if value is not None
                                and not isinstance(value, bool) else None)
            elif value not in EVENT_TYPES:
                near = difflib.get_close_matches(value, EVENT_TYPES, n=1)
                self.loader.add(item.pos, f"unknown event type {value!r}",
                                near[0] if near else None)
            elif value in seen:
                self.loader.add(item.pos, f"event type {value!r} is listed twice")
            seen.add(value)

    def _argument(self, call: Call, kind: str, arg: Expr) -> None:
        if kind == "horizon":
            if isinstance(arg, Duration) and arg.ms > 0:
                return
            if isinstance(arg, Duration):
                self.loader.add(arg.pos, f"the horizon of {call.name}() must be longer than 0")
                return
            suggestion = None
            if isinstance(arg, Literal) and isinstance(arg.value, int) \
                    and not isinstance(arg.value, bool):
                suggestion = _replace_arg(call, arg, f"{arg.value}d")
            self.loader.add(_start(arg), f"the horizon of {call.name}() must be "
                                         f"{_KIND_HELP[kind]}, not {to_source(arg)}", suggestion)
            return
        if kind == "window":
            if isinstance(arg, Duration):
                factor = 2 if call.name == "growth_ratio" else 1
                self.loader.window_fits(arg.ms, arg.pos, f"the window of {call.name}()",
                                         call, factor)
                return
            suggestion = None
            if isinstance(arg, Literal) and isinstance(arg.value, int) \
                    and not isinstance(arg.value, bool):
                suggestion = _replace_arg(call, arg, f"{arg.value}d")
            elif isinstance(arg, Literal) and isinstance(arg.value, str) \
                    and DURATION_RE.fullmatch(arg.value):
                suggestion = _replace_arg(call, arg, arg.value)
            self.loader.add(_start(arg), f"the window of {call.name}() must be "
                                         f"{_KIND_HELP[kind]}, not {to_source(arg)}", suggestion)
            return
        if not (isinstance(arg, Literal) and isinstance(arg.value, str)):
            if isinstance(arg, Items):
                self.loader.add(arg.pos, f"the argument of {call.name}() must be "
                                         f"{_KIND_HELP[kind]}, not a list (a list is only "
                                         "allowed as the event types of count())")
                return
            self.loader.add(_start(arg), f"the argument of {call.name}() must be "
                                         f"{_KIND_HELP[kind]}, not {to_source(arg)}")
            return
        value = arg.value
        if kind == "event_type" and value not in EVENT_TYPES:
            near = difflib.get_close_matches(value, EVENT_TYPES, n=1)
            self.loader.add(arg.pos, f"unknown event type {value!r}", near[0] if near else None)
        elif kind == "segment":
            if value == self.segment_id:
                self.loader.add(arg.pos, f"segment {value!r} cannot depend on itself")
            elif value not in self.ids:
                near = difflib.get_close_matches(value, self.ids, n=1)
                self.loader.add(arg.pos, f"unknown segment {value!r} in in_segment()",
                                near[0] if near else None)




# --- dependencies between segments -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Edge:
    """Segment `source` needs `target` evaluated first: via in_segment(target) at `pos`, or
    because both are in `group` and target comes first."""

    source: int
    target: int
    pos: Pos | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class _GraphNode:
    id: str
    group: str | None
    exprs: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class _DependencyGraph:
    ids: tuple[str, ...]
    edges: tuple[tuple[_Edge, ...], ...]  # per segment, what it needs first

    @staticmethod
    def of(segments: Iterable[_GraphNode], *, self_references: bool = False
           ) -> _DependencyGraph:
        """The graph of `segments`; a segment reading its own membership is a cycle only with
        `self_references` (the loader reports it as a problem of its own)."""
        segs = list(segments)
        index: dict[str, int] = {}
        for i, seg in enumerate(segs):
            index.setdefault(seg.id, i)
        edges: list[list[_Edge]] = [[] for _ in segs]
        last_in_group: dict[str, int] = {}
        for i, seg in enumerate(segs):
            for expr in seg.exprs:
                for call in calls(expr):
                    if call.name != "in_segment" or len(call.args) != 1:
                        continue
                    arg = call.args[0]
                    if not isinstance(arg, Literal) or arg.value not in index:
                        continue
                    if self_references or index[str(arg.value)] != i:
                        edges[i].append(_Edge(i, index[str(arg.value)], arg.pos))
            if seg.group is not None:
                if seg.group in last_in_group:
                    edges[i].append(_Edge(i, last_in_group[seg.group], group=seg.group))
                last_in_group[seg.group] = i
        return _DependencyGraph(tuple(s.id for s in segs), tuple(tuple(e) for e in edges))

    def order(self) -> list[int]:
        """Kahn's algorithm, always taking the lowest ready index (stable file order)."""
        waiting = [len({e.target for e in es if e.target != e.source}) for es in self.edges]
        needed_by: list[set[int]] = [set() for _ in self.ids]
        for es in self.edges:
            for e in es:
                if e.target != e.source:
                    needed_by[e.target].add(e.source)
        ready = [i for i, n in enumerate(waiting) if n == 0]
        heapq.heapify(ready)
        out: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            out.append(i)
            for j in needed_by[i]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
        return out

    def _reachable(self, start: int) -> set[int]:
        seen: set[int] = set()
        stack = [e.target for e in self.edges[start]]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(e.target for e in self.edges[node])
        return seen

    def cycle_problems(self, source: str) -> list[RuleProblem]:
        """One problem per cycle (per strongly connected set of segments), at the in_segment
        call that closes it, with the path spelled out."""
        problems: list[RuleProblem] = []
        reach = [self._reachable(i) for i in range(len(self.ids))]
        reported: set[int] = set()
        for start in range(len(self.ids)):
            if start in reported or start not in reach[start]:
                continue
            component = {j for j in reach[start] if start in reach[j]}
            reported |= component
            path = self._path_back(start, component)
            first = next(e for e in path if e.pos is not None)
            names = " -> ".join([self.ids[e.source] for e in path] + [self.ids[start]])
            steps = "; ".join(_describe_edge(e, self.ids) for e in path)
            assert first.pos is not None
            problems.append(RuleProblem(source, first.pos.line, first.pos.column,
                                        f"in_segment cycle {names}: {steps}"))
        return problems

    def _path_back(self, start: int, component: set[int]) -> list[_Edge]:
        """Shortest chain of edges start -> ... -> start inside `component` (BFS)."""
        previous: dict[int, _Edge] = {}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for edge in self.edges[node]:
                if edge.target not in component:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, previous[path[0].source])
                    return path
                if edge.target not in previous:
                    previous[edge.target] = edge
                    queue.append(edge.target)
        raise AssertionError("no cycle in a strongly connected component")


def _describe_edge(edge: _Edge, ids: tuple[str, ...]) -> str:
    source, target = ids[edge.source], ids[edge.target]
    if edge.group is not None:
        return (f"{source} comes after {target} in group {edge.group!r}, so its membership "
                f"needs {target}'s rule first")
    return f'{source} uses in_segment("{target}")'


# --- small helpers ---------------------------------------------------------------------------


def _construct(node: Node) -> Any:
    return SafeConstructor().construct_document(node)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return "value"


def _written(node: Node) -> str:
    return repr(node.value) if isinstance(node, ScalarNode) else f"a {_kind(node)}"


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _literal_type(literal: Literal) -> str:
    value = literal.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


def _nodes(expr: Expr) -> Iterator[Expr]:
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Call):
            stack.extend(node.args)
        elif isinstance(node, Unary):
            stack.append(node.operand)
        elif isinstance(node, Binary):
            stack.extend((node.left, node.right))
        elif isinstance(node, In):
            stack.append(node.operand)
            stack.extend(node.items)


def _start(expr: Expr) -> Pos:
    """Where an expression starts in the file (its leftmost node)."""
    return min((n.pos for n in _nodes(expr)), key=lambda p: (p.line, p.column))


def _replace_arg(call: Call, old: Expr, new_text: str) -> str:
    args = [new_text if a is old else to_source(a) for a in call.args]
    return f"{call.name}(" + ", ".join(args) + ")"


def _example_call(call: Call, params: tuple[str, ...]) -> str:
    """`call` with the right number of arguments: those given, then examples."""
    examples = {"window": "30d", "event_type": '"email_click"', "segment": '"vip"',
                "string": '"region"', "horizon": "365d"}
    given = [to_source(a) for a in call.args[:len(params)]]
    return f"{call.name}(" + ", ".join(given + [examples[p] for p in params[len(given):]]) + ")"


def _id_suggestion(text: str) -> str | None:
    candidate = re.sub(r"[^a-z0-9_]+", "_", text.strip().lower()).strip("_")
    candidate = re.sub(r"^[^a-z]+", "", candidate)
    return candidate if candidate and candidate != text and ID_RE.fullmatch(candidate) else None


def _stem(source: str) -> str:
    stem = PurePath(source).stem.strip("<>")
    return stem or "rules"


def _duration_problem(text: str) -> tuple[str, str | None]:
    """Why `text` is not a duration, and what was probably meant."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)", text)
    if match is None:
        if re.fullmatch(r"\d+", text):
            return f"{text} has no unit: write e.g. {text}d (units: m, h, d, w)", f"{text}d"
        return f"{text!r} is not a duration such as 30d (units: m, h, d, w)", None
    number, unit = match[1], match[2].lower()
    if "." in number:
        return (f"{text!r}: a duration is a whole number of m, h, d or w", None)
    n = int(number)
    if unit in ("s", "sec", "secs", "second", "seconds"):
        suggestion = f"{max(1, -(-n // 60))}m"  # whole minutes, rounded up: 90s -> 2m
        return f"{text!r}: seconds are not supported, the smallest unit is m (minutes)", suggestion
    if unit in ("mo", "month", "months"):
        return f"{text!r}: months are not a unit; use days", f"{n * 30}d"
    if unit in ("y", "yr", "year", "years"):
        return f"{text!r}: years are not a unit; use days", f"{n * 365}d"
    if unit in _UNIT_WORDS:
        fixed = f"{n}{_UNIT_WORDS[unit]}"
        return f"{text!r} is not a duration: write {fixed}", fixed
    return f"{text!r} has an unknown unit: use m, h, d or w", None

