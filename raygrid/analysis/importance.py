"""Which axis matters: the sweep's axes ranked by their effect on each headline metric.

    axis_importance(trials, axes, metrics) -> DataFrame (axis, metric, importance, lo, hi, ...)
    parallel_coordinates(trials, axes, metric) -> PNG bytes | None

`trials` is one row per trial run with its axis values (columns `params.<axis>`, `<axis>`,
`axis:<axis>` or a `point` dict) and its metrics (`metrics.<name>` or `<name>`), as
`raygrid.analysis` loads a sweep or `load_trials` here reads one from MLflow. Only trials whose
state is "finished" enter (a trial ASHA stopped, or that collapsed, diverged or failed, has no
value at the common step); the left-out ones are counted in `table.attrs["notes"]`.

Method "anova" (the default): a main-effects linear model, least squares over the trials, every
axis categorical (one indicator per level: a weight axis is a set of grid values, not a line).
For each axis, its sum of squares given all the other axes (type II: the drop in residual sum of
squares when the axis enters last), the F test against the residual, and
  importance = partial η² = SS_axis / (SS_axis + SS_residual),
with a confidence interval from inverting the noncentral F distribution of the F statistic in its
noncentrality λ (the population partial η² is λ / (λ + n)). That interval is exact when the model
holds: additive axis effects, independent normal residuals of one variance. What the residual is
depends on the sweep: with several seeds per grid point it holds seed noise (plus interactions);
with one seed per point it is the interactions alone, so the test asks whether an axis's main
effect stands out against how the axes interact. `share` = SS_axis / SS_total is the part of
the spread across trials the axis accounts for (these add up to ≤ 1 on a full grid).

The grid need not be a full factorial: axes whose levels determine each other in the trials (a
condition "weight 0 ⇔ discriminator none") are one factor, named "a × b" — no data can split
their effects — and an axis with one level is left out. Method "fanova": optuna's
`FanovaImportanceEvaluator` (a random forest's functional ANOVA, importances summing to 1) on a
study built from the same trials; no intervals, and with a grid of a few dozen trials its forest
is rough — a cross-check, not the default.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

import numpy as np
import pandas as pd

METHODS = ("anova", "fanova")
REPLICATE_AXES = ("seed",)  # a seed replicates a grid point; it is no axis of the design
COLUMNS = ["metric", "axis", "rank", "importance", "lo", "hi", "share", "df", "F", "p", "n", "method", "note"]


def _label(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null"
    return v if isinstance(v, str) else json.dumps(v)


def axis_values(trials: pd.DataFrame, axis: str) -> pd.Series:
    """The axis's value of every trial as a label ("0.05", "none"), from whichever column has it."""
    for col in (axis, f"params.{axis}", f"axis:{axis}"):
        if col in trials.columns:
            return trials[col].map(_label)
    if "point" in trials.columns and any(isinstance(p, dict) and axis in p for p in trials["point"]):
        return trials["point"].map(lambda p: _label(p.get(axis)) if isinstance(p, dict) else "null")
    raise KeyError(f"axis {axis!r}: no column {axis!r}, 'params.{axis}', 'axis:{axis}' and no grid point with it in the trials "
                   f"(columns: {', '.join(map(str, trials.columns[:12]))}{', ...' if len(trials.columns) > 12 else ''})")


def metric_values(trials: pd.DataFrame, metric: str) -> pd.Series:
    for col in (f"metrics.{metric}", metric):
        if col in trials.columns:
            return pd.to_numeric(trials[col], errors="coerce")
    raise KeyError(f"metric {metric!r}: no column 'metrics.{metric}' or {metric!r} in the trials")


def trial_states(trials: pd.DataFrame) -> pd.Series:
    """"finished", "stopped", ... per trial (column `state`, else the outcome tag, else finished)."""
    for col in ("state", "tags.raygrid.outcome"):
        if col in trials.columns:
            return trials[col].fillna("unknown").astype(str)
    return pd.Series("finished", index=trials.index)


def _order(labels) -> list[str]:
    uniq = list(dict.fromkeys(labels))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def varying_axes(trials: pd.DataFrame) -> list[str]:
    """The axes of the trials' grid points with more than one value (seeds excluded)."""
    if "point" not in trials.columns:
        return []
    axes = list(dict.fromkeys(k for p in trials["point"] if isinstance(p, dict) for k in p))
    return [a for a in axes if a not in REPLICATE_AXES and axis_values(trials, a).nunique() > 1]


def headline_metrics(trials: pd.DataFrame, stage: str) -> list[str]:
    """The stage's headline metrics among those its trials logged (its trainable record says which:
    optimize the pooled `test/<evaluator>`, transfer `test/<benchmark>/srcc`, assess `srcc`)."""
    from raygrid.spec.trainables import for_stage

    return for_stage(stage).headline([c[len("metrics."):] for c in trials.columns if c.startswith("metrics.")])


