"""`segmenter models fit` and `segmenter models report`: predictive models fitted offline on a
JSONL event log (the one `segmenter simulate` reads) and checked against a holdout period.

BG/NBD + Gamma-Gamma summaries come from rules.models.history, k-means features from
streams.features (rule expressions on the Simulator's states); fitting is rules.models.fit
(lifetimes / scikit-learn, the `models` extra), imported only when a fit runs. See
docs/models.md.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click
import orjson

from model.changes import format_ts
from model.errors import ModelFileError, ModelFitError, RuleFileError
from model.events import parse_rfc3339
from rules.models.bgnbd import expected_purchases, p_alive
from rules.models.file import TIME_UNITS, BgNbdModel, KMeansModel, load_model, write_model
from rules.models.history import CustomerSummary, PurchaseLog, read_purchases, summarise
from rules.models.kmeans import nearest_centroid, standardise

if TYPE_CHECKING:
    from rules.ruleset import RuleSet
    from streams.features import FeatureTable

GROUPS = 8  # report groups: 0, 1, ..., 6 calibration repeat transactions, then 7+


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _instant(option: str, value: str) -> int:
    parsed = parse_rfc3339(value)
    if parsed is None:
        _fail(f"{option} {value!r} is not an RFC 3339 instant with a zone")
    return parsed


def _read_lines(stack: ExitStack, path: str, show: bool) -> Iterator[bytes]:
    from segmenter.commands.simulate import _lines

    try:
        if path == "-":
            src: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            src = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (the stack closes it)
            total = Path(path).stat().st_size
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}")
    return _lines(src, total, show)


def _reasons(rejected: Mapping[str, int]) -> dict[str, int]:
    """Rejection counts with plain-text keys (RejectReason is a StrEnum, which orjson does not
    take as a key: a model file of a log with a rejected line could not be written)."""
    return {str(k): v for k, v in rejected.items()}


def _rejected_text(rejected: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1]))


def _purchases(path: str, repeat: str, currency: str | None, show: bool) -> PurchaseLog:
    with ExitStack() as stack:
        log = read_purchases(_read_lines(stack, path, show), repeat=repeat, currency=currency)
    if log.lines == 0:
        _fail(f"{path}: the event log is empty")
    if log.events == 0:
        _fail(f"{path}: no valid event in {log.lines} line(s) (rejected: "
              f"{_rejected_text(dict(log.rejected))}); see docs/events.md")
    if log.purchases == 0:
        _fail(f"{path}: no purchase event among {log.events} valid event(s): nothing to fit")
    return log


def _features(rules_path: str | None, features: Sequence[str], path: str, until: int,
              show: bool) -> tuple[RuleSet, FeatureTable]:
    from segmenter.commands.simulate import load_ruleset_or_exit
    from streams.features import compile_features, features_at

    if rules_path is None:
        _fail("k-means features need --rules FILE (the rule file whose settings they use: "
              "currency, resolution, retention, engagement, rfm)")
    rules = load_ruleset_or_exit(rules_path)
    try:
        fns = compile_features(rules, features)
    except RuleFileError as exc:
        _fail(f"invalid feature:\n{exc}")
    with ExitStack() as stack:
        table = features_at(rules, features, fns, _read_lines(stack, path, show), until)
    if table.applied == 0:
        _fail(f"{path}: no event applied up to {format_ts(until)}"
              + (f" (rejected: {_rejected_text(dict(table.rejected))})" if table.rejected
                 else ""))
    return rules, table


# ------------------------------------------------------------------------------------- fit


@click.group()
def models() -> None:
    """Predictive models: fit them on an event log, check them against a holdout period."""


@models.command()
@click.option("--events", "events_path", required=True,
              help="JSONL event log (as `segmenter export-events` writes), or - for standard "
                   "input.")
@click.option("--until", required=True,
              help="RFC 3339 instant: the end of the calibration period (inclusive). Only "
                   "events at or before it are used.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Model file (JSON) to write.")
@click.option("--kind", type=click.Choice(["bgnbd", "kmeans"]), default="bgnbd",
              show_default=True, help="BG/NBD + Gamma-Gamma, or k-means on --features.")
@click.option("--time-unit", type=click.Choice(list(TIME_UNITS)), default="week",
              show_default=True, help="bgnbd: the unit of t_x, T and alpha.")
@click.option("--repeat", type=click.Choice(["days", "orders"]), default="days",
              show_default=True,
              help="bgnbd: a repeat purchase is a distinct (UTC) purchase day, or each order.")
@click.option("--currency", help="bgnbd: the purchases' currency (default: the first "
                                 "purchase's); others are rejected.")
@click.option("--no-spend", is_flag=True, help="bgnbd: do not fit Gamma-Gamma on order values.")
@click.option("--features", "features", multiple=True, metavar="EXPR",
              help="kmeans: a numeric rule expression evaluated per customer at --until "
                   "(repeat the option per feature), e.g. 'purchase_amount(365d)'.")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False),
              help="kmeans: the rule file whose settings the features use.")
@click.option("--k", "k", type=int, help="kmeans: number of clusters (default: the best "
                                         "silhouette for k in 2..8).")
@click.option("--labels", help="kmeans: comma-separated cluster labels, largest cluster first.")
@click.option("--seed", type=int, default=0, show_default=True, help="kmeans: random seed.")
@click.option("--quiet", is_flag=True, help="No progress bar, no summary.")
def fit(events_path: str, until: str, out_path: str, kind: str, time_unit: str, repeat: str,
        currency: str | None, no_spend: bool, features: tuple[str, ...], rules_path: str | None,
        k: int | None, labels: str | None, seed: int, quiet: bool) -> None:
    """Fit a model on the events up to --until and write the model file.

    bgnbd: BG/NBD (r, alpha, a, b) on every customer's repeat purchases, and Gamma-Gamma
    (p, q, v) on the repeat buyers' mean order values. kmeans: standardised features, k-means,
    clusters ordered by size (largest first) and labelled with --labels. Exit code 0, or 2 for
    unreadable input, no usable data, or options that do not fit the kind."""
    until_ms = _instant("--until", until)
    show = not quiet and sys.stderr.isatty()
    if kind == "bgnbd":
        extra = [name for name, given in (("--features", features), ("--rules", rules_path),
                                          ("--k", k is not None), ("--labels", labels))
                 if given]
        if extra:
            _fail(f"{', '.join(extra)} only apply to --kind kmeans")
        model: BgNbdModel | KMeansModel = _fit_bgnbd(events_path, until_ms, time_unit, repeat,
                                                     currency, not no_spend, show)
    else:
        if currency is not None or no_spend:
            _fail("--currency and --no-spend only apply to --kind bgnbd (k-means uses the rule "
                  "file's currency)")
        if not features:
            _fail("--kind kmeans needs at least one --features EXPR")
        names = [x.strip() for x in labels.split(",")] if labels is not None else None
        model = _fit_kmeans(events_path, until_ms, list(features), rules_path, k, names, seed,
                            show)
    try:
        write_model(out_path, model)
    except OSError as exc:
        _fail(f"{out_path}: {exc.strerror}")
    rejected = model.data.get("rejected")
    if rejected:  # even with --quiet: the model was fitted without these lines
        click.echo(f"warning: {sum(rejected.values())} line(s) of {events_path} rejected and "
                   f"left out of the fit ({_rejected_text(rejected)}); see docs/events.md",
                   err=True)
    if not quiet:
        for line in _fit_summary(model, out_path):
            click.echo(line)


def _fit_bgnbd(path: str, until: int, time_unit: str, repeat: str, currency: str | None,
               spend: bool, show: bool) -> BgNbdModel:
    from rules.models.fit import fit_bgnbd

    log = _purchases(path, repeat, currency, show)
    unit_ms = TIME_UNITS[time_unit]
    customers = summarise(log, until, unit_ms)
    try:
        params, gg, diagnostics = fit_bgnbd(customers, time_unit=time_unit, repeat=repeat,
                                            spend=spend)
    except ModelFitError as exc:
        _fail(str(exc))
    assert log.first_ts is not None and log.last_ts is not None
    data = {
        "events": path,
        "first_event": format_ts(log.first_ts),
        "last_event": format_ts(log.last_ts),
        "until": format_ts(until),
        "lines": log.lines,
        "valid_events": log.events,
        "purchases": log.purchases,
        "duplicate_purchases": log.duplicates,
        "rejected": _reasons(log.rejected),
        "customers": len(customers),
    }
    horizon = 52.0 if time_unit == "week" else 365.0
    x_counts = [0] * GROUPS
    for c in customers:
        x_counts[min(c.x, GROUPS - 1)] += 1
    fitted = {
        "repeat_transactions": {_group_name(i): n for i, n in enumerate(x_counts)},
        "mean_p_alive_at_until": _mean(p_alive(params, c.x, c.t_x, c.T) for c in customers),
        "mean_expected_purchases_next_year": _mean(
            expected_purchases(params, horizon, c.x, c.t_x, c.T) for c in customers),
    }
    return BgNbdModel(params, time_unit, repeat, gg, log.currency, data, diagnostics, fitted)


def _fit_kmeans(path: str, until: int, features: list[str], rules_path: str | None,
                k: int | None, labels: list[str] | None, seed: int, show: bool) -> KMeansModel:
    from rules.models.fit import fit_kmeans

    if k is not None and k < 1:
        _fail(f"--k must be at least 1, got {k}")
    _, table = _features(rules_path, features, path, until, show)
    try:
        fitted = fit_kmeans(table.rows, features, k=k, labels=labels, seed=seed)
    except ModelFitError as exc:
        _fail(str(exc))
    data = {
        "events": path,
        "rules": rules_path,
        "until": format_ts(until),
        "applied_events": table.applied,
        "rejected": _reasons(table.rejected),
        "customers": table.customers,
        "clustered": len(table.rows),
        "left_out_null_feature": dict(table.missing),
    }
    sizes = fitted.diagnostics.get("sizes", [])
    clusters = [{"index": i, "label": fitted.label(i), "size": sizes[i] if i < len(sizes)
                 else None, "centroid": dict(zip(features, fitted.raw_centroid(i), strict=True))}
                for i in range(len(fitted.centroids))]
    return KMeansModel(fitted.features, fitted.mean, fitted.scale, fitted.centroids,
                       fitted.clusters, data, fitted.diagnostics, {"clusters": clusters})


def _mean(values: Any) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def _group_name(i: int) -> str:
    return f"{i}+" if i == GROUPS - 1 else str(i)


def _fit_summary(model: BgNbdModel | KMeansModel, out_path: str) -> list[str]:
    lines = [f"wrote {out_path}"]
    if isinstance(model, BgNbdModel):
        p = model.params
        d = model.diagnostics
        lines.append(f"BG/NBD per {model.time_unit} (repeat = {model.repeat}): r={p.r:.4g} "
                     f"alpha={p.alpha:.4g} a={p.a:.4g} b={p.b:.4g}; log-likelihood "
                     f"{d.get('log_likelihood', math.nan):.1f}; {d.get('customers')} customers, "
                     f"{d.get('repeat_buyers')} repeat buyers")
        if model.spend is not None:
            g = model.spend
            lines.append(f"Gamma-Gamma: p={g.p:.4g} q={g.q:.4g} v={g.v:.4g}")
        else:
            gd = d.get("gamma_gamma")
            if isinstance(gd, dict) and "skipped" in gd:
                lines.append(f"Gamma-Gamma: not fitted ({gd['skipped']})")
    else:
        lines.append(f"k-means, k={len(model.centroids)} ({model.diagnostics.get('chosen_by')}); "
                     "clusters (largest first; --labels names them in this order):")
        for c in model.fitted.get("clusters", []):
            centroid = ", ".join(f"{f}={v:.4g}" for f, v in c["centroid"].items())
            lines.append(f"  {c['index']} {c['label']}: {c['size']} customers; {centroid}")
    return lines


# ---------------------------------------------------------------------------------- report


@models.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--events", "events_path", required=True,
              help="JSONL event log, or - for standard input.")
@click.option("--until", required=True,
              help="RFC 3339 instant: the end of the calibration period; the holdout period "
                   "follows it.")
@click.option("--holdout-end", help="bgnbd: RFC 3339 end of the holdout period, inclusive "
                                    "(default: the last event's time).")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False),
              help="kmeans: the rule file whose settings the features use.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def report(model_path: str, events_path: str, until: str, holdout_end: str | None,
           rules_path: str | None, as_json: bool, quiet: bool) -> None:
    """Check MODEL against the event log.

    bgnbd: the calibration-vs-holdout comparison of Fader, Hardie & Lee (2005): customers
    grouped by their repeat transactions up to --until (0, 1, ..., 6, 7+), with the mean actual
    and the mean predicted number of repeat transactions in the holdout period. kmeans: the
    size of each cluster at --until and its centroid in the features' units. Exit code 0, or 2
    for an invalid model file or unreadable input."""
    try:
        model = load_model(model_path)
    except ModelFileError as exc:
        _fail(f"invalid model file:\n{exc}")
    until_ms = _instant("--until", until)
    show = not quiet and sys.stderr.isatty()
    if isinstance(model, BgNbdModel):
        if rules_path is not None:
            _fail("--rules only applies to a k-means model")
        end = _instant("--holdout-end", holdout_end) if holdout_end is not None else None
        out = _report_bgnbd(model, events_path, until_ms, end, show)
    else:
        if holdout_end is not None:
            _fail("--holdout-end only applies to a BG/NBD model")
        out = _report_kmeans(model, events_path, until_ms, rules_path, show)
    if as_json:
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(_report_text(out))


def _report_bgnbd(model: BgNbdModel, path: str, until: int, end: int | None,
                  show: bool) -> dict[str, Any]:
    log = _purchases(path, model.repeat, model.currency, show)
    assert log.last_ts is not None
    holdout_end = end if end is not None else log.last_ts
    if holdout_end <= until:
        _fail(f"the holdout period is empty: it ends at {format_ts(holdout_end)}, not after "
              f"--until {format_ts(until)}" + ("" if end is not None else
                                             " (the last event; give --holdout-end)"))
    unit_ms = model.unit_ms
    t = (holdout_end - until) / unit_ms
    customers = summarise(log, until, unit_ms, holdout_end)
    if not customers:
        _fail(f"no customer purchased up to {format_ts(until)}: nothing to compare")
    groups: list[list[CustomerSummary]] = [[] for _ in range(GROUPS)]
    for c in customers:
        groups[min(c.x, GROUPS - 1)].append(c)
    m = model.params

    def row(name: str, members: list[CustomerSummary]) -> dict[str, Any]:
        if not members:
            return {"group": name, "customers": 0, "actual": None, "predicted": None}
        return {"group": name, "customers": len(members),
                "actual": _mean(c.holdout for c in members),
                "predicted": _mean(expected_purchases(m, t, c.x, c.t_x, c.T)
                                   for c in members)}

    return {
        "kind": "bgnbd",
        "params": {"r": m.r, "alpha": m.alpha, "a": m.a, "b": m.b},
        "time_unit": model.time_unit,
        "repeat": model.repeat,
        "until": format_ts(until),
        "holdout_end": format_ts(holdout_end),
        "holdout_length": t,
        "groups": [row(_group_name(i), g) for i, g in enumerate(groups)],
        "all": row("all", customers),
        "holdout_total": {"actual": sum(c.holdout for c in customers),
                          "predicted": sum(expected_purchases(m, t, c.x, c.t_x, c.T)
                                           for c in customers)},
    }


def _report_kmeans(model: KMeansModel, path: str, until: int, rules_path: str | None,
                   show: bool) -> dict[str, Any]:
    _, table = _features(rules_path, model.features, path, until, show)
    members: list[list[list[float]]] = [[] for _ in model.centroids]
    for values in table.rows:
        point = standardise(values, model.mean, model.scale)
        members[nearest_centroid(point, model.centroids)].append(values)
    clusters = []
    for i, rows in enumerate(members):
        centroid = model.raw_centroid(i)
        means = [_mean(r[j] for r in rows) if rows else None for j in range(len(model.features))]
        clusters.append({"index": i, "label": model.label(i), "size": len(rows),
                         "centroid": dict(zip(model.features, centroid, strict=True)),
                         "members_mean": dict(zip(model.features, means, strict=True))})
    return {"kind": "kmeans", "until": format_ts(until), "features": list(model.features),
            "customers": table.customers, "clustered": len(table.rows),
            "left_out_null_feature": dict(table.missing), "clusters": clusters}


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _report_text(out: dict[str, Any]) -> str:
    if out["kind"] == "bgnbd":
        p = out["params"]
        unit = out["time_unit"]
        lines = [
            f"BG/NBD r={p['r']:.4g} alpha={p['alpha']:.4g} a={p['a']:.4g} b={p['b']:.4g} "
            f"(per {unit}; repeat = {out['repeat']})",
            f"calibration: up to {out['until']}; holdout: until {out['holdout_end']} "
            f"({out['holdout_length']:.2f} {unit}s)",
            "",
            f"{'repeat transactions':>20} {'customers':>10} {'actual':>8} {'predicted':>10}",
            f"{'in calibration':>20} {'':>10} {'(mean repeat transactions in holdout)':>20}",
        ]
        for g in [*out["groups"], out["all"]]:
            lines.append(f"{g['group']:>20} {g['customers']:>10} {_num(g['actual']):>8} "
                         f"{_num(g['predicted']):>10}")
        tot = out["holdout_total"]
        lines.append(f"holdout repeat transactions in total: actual {tot['actual']}, "
                     f"predicted {tot['predicted']:.1f}")
        return "\n".join(lines)
    lines = [f"k-means at {out['until']}: {out['clustered']} of {out['customers']} customers "
             f"clustered" + (f" (left out, a feature is null: {out['left_out_null_feature']})"
                             if out["left_out_null_feature"] else "")]
    for c in out["clusters"]:
        lines.append(f"  {c['index']} {c['label']}: {c['size']} customers")
        for f, v in c["centroid"].items():
            lines.append(f"      {f}: centroid {v:.4g}, members' mean "
                         f"{_num(c['members_mean'][f], '.4g')}")
    return "\n".join(lines)
