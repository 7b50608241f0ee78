"""The asymmetry analysis: the paper's tables and the rank statistics, from a `SweepData`.

The sweep is read from MLflow by `raygrid.analysis.sweep_data.load_sweep` (one row per trial);
everything here works on that DataFrame only. Data flows one way:

    sweep_data.load_sweep() one row per trial: planned-but-not-run, failed, stopped, finished
      ├─ assessment_table()     backbone × benchmark: SRCC/PLCC of each fidelity measure (IQA)
      ├─ optimization_table()   fidelity backbone × discriminator × weight: the SR evaluator panel
      │    ├─ asymmetry()           IQA rank vs optimization rank, Spearman/Kendall + bootstrap CI
      │    └─ discriminator_table() designs per fidelity backbone, gain over no adversarial loss
      └─ transfer_table()       IQA SRCC/PLCC by initialisation
           └─ transfer_differences()  init A − init B with a confidence interval

Plus the trial overview (`trial_overview`, `missing_trials`) and the runs behind the report's
figures (`representative_runs`, `best_transfer_runs`, `metric_histories`).

Missing data is explicit: a planned trial that never ran, failed or is still running keeps its
row (state "not run"/"failed"/"running", NaN values) and every table counts such trials per cell.
Seeds are averaged (`n_seeds` says over how many).

What the bootstrap resamples (stated in the report too):
- asymmetry: the IQA benchmarks (columns of the backbone × benchmark SRCC matrix) and, independently,
  the optimization "cells" — one cell is one evaluator on one validation set (the per-set means
  `val/<set>/<evaluator>`; the pooled `val/<evaluator>` when a run has no per-set keys). Both are
  drawn with replacement, the two rankings and their Spearman/Kendall correlation recomputed;
  the interval is the percentile interval of the resampled correlations. Per-image scores are not
  in MLflow (the train loop logs per-set means), so test images are not resampled: the interval
  measures how much the conclusion depends on which benchmarks and which evaluators/sets are used.
  p-values (of the point estimates): exact permutation tests over all pairings for up to 8
  backbones, scipy's approximations beyond.
- transfer: the paired (test benchmark, seed) cells of two initialisations; with one cell, a
  normal interval from the two runs' own bootstrap intervals (over test images).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from raygrid import spec as catalog
from raygrid.analysis.sweep_data import NOT_RUN, OK_STATES, STAGES, SweepData, _axis_columns, _json_list
from raygrid.spec import mlflow as tracking

# No-reference pyiqa evaluators whose score is lower-is-better (pyiqa's `lower_better`); every
# other NR model is higher-is-better. The train loop does not log the direction, so it lives here.
LOWER_BETTER_NR = {"niqe", "ilniqe", "brisque", "piqe", "pi", "nrqm_lower", "paq2piq_lower"}
INITS = ("imagenet", "discriminator", "random")
TRANSFER_COMPARISONS = (("discriminator", "imagenet"), ("discriminator", "random"), ("imagenet", "random"))


# =============================================================================================
# Cell bookkeeping shared by the tables
# =============================================================================================


def _counts(group: pd.DataFrame, value_col: str | None = None) -> dict[str, Any]:
    ok = group["state"].isin(OK_STATES)
    if value_col is not None and value_col in group:
        ok &= group[value_col].notna()
    out = {
        "n_seeds": int(ok.sum()), "n_planned": len(group),
        "n_failed": int((group["state"] == "failed").sum()),
        "n_not_run": int((group["state"] == NOT_RUN).sum()),
        "n_running": int((group["state"] == "running").sum()),
    }
    out["status"] = _status(out)
    return out


def _status(c: dict[str, Any]) -> str:
    if c["n_seeds"] == c["n_planned"]:
        return "ok"
    parts = [f"{c['n_seeds']}/{c['n_planned']} ok"]
    for key, word in (("n_failed", "failed"), ("n_not_run", NOT_RUN), ("n_running", "running")):
        if c[key]:
            parts.append(f"{c[key]} {word}")
    no_value = c["n_planned"] - c["n_seeds"] - c["n_failed"] - c["n_not_run"] - c["n_running"]
    if no_value:
        parts.append(f"{no_value} without this metric")
    return ", ".join(parts)


def _mean_ok(group: pd.DataFrame, col: str) -> float:
    if col not in group:
        return float("nan")
    vals = pd.to_numeric(group.loc[group["state"].isin(OK_STATES), col], errors="coerce").dropna()
    return float(vals.mean()) if len(vals) else float("nan")


def _grouped(df: pd.DataFrame, keys: list[str]):
    # dropna=False: a cell whose key is missing is still a cell (never silently dropped)
    return df.groupby(keys, dropna=False, sort=True)


# =============================================================================================
# 1. Assessment: fidelity measures as FR-IQA models
# =============================================================================================

ASSESS_METRICS = ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi", "krcc", "krcc_lo", "krcc_hi", "n")


def assessment_table(data: SweepData) -> pd.DataFrame:
    """One row per (α/β variant, backbone, benchmark [, extra axes]): SRCC/PLCC/KRCC with the
    run's bootstrap interval (over the benchmark's images; the mean over seeds when several)."""
    df = data.stage("assess")
    cols = ["variant", "backbone", "benchmark"]
    if df.empty:
        return pd.DataFrame(columns=cols + list(ASSESS_METRICS) + ["n_seeds", "n_planned", "status"])
    keys = cols + _axis_columns(df)
    rows = []
    for key, g in _grouped(df, keys):
        row = dict(zip(keys, key))
        for m in ASSESS_METRICS:
            row[m] = _mean_ok(g, f"metrics.{m}")
        row.update(_counts(g, "metrics.srcc"))
        rows.append(row)
    return pd.DataFrame(rows)


def assessment_pivot(table: pd.DataFrame, variant: str, metric: str = "srcc") -> pd.DataFrame:
    """backbone × benchmark matrix of one variant (the paper's IQA table layout)."""
    sub = table[table["variant"] == variant]
    return sub.pivot_table(index="backbone", columns="benchmark", values=metric, aggfunc="mean", dropna=False)


# =============================================================================================
# 2. Optimization: the SR evaluator panel per fidelity backbone × discriminator × weight
# =============================================================================================

OPT_KEYS = ["backbone", "discriminator", "adv_weight"]


def optimization_table(data: SweepData) -> pd.DataFrame:
    """One row per (fidelity backbone, discriminator, adversarial weight [, extra axes]): every
    `val/...` metric (pooled and per validation set) at the chosen checkpoint, mean over seeds."""
    df = data.stage("optimize")
    if df.empty:
        return pd.DataFrame(columns=OPT_KEYS + ["n_seeds", "n_planned", "status", "step"])
    keys = OPT_KEYS + _axis_columns(df)
    metric_cols = _val_columns(df)
    rows = []
    for key, g in _grouped(df, keys):
        row = dict(zip(keys, key))
        row.update(_counts(g, metric_cols[0] if metric_cols else None))
        row["step"] = _mean_ok(g, "value_step")
        for c in metric_cols:
            row[c[len("metrics."):]] = _mean_ok(g, c)
        rows.append(row)
    out = pd.DataFrame(rows)
    # "none" first, then discriminators by name; weights ascending
    out["_none"] = out["discriminator"] != catalog.NO_DISCRIMINATOR
    out["_order"] = out["backbone"].map(backbone_order_key)
    out = out.sort_values(["_order", "backbone", "_none", "discriminator", "adv_weight"], kind="stable")
    out = out.drop(columns=["_none", "_order"])
    return out.reset_index(drop=True)


def _val_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c.startswith("metrics.val/") and df[c].notna().any()]
    pooled = sorted(c for c in cols if c.count("/") == 1)
    per_set = sorted(c for c in cols if c.count("/") >= 2)
    return pooled + per_set