def factors(levels: pd.DataFrame) -> tuple[dict[str, pd.Series], list[str]]:
    """Axes -> the design's factors: constant axes dropped, axes that determine each other merged."""
    notes = []
    keep = []
    for a in levels.columns:
        if levels[a].nunique() < 2:
            notes.append(f"{a}: one level ({levels[a].iloc[0]}) in these trials, left out")
        else:
            keep.append(a)
    parent = {a: a for a in keep}

    def root(a):
        while parent[a] != a:
            a = parent[a]
        return a

    def determines(a, b):
        return bool((levels.groupby(a)[b].nunique() <= 1).all())

    for i, a in enumerate(keep):
        for b in keep[i + 1:]:
            if determines(a, b) or determines(b, a):
                parent[root(b)] = root(a)
    groups: dict[str, list[str]] = {}
    for a in keep:
        groups.setdefault(root(a), []).append(a)
    out = {}
    for members in groups.values():
        name = " × ".join(members)
        out[name] = pd.Series([" × ".join(t) for t in zip(*(levels[m] for m in members))], index=levels.index)
        if len(members) > 1:
            notes.append(f"{name}: these axes determine each other in these trials, so their effects are one factor")
    return out, notes


def _design(factor_levels: list[pd.Series], n: int) -> np.ndarray:
    cols = [np.ones(n)]
    for s in factor_levels:
        for level in _order(s)[1:]:
            cols.append((s.to_numpy() == level).astype(float))
    return np.column_stack(cols)


