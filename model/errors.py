"""The exception hierarchy: one root, specific subclasses that carry data."""

from __future__ import annotations

from dataclasses import dataclass


class SegmenterError(Exception):
    """Root of every error Segmenter raises on purpose."""


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """One problem found in a rule file, with its position (1-based line and column)."""

    file: str
    line: int
    column: int
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.message}"
        if self.suggestion:
            text += f" (did you mean {self.suggestion!r}?)"
        return text


class RuleFileError(SegmenterError):
    """A rule file failed to load; carries every problem found, not just the first."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid rule file")


class RuleEvaluationError(SegmenterError):
    """A compiled rule failed at evaluation time (a bug, never bad user input)."""

    def __init__(self, segment_id: str, message: str) -> None:
        self.segment_id = segment_id
        super().__init__(f"segment {segment_id!r}: {message}")


class ConfigError(SegmenterError):
    """Invalid settings (environment variables or CLI flags)."""


class ServiceError(SegmenterError):
    """A local service (Kafka, Redis) could not be installed, started or reached."""

    def __init__(self, service: str, message: str, log_tail: str = "") -> None:
        self.service = service
        self.log_tail = log_tail
        text = f"{service}: {message}"
        if log_tail:
            text += f"\n--- last lines of the {service} log ---\n{log_tail}"
        super().__init__(text)


class TopologyError(SegmenterError):
    """Kafka topics are not laid out as the worker needs (e.g. partition counts differ)."""


class ConnectorConfigError(ConfigError):
    """The connectors file (webhook endpoints, ...) is invalid; carries every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems)
                         or f"{source}: invalid connectors file")


class ChangeRecordError(SegmenterError):
    """A segment-change record that cannot be decoded (not JSON, missing customer_id/seq...)."""


class ImportFileError(SegmenterError):
    """A file given to `segmenter import` cannot be read as the format it claims to be."""


class ModelFileError(SegmenterError):
    """A model file (`segmenter models fit`'s output) cannot be read or is invalid; carries
    every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems)
                         or f"{source}: invalid model file")


class ModelFitError(SegmenterError):
    """The data given to `segmenter models fit` cannot give a useful model (no purchases, too
    few customers, a fit that did not converge to finite parameters...)."""