@dataclass(frozen=True)
class EvaluatorInfo:
    name: str
    backbone: str | None  # the network it is built on (None: handcrafted)
    lower_better: bool


def evaluator_info(name: str, known_backbones: list[str] | tuple[str, ...] = ()) -> EvaluatorInfo:
    """Direction and backbone of a panel evaluator from its metric name (see metrics/panel.py)."""
    from raygrid.metrics.panel import PYIQA_NR
    from raygrid.spec.mlflow import metric_name

    if name in ("psnr_y", "ssim_y"):
        return EvaluatorInfo(name, None, False)
    if name.startswith("fidelity_"):
        backbones = list(dict.fromkeys([*known_backbones, *catalog.BACKBONES]))
        hit = next((b for b in backbones if metric_name(f"fidelity_{b}") == name), name[len("fidelity_"):])
        return EvaluatorInfo(name, hit, True)
    info = next((i for n, i in PYIQA_NR.items() if metric_name(n) == name), None)
    return EvaluatorInfo(name, info.backbone if info else None, name in LOWER_BETTER_NR)


def optimization_cells(table: pd.DataFrame, evaluators: list[str] | None = None) -> list[tuple[str, str]]:
    """(metric column, evaluator) pairs that score a backbone's SR outputs: the per-set columns
    `val/<set>/<evaluator>` where a table has them, else the pooled `val/<evaluator>`."""
    cols = [c for c in table.columns if c.startswith("val/")]
    per_set = [(c, c.split("/", 2)[2]) for c in cols if c.count("/") == 2]
    pooled = [(c, c.split("/", 1)[1]) for c in cols if c.count("/") == 1]
    cells = per_set or pooled
    if evaluators is not None:
        cells = [(c, e) for c, e in cells if e in evaluators]
    return cells


