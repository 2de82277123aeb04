"""The model file: JSON, versioned by `"format"`, written by `segmenter models fit` and read by
the rule engine and `segmenter models report`.

    {"format": 1, "kind": "bgnbd", "time_unit": "week", "repeat": "days",
     "r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426,
     "p": 6.25, "q": 3.74, "v": 15.4,            # Gamma-Gamma, when fitted
     "currency": "USD", "data": {...}, "diagnostics": {...}, "fitted": {...}}

    {"format": 1, "kind": "kmeans", "features": ["purchase_amount(365d)", ...],
     "scaler": {"mean": [...], "scale": [...]}, "centroids": [[...], ...],
     "clusters": {"0": "bargain_hunters", ...}, "data": {...}, "diagnostics": {...}}

k-means centroids are in the standardised space (what the nearest-centroid search measures).
`data`, `diagnostics` and `fitted` are for people and reports; loading only checks they are
objects. Loading checks everything else and raises ModelFileError listing every problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from model.errors import ModelFileError
from rules.models.bgnbd import BgNbdParams, GammaGammaParams

FORMAT = 1
TIME_UNITS: Mapping[str, int] = {"day": 86_400_000, "week": 7 * 86_400_000}
REPEATS = ("days", "orders")  # what a repeat purchase is: a distinct (UTC) purchase day, an order


@dataclass(frozen=True, slots=True)
class BgNbdModel:
    params: BgNbdParams
    time_unit: str  # "day" | "week"
    repeat: str = "days"
    spend: GammaGammaParams | None = None
    currency: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    fitted: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "bgnbd"

    @property
    def unit_ms(self) -> int:
        return TIME_UNITS[self.time_unit]


@dataclass(frozen=True, slots=True)
class KMeansModel:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...]
    clusters: Mapping[int, str]  # centroid index -> label
    data: Mapping[str, Any] = field(default_factory=dict)
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    fitted: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "kmeans"

    def label(self, index: int) -> str:
        return self.clusters.get(index, str(index))

    def raw_centroid(self, index: int) -> tuple[float, ...]:
        """A centroid in the features' own units (un-standardised)."""
        return tuple(c * (s or 1.0) + m for c, m, s in
                     zip(self.centroids[index], self.mean, self.scale, strict=True))


Model = BgNbdModel | KMeansModel


def model_to_dict(model: Model) -> dict[str, Any]:
    out: dict[str, Any] = {"format": FORMAT, "kind": model.kind}
    if isinstance(model, BgNbdModel):
        p = model.params
        out.update({"time_unit": model.time_unit, "repeat": model.repeat,
                    "r": p.r, "alpha": p.alpha, "a": p.a, "b": p.b})
        if model.spend is not None:
            out.update({"p": model.spend.p, "q": model.spend.q, "v": model.spend.v})
        if model.currency is not None:
            out["currency"] = model.currency
    else:
        out.update({"features": list(model.features),
                    "scaler": {"mean": list(model.mean), "scale": list(model.scale)},
                    "centroids": [list(c) for c in model.centroids],
                    "clusters": {str(i): label for i, label in sorted(model.clusters.items())}})
    out["data"] = dict(model.data)
    out["diagnostics"] = dict(model.diagnostics)
    out["fitted"] = dict(model.fitted)
    return out


def dump_model(model: Model) -> bytes:
    return orjson.dumps(model_to_dict(model), option=orjson.OPT_INDENT_2) + b"\n"


def write_model(path: str | Path, model: Model) -> None:
    Path(path).write_bytes(dump_model(model))


def load_model(path: str | Path) -> Model:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(source, [f"cannot read the model file: {exc.strerror or exc}"]
                             ) from None
    return parse_model(raw, source=source)


def parse_model(raw: bytes | str, *, source: str = "<string>") -> Model:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ModelFileError(source, [f"not valid JSON: {exc}"]) from None
    return model_from_dict(obj, source=source)


def model_from_dict(obj: object, *, source: str = "<string>") -> Model:
    if not isinstance(obj, dict):
        raise ModelFileError(source, ["a model file must be a JSON object"])
    problems: list[str] = []
    fmt = obj.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT:
            problems.append(f"format {fmt} is newer than this Segmenter reads ({FORMAT}): "
                            "upgrade Segmenter")
        else:
            problems.append(f"'format' must be {FORMAT}, got {fmt!r}")
    extras: dict[str, Mapping[str, Any]] = {}
    for name in ("data", "diagnostics", "fitted"):
        value = obj.get(name, {})
        if not isinstance(value, dict):
            problems.append(f"'{name}' must be an object")
            value = {}
        extras[name] = value
    kind = obj.get("kind")
    model: Model | None = None
    if kind == "bgnbd":
        model = _bgnbd(obj, problems, extras)
    elif kind == "kmeans":
        model = _kmeans(obj, problems, extras)
    else:
        problems.append(f"'kind' must be 'bgnbd' or 'kmeans', got {kind!r}")
    if problems or model is None:
        raise ModelFileError(source, problems)
    return model


def _number(obj: Mapping[str, Any], name: str, problems: list[str], *,
            positive: bool = True, where: str = "") -> float:
    value = obj.get(name)
    label = f"{where}{name}"
    if value is None:
        problems.append(f"missing '{label}'")
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"'{label}' must be a number, got {value!r}")
        return math.nan
    value = float(value)
    if not math.isfinite(value):
        problems.append(f"'{label}' must be finite, got {value!r}")
    elif positive and value <= 0:
        problems.append(f"'{label}' must be > 0, got {value!r}")
    return value


