"""Model fitting with well-kept libraries: `lifetimes` (BG/NBD, Gamma-Gamma) and scikit-learn
(k-means). Needs the `models` extra (`pip install -e .[models]`); imported only by
`segmenter models`, never by the rule engine (which evaluates with rules.models.bgnbd/kmeans).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from model.errors import ModelFitError
from rules.models.bgnbd import BgNbdParams, GammaGammaParams, log_likelihood
from rules.models.file import KMeansModel
from rules.models.history import CustomerSummary

MIN_CUSTOMERS = 10
# scikit-learn's silhouette_score computes the sample's pairwise distances in chunks of its
# `working_memory` (1 GiB by default: the 10,000-customer sample took ~0.9 GB of RSS); the
# score is the same with smaller chunks.
SILHOUETTE_MEMORY_MB = 64


def _library(name: str) -> str:
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:  # pragma: no cover - imported, so installed
        return name


def _import(what: str) -> Any:
    try:
        if what == "lifetimes":
            import lifetimes
            return lifetimes
        import sklearn.cluster
        import sklearn.metrics
        import sklearn.preprocessing
        return sklearn
    except ImportError as exc:
        raise ModelFitError(
            f"fitting needs the 'models' extra ({exc.name} is missing): "
            "pip install -e '.[models]'") from None


_OPTIMISER_MESSAGE = re.compile(r"^\s*message:\s*(.+?)\s*$", re.MULTILINE)


def _run_fit(what: str, fit: Callable[[], Any], data: str) -> None:
    """Run a lifetimes fit; a failure becomes a ModelFitError with one clear sentence. lifetimes
    prints scipy's whole optimiser result to standard output before it raises ConvergenceError
    (and suggests a penalizer this command does not offer): that print is captured, and only
    the optimiser's message kept."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            fit()
    except Exception as exc:  # lifetimes.utils.ConvergenceError, linear algebra, ...
        if type(exc).__name__ == "ConvergenceError":
            found = _OPTIMISER_MESSAGE.search(captured.getvalue())
            reason = f" (the optimiser: {found.group(1)})" if found else ""
            raise ModelFitError(
                f"the {what} fit did not converge on {data}{reason}: the data are too few or "
                "too regular for the model; use a longer log or calibration period, more "
                "customers, or the other --time-unit") from None
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelFitError(f"the {what} fit failed on {data}: {text}") from None


def fit_bgnbd(customers: Sequence[CustomerSummary], *, time_unit: str, repeat: str,
              spend: bool = True) -> tuple[BgNbdParams, GammaGammaParams | None,
                                           dict[str, Any]]:
    """Fit BG/NBD (and Gamma-Gamma when `spend`) by maximum likelihood. Returns the parameters
    and the fit diagnostics; raises ModelFitError when the data cannot give a useful model."""
    n = len(customers)
    if n == 0:
        raise ModelFitError("no purchases up to the calibration end: nothing to fit")
    if n < MIN_CUSTOMERS:
        raise ModelFitError(f"only {n} customer(s) purchased up to the calibration end: "
                            f"BG/NBD needs at least {MIN_CUSTOMERS}")
    repeaters = [c for c in customers if c.x > 0]
    if not repeaters:
        raise ModelFitError("no customer purchased again after their first purchase up to the "
                            "calibration end: repeat behaviour cannot be learnt")
    if all(c.T <= 0 for c in customers):
        raise ModelFitError("every customer's first purchase is at the calibration end: "
                            "no time observed")
    lifetimes = _import("lifetimes")
    import numpy as np

    x = np.array([c.x for c in customers], dtype=float)
    t_x = np.array([c.t_x for c in customers], dtype=float)
    T = np.array([c.T for c in customers], dtype=float)
    bg = lifetimes.BetaGeoFitter(penalizer_coef=0.0)
    _run_fit("BG/NBD", lambda: bg.fit(x, t_x, T),
             f"{n} customers, {len(repeaters)} repeat buyers")
    values = {k: float(v) for k, v in bg.params_.items()}
    if not all(math.isfinite(v) and v > 0 for v in values.values()):
        raise ModelFitError(f"the BG/NBD fit gave unusable parameters {values}")
    params = BgNbdParams(values["r"], values["alpha"], values["a"], values["b"])
    ll = sum(log_likelihood(params, c.x, c.t_x, c.T) for c in customers)
    diagnostics: dict[str, Any] = {
        "library": _library("lifetimes"),
        "log_likelihood": ll,
        "customers": n,
        "repeat_buyers": len(repeaters),
        "mean_repeat_purchases": float(x.mean()),
        "time_unit": time_unit,
        "repeat": repeat,
    }
    try:
        diagnostics["standard_errors"] = {k: float(v) for k, v in bg.standard_errors_.items()}
    except Exception:  # a singular Hessian: the parameters stand, their errors do not
        diagnostics["standard_errors"] = None
    gg = None
    if spend:
        gg, gg_diag = _fit_gamma_gamma(lifetimes, repeaters)
        diagnostics["gamma_gamma"] = gg_diag
    return params, gg, diagnostics