def pooled_evaluators(table: pd.DataFrame) -> list[str]:
    return [c.split("/", 1)[1] for c in table.columns if c.startswith("val/") and c.count("/") == 1]


# =============================================================================================
# 3. The asymmetry: IQA rank vs optimization rank
# =============================================================================================


def _rank_best_first(scores: np.ndarray, higher_better: bool) -> np.ndarray:
    """Average ranks along the last axis, 1 = best. Scores are rounded first so that equal means
    computed in a different order tie exactly."""
    s = np.round(np.asarray(scores, dtype=float), 12)
    return stats.rankdata(-s if higher_better else s, axis=-1)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (rows of x, y are already ranks): Pearson of the ranks."""
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    den = np.sqrt((xc ** 2).sum(1) * (yc ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(1) / den, np.nan)


def _row_kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair: sum(sx·sy) / sqrt(sum sx² · sum sy²) over pairs i<j."""
    i, j = np.triu_indices(x.shape[1], k=1)
    sx, sy = np.sign(x[:, i] - x[:, j]), np.sign(y[:, i] - y[:, j])
    den = np.sqrt((sx ** 2).sum(1) * (sy ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(1) / den, np.nan)


EXACT_P_MAX = 8  # up to 8 backbones, p-values enumerate all k! pairings (40 320)


def permutation_p(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Exact two-sided permutation p-values of Spearman's rho and Kendall's tau-b: the share of
    all k! pairings of y with x whose |statistic| reaches the observed one. scipy's spearmanr
    p-value comes from a t approximation (p = 0 for a perfect ranking of 4), useless at k = 4..8."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    perms = np.array(list(itertools.permutations(range(len(y)))))
    xs = np.broadcast_to(x, perms.shape)
    ys = y[perms]
    out = []
    for fn in (_row_spearman, _row_kendall):
        stat = fn(xs, ys)
        observed = fn(x[None], y[None])[0]
        out.append(float(np.mean(np.abs(stat) >= abs(observed) - 1e-12)))
    return out[0], out[1]


def rank_scores(iqa: np.ndarray, cell_ranks: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IQA score, optimization score) per backbone.

    iqa: backbones × benchmarks, SRCC (higher = better) → score = mean over benchmarks.
    cell_ranks: backbones × cells, the rank of each backbone's SR outputs by each cell's evaluator
    (1 = best); exclude: same shape, True where the cell's evaluator is built on the backbone of
    the loss it judges → score = mean rank over the other cells (lower = better).
    """
    keep = ~exclude
    with np.errstate(invalid="ignore"):
        opt = np.where(keep.sum(-1) > 0, (np.where(keep, cell_ranks, 0)).sum(-1) / keep.sum(-1), np.nan)
    return iqa.mean(-1), opt


def bootstrap_rank_correlation(iqa: np.ndarray, cell_ranks: np.ndarray, exclude: np.ndarray,
                               n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Spearman and Kendall (tau-b) between the IQA ranking and the optimization ranking, with
    percentile bootstrap intervals.

    Each resample draws `n_bench` benchmark columns of `iqa` and, independently, `n_cells` cell
    columns of `cell_ranks`/`exclude`, with replacement (draw order: all benchmark indices, then
    all cell indices: `rng.integers(0, n_bench, (n_boot, n_bench))`, then
    `rng.integers(0, n_cells, (n_boot, n_cells))`, `rng = np.random.default_rng(seed)`), and
    recomputes both rankings. The per-cell ranks are not recomputed: a resample reweights
    evaluators/sets, it does not change who beat whom on a cell. Resamples in which a ranking
    is undefined (a backbone left with only its own evaluator's cells, or all tied) are dropped
    and counted (`n_boot_valid`).
    """
    iqa_score, opt_score = rank_scores(iqa, cell_ranks, exclude)
    r_iqa, r_opt = _rank_best_first(iqa_score, True), _rank_best_first(opt_score, False)
    out: dict[str, Any] = {"iqa_score": iqa_score, "opt_score": opt_score, "iqa_rank": r_iqa, "opt_rank": r_opt}
    k = len(iqa_score)
    if k >= 3 and np.isfinite(opt_score).all() and np.isfinite(iqa_score).all():
        rho, p_rho = stats.spearmanr(r_iqa, r_opt)
        tau, p_tau = stats.kendalltau(r_iqa, r_opt)  # tau-b
        if k <= EXACT_P_MAX:
            p_rho, p_tau = permutation_p(r_iqa, r_opt)
    else:
        rho = p_rho = tau = p_tau = float("nan")
    out.update(spearman=float(rho), spearman_p=float(p_rho), kendall=float(tau), kendall_p=float(p_tau))

    rng = np.random.default_rng(seed)
    nb, nc = iqa.shape[1], cell_ranks.shape[1]
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    if k < 3 or n_boot <= 0 or nb == 0 or nc == 0:
        out.update(spearman_lo=np.nan, spearman_hi=np.nan, kendall_lo=np.nan, kendall_hi=np.nan, n_boot_valid=0)
        return out
    ib = rng.integers(0, nb, size=(n_boot, nb))
    ic = rng.integers(0, nc, size=(n_boot, nc))
    iqa_b = iqa[:, ib].mean(-1).T  # n_boot × k
    ranks_b = np.transpose(cell_ranks[:, ic], (1, 0, 2))  # n_boot × k × nc
    excl_b = np.transpose(exclude[:, ic], (1, 0, 2))
    _, opt_b = rank_scores(np.zeros((n_boot, k, 1)), ranks_b, excl_b)
    valid = np.isfinite(opt_b).all(1)
    rb_iqa = _rank_best_first(iqa_b, True)
    rb_opt = _rank_best_first(np.where(np.isfinite(opt_b), opt_b, 0.0), False)
    rho_b = np.where(valid, _row_spearman(rb_iqa, rb_opt), np.nan)
    tau_b = np.where(valid, _row_kendall(rb_iqa, rb_opt), np.nan)
    for name, vals in (("spearman", rho_b), ("kendall", tau_b)):
        v = vals[np.isfinite(vals)]
        lo, hi = (np.quantile(v, [lo_q, hi_q]) if len(v) else (np.nan, np.nan))
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    out["n_boot_valid"] = int(np.isfinite(rho_b).sum())
    out["boot_spearman"], out["boot_kendall"] = rho_b, tau_b
    return out


@dataclass
class Asymmetry:
    summary: pd.DataFrame  # one row per (IQA variant, optimization setting)
    ranks: pd.DataFrame  # one row per (IQA variant, setting, backbone)
    notes: list[str] = field(default_factory=list)


def optimization_settings(opt: pd.DataFrame, per_discriminator: bool = True) -> list[tuple[str, pd.Series]]:
    """(label, row mask) of the optimization settings compared with the IQA ranking."""
    if opt.empty:
        return []
    none = opt["discriminator"] == catalog.NO_DISCRIMINATOR
    out = [("no adversarial loss", none), ("adversarial loss (all discriminators, weights)", ~none)]
    if per_discriminator:
        for d in sorted(set(opt.loc[~none, "discriminator"].dropna())):
            out.append((f"adversarial: {d}", opt["discriminator"] == d))
    return out


def setting_matrix(opt: pd.DataFrame, mask: pd.Series, cells: list[tuple[str, str]]) -> tuple[pd.DataFrame, pd.Series]:
    """backbone × cell values of a setting: the mean over the setting's configurations
    (discriminator × weight rows, each already a mean over seeds) that have a value; plus the
    number of configurations with values per backbone."""
    sub = opt[mask]
    cols = [c for c, _ in cells]
    values = sub.groupby("backbone")[cols].mean() if len(sub) else pd.DataFrame(columns=cols)
    n_conf = sub.assign(_has=sub[cols].notna().any(axis=1)).groupby("backbone")["_has"].sum() if len(sub) else pd.Series(dtype=int)
    return values, n_conf


def asymmetry(assess: pd.DataFrame, opt: pd.DataFrame, *, iqa_metric: str = "srcc",
              variants: list[str] | None = None, evaluators: list[str] | None = None,
              exclude_same_backbone: bool = True, per_discriminator: bool = True,
              n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Asymmetry:
    """Rank correlation between each fidelity backbone's IQA rank and its optimization rank.

    IQA score: mean `iqa_metric` over the benchmarks every compared backbone has (rank 1 =
    highest). Optimization score: each cell (evaluator × validation set) ranks the backbones'
    SR outputs (1 = best in the evaluator's direction); the score is the mean rank over cells,
    leaving out, for each backbone, the cells whose evaluator is built on that backbone when
    `exclude_same_backbone` (rank 1 = lowest mean rank). A backbone missing on either side is
    listed with its reason and left out of the correlation; incomplete benchmarks and cells are
    left out for every backbone (so all are compared on the same evidence) and named in the notes.
    Rank shift = optimization rank − IQA rank (> 0: worse as a loss than as an IQA measure).
    """
    summary, ranks, notes = [], [], []
    if assess.empty or opt.empty:
        missing = [n for n, t in (("assess", assess), ("optimize", opt)) if t.empty]
        notes.append(f"asymmetry not computed: no {' and no '.join(missing)} results.")
        return Asymmetry(pd.DataFrame(), pd.DataFrame(), notes)
    cells = optimization_cells(opt, evaluators)
    if not cells or assess[iqa_metric].notna().sum() == 0:
        side = "optimize" if not cells else "assess"
        notes.append(f"asymmetry not computed: no {side} trial has results yet (failed, not run or running).")
        return Asymmetry(pd.DataFrame(), pd.DataFrame(), notes)
    backbones_all = sorted(set(opt["backbone"].dropna()) | set(assess["backbone"].dropna()))
    info = {e: evaluator_info(e, backbones_all) for e in {e for _, e in cells}}
    # uniform α/β first: it is the fidelity measure the optimize stage trains with by default
    for variant in variants or sorted(assess["variant"].dropna().unique(), key=lambda v: (v != "uniform", v)):
        iqa_tab = assess[assess["variant"] == variant].pivot_table(
            index="backbone", columns="benchmark", values=iqa_metric, aggfunc="mean", dropna=False)
        for label, mask in optimization_settings(opt, per_discriminator):
            values, n_conf = setting_matrix(opt, mask, cells)
            s, r, n = _one_setting(variant, label, iqa_tab, values, n_conf, cells, info,
                                   exclude_same_backbone, n_boot, seed, level)
            summary.append(s)
            ranks += r
            notes += n
    return Asymmetry(pd.DataFrame(summary), pd.DataFrame(ranks), notes)


def _one_setting(variant, label, iqa_tab, values, n_conf, cells, info, exclude_same, n_boot, seed, level):
    notes = []
    have_iqa = set(iqa_tab.index[iqa_tab.notna().any(axis=1)]) if len(iqa_tab) else set()
    have_opt = set(values.index[values.notna().any(axis=1)]) if len(values) else set()
    every = sorted(set(iqa_tab.index) | set(values.index))
    used = sorted(have_iqa & have_opt)
    why = {b: ("no IQA result" if b not in have_iqa else "no optimize result") for b in every if b not in used}
    benches = [c for c in iqa_tab.columns if used and iqa_tab.loc[used, c].notna().all()]
    cell_cols = [(c, e) for c, e in cells if used and c in values and values.loc[used, c].notna().all()]
    dropped_b = [c for c in iqa_tab.columns if c not in benches]
    dropped_c = [c for c, _ in cells if c not in [x for x, _ in cell_cols]]
    where = f"[{variant} | {label}]"
    if dropped_b and used:
        notes.append(f"{where} benchmarks left out (not every backbone has them): {', '.join(map(str, dropped_b))}")
    if dropped_c and used:
        notes.append(f"{where} evaluator cells left out (not every backbone has them): {', '.join(dropped_c)}")
    counts = {b: int(n_conf.get(b, 0)) for b in used}
    if len(set(counts.values())) > 1:
        notes.append(f"{where} backbones are averaged over different numbers of configurations: "
                     + ", ".join(f"{b} {n}" for b, n in counts.items()))

    k = len(used)
    iqa = iqa_tab.loc[used, benches].to_numpy(float) if k else np.zeros((0, 0))
    raw = values.loc[used, [c for c, _ in cell_cols]].to_numpy(float) if k else np.zeros((0, 0))
    cell_ranks = np.zeros_like(raw)
    exclude = np.zeros(raw.shape, dtype=bool)
    for j, (_, e) in enumerate(cell_cols):
        cell_ranks[:, j] = _rank_best_first(raw[:, j], not info[e].lower_better)
        if exclude_same:
            exclude[:, j] = [info[e].backbone == b for b in used]
    if k and (not benches or not cell_cols):
        res = {"spearman": np.nan, "kendall": np.nan}
        notes.append(f"{where} no benchmark or evaluator cell that every backbone has: no correlation.")
    else:
        res = bootstrap_rank_correlation(iqa, cell_ranks, exclude, n_boot, seed, level) if k else {}
    if 0 < k < 3:
        notes.append(f"{where} only {k} backbone(s) with both results: a rank correlation needs 3.")

    summary = {
        "iqa_variant": variant, "setting": label, "n_backbones": k, "backbones": ", ".join(used),
        "missing": "; ".join(f"{b} ({w})" for b, w in why.items()), "n_benchmarks": len(benches),
        "benchmarks": ", ".join(map(str, benches)), "n_cells": len(cell_cols),
        "evaluators": ", ".join(dict.fromkeys(e for _, e in cell_cols)),
        "exclude_same_backbone": exclude_same,
    }
    for key in ("spearman", "spearman_lo", "spearman_hi", "spearman_p", "kendall", "kendall_lo", "kendall_hi",
                "kendall_p"):
        summary[key] = float(res.get(key, np.nan))
    summary["n_boot"] = n_boot
    summary["n_boot_valid"] = int(res.get("n_boot_valid", 0))
    summary["level"] = level

    rows = []
    for b in every:
        row = {"iqa_variant": variant, "setting": label, "backbone": b, "included": b in used, "note": why.get(b, "")}
        if b in used:
            i = used.index(b)
            row.update(iqa_score=float(res.get("iqa_score", [np.nan] * k)[i]) if res else np.nan,
                       iqa_rank=float(res["iqa_rank"][i]) if "iqa_rank" in res else np.nan,
                       opt_score=float(res["opt_score"][i]) if "opt_score" in res else np.nan,
                       opt_rank=float(res["opt_rank"][i]) if "opt_rank" in res else np.nan,
                       n_cells=int((~exclude[i]).sum()), n_configs=counts[b])
            row["rank_shift"] = row["opt_rank"] - row["iqa_rank"]
        else:
            row.update(iqa_score=np.nan, iqa_rank=np.nan, opt_score=np.nan, opt_rank=np.nan, n_cells=0,
                       n_configs=int(n_conf.get(b, 0)), rank_shift=np.nan)
        rows.append(row)
    return summary, rows, notes


# =============================================================================================
# 4. Discriminators per fidelity backbone
# =============================================================================================


def discriminator_table(opt: pd.DataFrame, evaluators: list[str] | None = None,
                        exclude_same_backbone: bool = True) -> pd.DataFrame:
    """Discriminator designs ranked per fidelity backbone, with the gain over no adversarial loss.

    A design's values are the mean over its adversarial weights (each a mean over seeds). Each
    cell (evaluator × val set) ranks the designs of one fidelity backbone (1 = best, "none"
    included); `mean_rank` averages over cells (leaving out the evaluator built on the fidelity
    backbone when `exclude_same_backbone`), `rank` orders the designs by it. `gain <evaluator>`
    = design − none on the pooled validation value, signed so that > 0 is better.
    """
    if opt.empty:
        return pd.DataFrame()
    cells = optimization_cells(opt, evaluators)
    pooled = [e for e in pooled_evaluators(opt) if evaluators is None or e in evaluators]
    all_bb = sorted(opt["backbone"].dropna().unique(), key=lambda b: (backbone_order_key(b), b))
    info = {e: evaluator_info(e, all_bb) for e in set(pooled) | {e for _, e in cells}}
    cols = [c for c, _ in cells] + [f"val/{e}" for e in pooled]
    cols = list(dict.fromkeys(cols))
    rows = []
    for b in all_bb:
        sub = opt[opt["backbone"] == b]
        design = sub.groupby("discriminator", dropna=False)[cols].mean()
        n_w = sub.assign(_has=sub[cols].notna().any(axis=1)).groupby("discriminator", dropna=False)["_has"].sum()
        n_runs = sub.groupby("discriminator", dropna=False)["n_seeds"].sum()
        use = [(c, e) for c, e in cells if not (exclude_same_backbone and info[e].backbone == b)]
        ranks = pd.DataFrame(index=design.index)
        for c, e in use:
            col = design[c]
            r = pd.Series(np.nan, index=design.index)
            ok = col.notna()
            if ok.any():
                r[ok] = _rank_best_first(col[ok].to_numpy(float), not info[e].lower_better)
            ranks[c] = r
        mean_rank = ranks.mean(axis=1) if len(use) else pd.Series(np.nan, index=design.index)
        none_vals = design.loc[catalog.NO_DISCRIMINATOR] if catalog.NO_DISCRIMINATOR in design.index else None
        order = _rank_best_first(mean_rank.fillna(np.inf).to_numpy(float), False)
        for d, mr, rk in zip(design.index, mean_rank, order):
            head, trunk = ("—", "—") if d == catalog.NO_DISCRIMINATOR or not isinstance(d, str) else catalog.split_discriminator(d)
            row = {"backbone": b, "discriminator": d, "head": head, "trunk": trunk,
                   "n_weights": int(n_w.get(d, 0)), "n_runs": int(n_runs.get(d, 0)),
                   "n_cells": int(ranks.loc[d].notna().sum()) if len(use) else 0,
                   "mean_rank": float(mr), "rank": float(rk) if np.isfinite(mr) else np.nan}
            for e in pooled:
                v = design.loc[d, f"val/{e}"]
                row[f"val/{e}"] = float(v)
                if none_vals is not None:
                    sign = -1.0 if info[e].lower_better else 1.0
                    row[f"gain {e}"] = sign * (float(v) - float(none_vals[f"val/{e}"])) + 0.0  # no -0.0
                else:
                    row[f"gain {e}"] = np.nan
            rows.append(row)
    out = pd.DataFrame(rows)
    out["_order"] = out["backbone"].map(backbone_order_key)
    out = out.sort_values(["_order", "backbone", "rank"], kind="stable", na_position="last")
    return out.drop(columns="_order").reset_index(drop=True)


# =============================================================================================
# 5. Transfer: IQA models by initialisation
# =============================================================================================

TRANSFER_KEYS = ["backbone", "kind", "train_set", "test_set", "init"]
TRANSFER_METRICS = ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi")


def transfer_cells(data: SweepData) -> pd.DataFrame:
    """One row per (transfer trial, test benchmark): the trial's test/<benchmark>/* values."""
    df = data.stage("transfer")
    if df.empty:
        return pd.DataFrame(columns=TRANSFER_KEYS + ["seed", "state"] + list(TRANSFER_METRICS))
    opt = data.stage("optimize")
    by_run = {r["run_id"]: r for _, r in opt.iterrows() if r["run_id"]}
    axes = _axis_columns(df)
    rows = []
    for _, t in df.iterrows():
        tests = _json_list(t.get("params.data.test"))
        tests += sorted({c.split("/")[1] for c in t.index if c.startswith("metrics.test/") and pd.notna(t[c])} - set(tests))
        for bench in tests or [None]:
            row = {k: t.get(k) for k in ["backbone", "kind", "train_set", "init", "seed", "state", "run_id"] + axes}
            row["test_set"] = bench
            for m in TRANSFER_METRICS:
                row[m] = t.get(f"metrics.test/{bench}/{m}", np.nan) if bench else np.nan
            row["source"] = _source(t, by_run)
            rows.append(row)
    return pd.DataFrame(rows)


def _source(t: pd.Series, by_run: dict[str, pd.Series]) -> str:
    run = t.get("tags.raygrid.init_from_run")
    if not isinstance(run, str) or not run:
        return ""
    src = by_run.get(run)
    if src is None:
        return f"run {run}"
    return f"{src['backbone']} loss + {src['discriminator']} @ {src['adv_weight']:g} (run {run[:8]})"


def transfer_table(data: SweepData) -> pd.DataFrame:
    """One row per (backbone, kind, train set, test benchmark, init [, extra axes]): SRCC/PLCC
    mean over seeds, the seed standard deviation, and the mean of the runs' bootstrap bounds."""
    cells = transfer_cells(data)
    if cells.empty:
        return pd.DataFrame(columns=TRANSFER_KEYS + list(TRANSFER_METRICS) + ["n_seeds", "status"])
    keys = TRANSFER_KEYS + [c for c in cells.columns if c.startswith("axis:")]
    rows = []
    for key, g in _grouped(cells, keys):
        row = dict(zip(keys, key))
        for m in TRANSFER_METRICS:
            row[m] = _mean_ok(g, m)
        for m in ("srcc", "plcc"):
            vals = g.loc[g["state"].isin(OK_STATES), m].dropna()
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
        row.update(_counts(g, "srcc"))
        row["source"] = "; ".join(sorted({s for s in g["source"] if s}))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_init"] = out["init"].map({n: i for i, n in enumerate(INITS)}).fillna(len(INITS))
    return out.sort_values(keys[:-1] + ["_init"], kind="stable").drop(columns="_init").reset_index(drop=True)


def transfer_differences(data: SweepData, metrics: tuple[str, ...] = ("srcc", "plcc"),
                         n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """init A − init B, paired by (backbone, kind, train set, test benchmark, seed [, extra axes]).

    Per backbone and over all backbones ("all"): the mean paired difference with a percentile
    bootstrap interval resampling the paired cells (n ≥ 2), or, for a single cell, a normal
    interval from the two runs' own bootstrap intervals (standard error ≈ width / (2·z),
    independence assumed — conservative, as both runs are scored on the same images).
    """
    cells = transfer_cells(data)
    cols = ["comparison", "backbone", "metric", "diff", "ci_lo", "ci_hi", "n_cells", "ci_method"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    cells = cells[cells["state"].isin(OK_STATES)]
    pair_keys = ["backbone", "kind", "train_set", "test_set", "seed"] + [c for c in cells.columns if c.startswith("axis:")]
    z = stats.norm.ppf(1 - (1 - level) / 2)
    rows = []
    for a, b in TRANSFER_COMPARISONS:
        for metric in metrics:
            keep = pair_keys + [metric, f"{metric}_lo", f"{metric}_hi"]
            joined = cells.loc[cells["init"] == a, keep].merge(
                cells.loc[cells["init"] == b, keep], on=pair_keys, suffixes=("_a", "_b"), how="inner").dropna(
                subset=[f"{metric}_a", f"{metric}_b"])
            groups = [(bb, g) for bb, g in joined.groupby("backbone")] + [("all", joined)]
            for bb, g in groups:
                d = (g[f"{metric}_a"] - g[f"{metric}_b"]).to_numpy(float)
                row = {"comparison": f"{a} − {b}", "backbone": bb, "metric": metric, "n_cells": len(d)}
                if len(d) == 0:
                    row.update(diff=np.nan, ci_lo=np.nan, ci_hi=np.nan, ci_method="no paired cells")
                elif len(d) == 1:
                    se = [(g[f"{metric}_hi_{s}"].iloc[0] - g[f"{metric}_lo_{s}"].iloc[0]) / (2 * z) for s in "ab"]
                    half = z * math.sqrt(se[0] ** 2 + se[1] ** 2) if all(np.isfinite(se)) else np.nan
                    row.update(diff=float(d[0]), ci_lo=float(d[0] - half), ci_hi=float(d[0] + half),
                               ci_method="normal, from the runs' bootstrap CIs")
                else:
                    rng = np.random.default_rng(seed)
                    boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
                    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
                    row.update(diff=float(d.mean()), ci_lo=float(lo), ci_hi=float(hi),
                               ci_method="bootstrap over paired (benchmark, seed) cells")
                rows.append(row)
    return pd.DataFrame(rows, columns=cols)


# =============================================================================================
# Trial overview and the runs behind figures
# =============================================================================================


def trial_overview(data: SweepData) -> pd.DataFrame:
    """Per stage: trials planned/seen and how many finished, stopped, failed, are running, never ran."""
    rows = []
    for stage in STAGES:
        df = data.stage(stage)
        if df.empty:
            rows.append({"stage": stage, "trials": 0, "finished": 0, "stopped": 0, "failed": 0, "running": 0,
                         NOT_RUN: 0})
            continue
        counts = df["state"].value_counts()
        rows.append({"stage": stage, "trials": len(df), **{s: int(counts.get(s, 0)) for s in
                                                            ("finished", "stopped", "failed", "running", NOT_RUN)}})
    return pd.DataFrame(rows)


def missing_trials(data: SweepData) -> pd.DataFrame:
    """Every trial whose values are not in the tables (failed, not run, running), with its point."""
    t = data.trials
    if t.empty:
        return pd.DataFrame(columns=["stage", "state", "point", "run_id", "error"])
    bad = t[~t["state"].isin(OK_STATES)]
    err = bad["tags.raygrid.error"] if "tags.raygrid.error" in bad else pd.Series("", index=bad.index)
    return pd.DataFrame({
        "stage": bad["stage"], "state": bad["state"],
        "point": [json.dumps(p, default=str) for p in bad["point"]], "run_id": bad["run_id"],
        "error": [(e.strip().splitlines()[-1][:200] if isinstance(e, str) and e.strip() else "") for e in err],
    }).reset_index(drop=True)


def representative_runs(data: SweepData, max_runs: int = 8) -> pd.DataFrame:
    """The best optimize run per (fidelity backbone, with/without adversarial loss), by the
    stage's selection metric at the chosen checkpoint: the runs shown as curves and SR samples."""
    df = data.stage("optimize")
    metric, mode = data.selection("optimize")
    col = f"metrics.{metric}"
    if df.empty or col not in df:
        return df.iloc[0:0]
    df = df[df["state"].isin(OK_STATES) & df[col].notna()].copy()
    df["adversarial"] = df["discriminator"] != catalog.NO_DISCRIMINATOR
    df = df.sort_values(col, ascending=(mode == "min"), kind="stable")
    best = df.drop_duplicates(["backbone", "adversarial"], keep="first")
    best = best.assign(_order=best["backbone"].map(backbone_order_key))
    best = best.sort_values(["_order", "backbone", "adversarial"], kind="stable").drop(columns="_order")
    return best.head(max_runs).reset_index(drop=True)


def backbone_order_key(b: Any) -> int:
    """The catalog's order (as the paper lists the backbones); unknown names last."""
    return list(catalog.BACKBONES).index(b) if b in catalog.BACKBONES else len(catalog.BACKBONES)


def best_transfer_runs(data: SweepData, max_runs: int = 6) -> pd.DataFrame:
    df = data.stage("transfer")
    metric, mode = data.selection("transfer")
    col = f"metrics.{metric}"
    if df.empty or col not in df:
        return df.iloc[0:0]
    df = df[df["state"].isin(OK_STATES) & df[col].notna()]
    df = df.sort_values(col, ascending=(mode == "min"), kind="stable")
    return df.drop_duplicates(["backbone", "init"], keep="first").head(max_runs).reset_index(drop=True)


def metric_histories(data: SweepData, runs: pd.DataFrame, keys: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run_id: {metric: [(step, value), ...]}} through MlflowClient.get_metric_history."""
    client = tracking.client(data.tracking_uri)
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for _, r in runs.iterrows():
        out[r["run_id"]] = {}
        for k in keys:
            hist = sorted(client.get_metric_history(r["run_id"], k), key=lambda m: (m.step, m.timestamp))
            if hist:
                out[r["run_id"]][k] = [(int(m.step), float(m.value)) for m in hist]
    return out