def _rss(X: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ beta
    return float(r @ r), int(np.linalg.matrix_rank(X))


def type2_ss(y: np.ndarray, fac: dict[str, pd.Series]) -> tuple[dict[str, tuple[float, int]], float, int]:
    """{factor: (SS given the others, df)}, residual SS, residual df of the main-effects model."""
    rss_full, rank_full = _rss(_design(list(fac.values()), len(y)), y)
    out = {}
    for name in fac:
        rss, rank = _rss(_design([s for k, s in fac.items() if k != name], len(y)), y)
        out[name] = (max(rss - rss_full, 0.0), rank_full - rank)
    return out, rss_full, len(y) - rank_full


def ncf_interval(F: float, df1: int, df2: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval for the noncentrality λ of an observed F(df1, df2) statistic: the λ at
    which F sits at the upper and the lower α/2 quantile (0 where even λ = 0 puts it lower)."""
    from scipy import optimize, special, stats

    def cdf(lam):
        return float(stats.f.cdf(F, df1, df2) if lam <= 0 else special.ncfdtr(df1, df2, lam, F))

    def solve(target):  # the CDF at F falls as λ grows
        if cdf(0.0) <= target:
            return 0.0
        lam = float(special.ncfdtrinc(df1, df2, target, F))  # scipy's direct inversion (cdflib)
        if math.isfinite(lam) and abs(cdf(lam) - target) < 1e-6:
            return lam
        hi = max(10.0, 4.0 * F * df1)  # where cdflib gives up (a huge F): bracket and bisect
        while cdf(hi) > target:
            hi *= 2.0
        return float(optimize.brentq(lambda x: cdf(x) - target, 0.0, hi, xtol=1e-8))

    alpha = 1.0 - level
    return solve(1.0 - alpha / 2), solve(alpha / 2)


def anova_rows(y: np.ndarray, fac: dict[str, pd.Series], level: float) -> list[dict[str, Any]]:
    """Per factor: partial η² (`importance`) with its interval, share, df, F, p (see the module doc)."""
    from scipy import stats

    ss, rss, df_res = type2_ss(y, fac)
    total = float(((y - y.mean()) ** 2).sum())
    rows = []
    for name, (ss_f, df_f) in ss.items():
        row = {"axis": name, "share": ss_f / total if total > 0 else math.nan, "df": df_f,
               "importance": math.nan, "lo": math.nan, "hi": math.nan, "F": math.nan, "p": math.nan, "note": ""}
        if df_f == 0:
            row["note"] = "no effect of its own in this design"
        elif df_res == 0 or rss <= 0:
            row["note"] = "no residual degrees of freedom: no test, no interval"
        else:
            F = (ss_f / df_f) / (rss / df_res)
            lam_lo, lam_hi = ncf_interval(F, df_f, df_res, level)
            n = len(y)
            row.update(importance=ss_f / (ss_f + rss), F=F, p=float(stats.f.sf(F, df_f, df_res)),
                       lo=lam_lo / (lam_lo + n), hi=lam_hi / (lam_hi + n))
        rows.append(row)
    return rows


def _fanova_rows(y: np.ndarray, fac: dict[str, pd.Series], seed: int) -> list[dict[str, Any]]:
    import optuna
    from optuna.distributions import CategoricalDistribution

    dists = {name: CategoricalDistribution(_order(s)) for name, s in fac.items()}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials([optuna.trial.create_trial(params={k: s.iloc[i] for k, s in fac.items()},
                                                    distributions=dists, value=float(y[i])) for i in range(len(y))])
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=True)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return [{"axis": name, "importance": float(imp.get(name, 0.0)), "lo": math.nan, "hi": math.nan,
             "share": math.nan, "df": len(dists[name].choices) - 1, "F": math.nan, "p": math.nan, "note": ""}
            for name in fac]


def axis_importance(trials: pd.DataFrame, axes: list[str] | None = None, metrics: list[str] | None = None, *,
                    method: str = "anova", level: float = 0.95, states: tuple[str, ...] = ("finished",),
                    seed: int = 0) -> pd.DataFrame:
    """One row per (metric, axis or merged axes), ranked within each metric (1 = matters most).

    axes: default the varying axes of the trials' grid points; metrics: required unless the
    trials' stage is known to `headline_metrics` (pass them). Notes on left-out trials and merged
    or dropped axes are in `result.attrs["notes"]`."""
    if method not in METHODS:
        raise ValueError(f"method = {method!r}, expected one of {', '.join(METHODS)}")
    if not 0 < level < 1:
        raise ValueError(f"level = {level!r}, expected a confidence level in (0, 1)")
    axes = list(axes) if axes is not None else varying_axes(trials)
    if not axes:
        raise ValueError("axis_importance: no axes given and none vary in the trials' grid points")
    if not metrics:
        raise ValueError("axis_importance: no metrics given (e.g. headline_metrics(trials, stage))")
    state = trial_states(trials)
    kept = trials[state.isin(states)]
    notes = [f"{k} trial(s) {s} left out (no value at the common step)"
             for s, k in state[~state.isin(states)].value_counts().items()]
    levels = pd.DataFrame({a: axis_values(kept, a) for a in axes}, index=kept.index)
    rows, per_metric = [], {}
    for metric in metrics:
        y = metric_values(kept, metric)
        ok = y.notna() & np.isfinite(y)
        if (~ok).any():
            notes.append(f"{metric}: {int((~ok).sum())} finished trial(s) without a finite value left out")
        lv = levels[ok]
        if len(lv) < 3:
            notes.append(f"{metric}: {len(lv)} trial(s) with a value, too few to rank axes")
            continue
        fac, fnotes = factors(lv)
        for n in fnotes:
            per_metric.setdefault(n, []).append(metric)
        if not fac:
            continue
        yv = y[ok].to_numpy(dtype=float)
        part = anova_rows(yv, fac, level) if method == "anova" else _fanova_rows(yv, fac, seed)
        part.sort(key=lambda r: (-(r["importance"] if not math.isnan(r["importance"]) else -1.0),
                                 -(r["share"] if not math.isnan(r["share"]) else -1.0)))
        for rank, r in enumerate(part, 1):
            rows.append({**r, "metric": metric, "rank": rank, "n": len(yv), "method": method})
    out = pd.DataFrame(rows, columns=COLUMNS)
    for n, ms in per_metric.items():  # a note that holds for every metric is said once
        notes.append(n if len(ms) == len(metrics) else f"{', '.join(ms)}: {n}")
    out.attrs["notes"] = list(dict.fromkeys(notes))
    out.attrs["level"] = level
    return out


def importance_table_html(table: pd.DataFrame) -> str:
    """The ranking as an HTML table (one block of rows per metric) with its notes."""
    level = table.attrs.get("level", 0.95)
    head = ("<tr><th>metric</th><th>rank</th><th>axis</th><th>importance (partial η²)</th>"
            f"<th>{level:.0%} interval</th><th>share of variance</th><th>df</th><th>F</th><th>p</th><th>n</th></tr>")

    def num(v, fmt="{:.3f}"):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    body = []
    for _, r in table.iterrows():
        interval = "—" if math.isnan(r["lo"]) else f"[{r['lo']:.3f}, {r['hi']:.3f}]"
        note = f' title="{html.escape(r["note"])}"' if r["note"] else ""
        body.append(f"<tr{note}><td>{html.escape(r['metric'])}</td><td>{r['rank']}</td><td>{html.escape(r['axis'])}</td>"
                    f"<td>{num(r['importance'])}</td><td>{interval}</td><td>{num(r['share'])}</td><td>{r['df']}</td>"
                    f"<td>{num(r['F'], '{:.2f}')}</td><td>{num(r['p'], '{:.3g}')}</td><td>{r['n']}</td></tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.attrs.get("notes", []))
    return (f'<table class="importance">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(body) + "\n</tbody></table>\n"
            + (f'<ul class="importance-notes">{notes}</ul>\n' if notes else ""))


def parallel_coordinates(trials: pd.DataFrame, axes: list[str], metric: str, *,
                         states: tuple[str, ...] = ("finished",)) -> bytes | None:
    """One line per trial across the axes (levels evenly spaced, numeric ones ascending) and the
    metric, coloured by the metric; PNG bytes, or None with fewer than two trials to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    kept = trials[trial_states(trials).isin(states)]
    y = metric_values(kept, metric)
    ok = y.notna() & np.isfinite(y)
    kept, y = kept[ok], y[ok].to_numpy(dtype=float)
    if len(kept) < 2 or not axes:
        return None
    cols, ticks = [], []
    for a in axes:
        v = axis_values(kept, a)
        order = _order(v)
        pos = {lvl: (i / (len(order) - 1) if len(order) > 1 else 0.5) for i, lvl in enumerate(order)}
        cols.append(v.map(pos).to_numpy(dtype=float))
        ticks.append(pos)
    lo, hi = float(y.min()), float(y.max())
    cols.append((y - lo) / (hi - lo) if hi > lo else np.full(len(y), 0.5))
    # a small spread by the metric's rank keeps trials that share levels apart where they overlap
    jitter = (np.argsort(np.argsort(y)) / max(len(y) - 1, 1) - 0.5) * 0.06
    Y = np.column_stack(cols) + np.column_stack([jitter] * len(axes) + [np.zeros(len(y))])
    x = np.arange(len(cols))
    fig, ax = plt.subplots(figsize=(1.7 * len(cols) + 1.4, 3.6), dpi=110)
    norm = plt.Normalize(lo, hi if hi > lo else lo + 1)
    lines = LineCollection([np.column_stack([x, Y[i]]) for i in range(len(y))], cmap="viridis", norm=norm, linewidths=1.6)
    lines.set_array(y)
    ax.add_collection(lines)
    for i, pos in enumerate(ticks):
        ax.axvline(i, color="#999", lw=0.8)
        for lvl, p in pos.items():
            ax.text(i + 0.04, p, lvl, fontsize=7, va="center", ha="left",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.axvline(len(axes), color="#999", lw=0.8)
    for q in np.linspace(0, 1, 5):
        ax.text(len(axes) + 0.04, q, f"{lo + q * (hi - lo):.4g}", fontsize=7, va="center")
    ax.set_xticks(x, list(axes) + [metric], fontsize=8, rotation=10)
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(cols) - 0.6)
    ax.set_ylim(-0.08, 1.08)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(lines, ax=ax, label=metric, fraction=0.04, pad=0.02)
    ax.set_title(f"{len(y)} finished trials, coloured by {metric}", fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def importance_section(trials: pd.DataFrame, axes: list[str], metrics: list[str], **kw) -> str:
    """The table plus a parallel-coordinates figure per metric, as one HTML fragment."""
    table = axis_importance(trials, axes, metrics, **kw)
    parts = [importance_table_html(table)]
    for m in metrics:
        png = parallel_coordinates(trials, axes, m)
        if png:
            parts.append(f'<img class="parallel-coordinates" alt="parallel coordinates, {html.escape(m)}" '
                         f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    return "\n".join(parts)


def load_trials(tracking_uri: str, experiment: str, stage: str, sweep_run_id: str | None = None) -> pd.DataFrame:
    """A stage's trial runs from MLflow: params.*, metrics.* (last logged), tags.*, plus `point`
    (the grid point, tag raygrid.point) and `state` (tag raygrid.outcome, else the run status)."""
    from raygrid.spec import mlflow as names

    runs = names.search_trial_runs(tracking_uri, experiment, stage=stage, sweep_run_id=sweep_run_id)
    if runs.empty:
        return runs
    point_col, outcome_col = f"tags.{names.TAG_POINT}", f"tags.{names.TAG_OUTCOME}"
    runs["point"] = runs[point_col].map(lambda s: json.loads(s) if isinstance(s, str) and s else {}) \
        if point_col in runs.columns else [{}] * len(runs)
    if f"tags.{names.TAG_TRIAL_ID}" in runs.columns:  # grid order, so levels keep the space's order
        runs = runs.sort_values(f"tags.{names.TAG_TRIAL_ID}", kind="stable").reset_index(drop=True)
    status = runs["status"].str.lower()
    runs["state"] = runs[outcome_col].fillna(status) if outcome_col in runs.columns else status
    return runs