def _bgnbd(obj: Mapping[str, Any], problems: list[str],
           extras: Mapping[str, Mapping[str, Any]]) -> BgNbdModel | None:
    unit = obj.get("time_unit")
    if unit not in TIME_UNITS:
        problems.append(f"'time_unit' must be 'day' or 'week', got {unit!r}")
    repeat = obj.get("repeat", "days")
    if repeat not in REPEATS:
        problems.append(f"'repeat' must be 'days' or 'orders', got {repeat!r}")
    r, alpha, a, b = (_number(obj, n, problems) for n in ("r", "alpha", "a", "b"))
    spend = None
    present = [n for n in ("p", "q", "v") if n in obj]
    if present:
        p, q, v = (_number(obj, n, problems) for n in ("p", "q", "v"))
        if math.isfinite(q) and q <= 1:
            problems.append(f"'q' must be > 1 (the mean order value is finite), got {q!r}")
        spend = GammaGammaParams(p, q, v)
    currency = obj.get("currency")
    if currency is not None and not isinstance(currency, str):
        problems.append(f"'currency' must be a string, got {currency!r}")
    if problems:
        return None
    return BgNbdModel(BgNbdParams(r, alpha, a, b), str(unit), str(repeat), spend, currency,
                      extras["data"], extras["diagnostics"], extras["fitted"])


def _kmeans(obj: Mapping[str, Any], problems: list[str],
            extras: Mapping[str, Mapping[str, Any]]) -> KMeansModel | None:
    features = obj.get("features")
    if (not isinstance(features, list) or not features
            or not all(isinstance(f, str) and f.strip() for f in features)):
        problems.append("'features' must be a non-empty list of rule expressions (strings)")
        return None
    n = len(features)
    scaler = obj.get("scaler")
    mean: list[float] = []
    scale: list[float] = []
    if not isinstance(scaler, dict):
        problems.append("'scaler' must be an object {\"mean\": [...], \"scale\": [...]}")
    else:
        mean = _vector(scaler.get("mean"), n, "scaler.mean", problems)
        scale = _vector(scaler.get("scale"), n, "scaler.scale", problems)
        if any(s < 0 for s in scale):
            problems.append("'scaler.scale' values must be >= 0")
    centroids_raw = obj.get("centroids")
    centroids: list[list[float]] = []
    if not isinstance(centroids_raw, list) or not centroids_raw:
        problems.append("'centroids' must be a non-empty list of vectors")
    else:
        centroids = [_vector(c, n, f"centroids[{i}]", problems)
                     for i, c in enumerate(centroids_raw)]
    clusters_raw = obj.get("clusters", {})
    clusters: dict[int, str] = {}
    if not isinstance(clusters_raw, dict):
        problems.append("'clusters' must be an object {\"0\": \"label\", ...}")
    else:
        for key, label in clusters_raw.items():
            if not (key.isdigit() and int(key) < len(centroids)):
                problems.append(f"'clusters' key {key!r} is not a centroid index "
                                f"(0..{len(centroids) - 1})")
            elif not isinstance(label, str) or not label:
                problems.append(f"'clusters.{key}' must be a non-empty string")
            else:
                clusters[int(key)] = label
        labels = list(clusters.values())
        for label in sorted({lb for lb in labels if labels.count(lb) > 1}):
            problems.append(f"cluster label {label!r} is given to more than one centroid")
    if problems:
        return None
    return KMeansModel(tuple(features), tuple(mean), tuple(scale),
                       tuple(tuple(c) for c in centroids), clusters,
                       extras["data"], extras["diagnostics"], extras["fitted"])


def _vector(value: object, n: int, name: str, problems: list[str]) -> list[float]:
    if (not isinstance(value, list) or len(value) != n
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        problems.append(f"'{name}' must be a list of {n} numbers (one per feature)")
        return [0.0] * n
    out = [float(v) for v in value]
    if not all(math.isfinite(v) for v in out):
        problems.append(f"'{name}' must hold finite numbers")
    return out


KIND_NAMES: Mapping[str, str] = {"bgnbd": "BG/NBD", "kmeans": "k-means"}


def pick_model(models: Mapping[str, Model], kind: str, name: str | None, function: str
               ) -> tuple[str, Model] | str:
    """The model a rule function uses: the one named (`model="churn"`), else the only one of
    its kind in settings.models. A text saying what is wrong otherwise."""
    what = KIND_NAMES[kind]
    if name is not None:
        model = models.get(name)
        if model is None:
            known = ", ".join(sorted(models)) or "none"
            return f"unknown model {name!r} in {function}(): settings.models names {known}"
        if model.kind != kind:
            return (f"model {name!r} is a {KIND_NAMES[model.kind]} model, {function}() needs "
                    f"a {what} model")
        return name, model
    found = sorted(n for n, m in models.items() if m.kind == kind)
    if not found:
        return (f"{function}() needs a {what} model: name its file in settings.models, e.g. "
                f"models: {{{'clusters' if kind == 'kmeans' else 'churn'}: models/shop.json}} "
                "(written by `segmenter models fit`)")
    if len(found) > 1:
        return (f"settings.models has {len(found)} {what} models ({', '.join(found)}): say "
                f"which {function}() uses with a last argument model=\"{found[0]}\"")
    return found[0], models[found[0]]