def _fit_gamma_gamma(lifetimes: Any, repeaters: Sequence[CustomerSummary]
                     ) -> tuple[GammaGammaParams | None, dict[str, Any]]:
    import numpy as np

    used = [c for c in repeaters if c.mean_value > 0]
    if len(used) < MIN_CUSTOMERS:
        return None, {"skipped": f"only {len(used)} repeat buyer(s) with a positive order "
                                 f"value (at least {MIN_CUSTOMERS} needed)"}
    x = np.array([c.x for c in used], dtype=float)
    m = np.array([c.mean_value for c in used], dtype=float)
    gg = lifetimes.GammaGammaFitter(penalizer_coef=0.0)
    try:
        _run_fit("Gamma-Gamma", lambda: gg.fit(x, m), f"{len(used)} repeat buyers")
    except ModelFitError as exc:
        return None, {"skipped": str(exc)}
    values = {k: float(v) for k, v in gg.params_.items()}
    if not all(math.isfinite(v) and v > 0 for v in values.values()) or values["q"] <= 1:
        return None, {"skipped": f"the Gamma-Gamma fit gave unusable parameters {values}"}
    corr = float(np.corrcoef(x, m)[0, 1]) if len(set(x.tolist())) > 1 else None
    return GammaGammaParams(values["p"], values["q"], values["v"]), {
        "customers": len(used),
        # Gamma-Gamma assumes order value independent of frequency: near 0 is what it wants
        "frequency_value_correlation": corr,
        "mean_order_value": float(m.mean()),
    }


def fit_kmeans(rows: Sequence[Sequence[float]], features: Sequence[str], *, k: int | None,
               labels: Sequence[str] | None, seed: int = 0, k_max: int = 8
               ) -> KMeansModel:
    """Standardise the rows, fit k-means (k given, or the k in 2..k_max with the best silhouette)
    and order the clusters by size, largest first."""
    n = len(rows)
    distinct = len({tuple(r) for r in rows})
    if n == 0:
        raise ModelFitError("no customer has a value for every feature: nothing to cluster")
    if k is not None and k < 1:
        raise ModelFitError(f"--k must be at least 1, got {k}")
    if k is not None and distinct < k:
        raise ModelFitError(f"{n} customer(s) with only {distinct} distinct feature vector(s) "
                            f"cannot make {k} clusters")
    if k is None and distinct < 3:
        raise ModelFitError(f"only {distinct} distinct feature vector(s): too few to choose k")
    for row in rows:
        if not all(math.isfinite(v) for v in row):
            raise ModelFitError(f"a feature value is not a finite number: {list(row)}")
    sklearn = _import("sklearn")
    import numpy as np

    with sklearn.config_context(working_memory=SILHOUETTE_MEMORY_MB):
        return _fit_kmeans(sklearn, np, rows, features, k=k, labels=labels, seed=seed,
                           k_max=k_max, distinct=distinct)


def _fit_kmeans(sklearn: Any, np: Any, rows: Sequence[Sequence[float]], features: Sequence[str],
                *, k: int | None, labels: Sequence[str] | None, seed: int, k_max: int,
                distinct: int) -> KMeansModel:
    n = len(rows)
    data = np.array(rows, dtype=float)
    scaler = sklearn.preprocessing.StandardScaler().fit(data)
    scaled = scaler.transform(data)
    scores: dict[str, float] = {}
    sample = min(n, 10_000)

    def run(kk: int) -> Any:
        return sklearn.cluster.KMeans(n_clusters=kk, n_init=10, random_state=seed).fit(scaled)

    if k is None:
        best = None
        for kk in range(2, min(k_max, distinct - 1) + 1):
            km = run(kk)
            score = float(sklearn.metrics.silhouette_score(
                scaled, km.labels_, sample_size=sample, random_state=seed))
            scores[str(kk)] = score
            if best is None or score > best[0]:
                best = (score, km)
        assert best is not None
        km = best[1]
    else:
        km = run(k)
    kk = int(km.n_clusters)
    sizes = np.bincount(km.labels_, minlength=kk)
    order = sorted(range(kk), key=lambda i: (-int(sizes[i]), i))
    if labels is not None and len(labels) != kk:
        raise ModelFitError(f"{len(labels)} label(s) given for {kk} clusters")
    names = list(labels) if labels is not None else [f"cluster_{i}" for i in range(kk)]
    if len(set(names)) != len(names):
        raise ModelFitError(f"cluster labels must differ: {names}")
    centroids = tuple(tuple(float(v) for v in km.cluster_centers_[i]) for i in order)
    diagnostics: dict[str, Any] = {
        "library": _library("scikit-learn"),
        "k": kk,
        "chosen_by": "given" if k is not None else "silhouette",
        "sizes": [int(sizes[i]) for i in order],
        "inertia": float(km.inertia_),
        "iterations": int(km.n_iter_),
    }
    if scores:
        diagnostics["silhouette_by_k"] = scores
    elif kk > 1:
        diagnostics["silhouette"] = float(sklearn.metrics.silhouette_score(
            scaled, km.labels_, sample_size=sample, random_state=seed))
    return KMeansModel(tuple(features), tuple(float(v) for v in scaler.mean_),
                       tuple(float(v) for v in scaler.scale_), centroids,
                       dict(enumerate(names)), diagnostics=diagnostics)
