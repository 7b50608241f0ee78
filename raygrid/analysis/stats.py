"""The asymmetry and transfer statistics, from the tables of raygrid.analysis.tables.

    asymmetry(iqa_items, optimization_items)  IQA rank vs optimization rank of the fidelity
        backbones (raygrid.analysis.intervals.asymmetry_interval: a paired, hierarchical bootstrap
        over test images, seeds, evaluators and IQA reference images), one row per
        α/β x generator x optimization setting x panel:
        - α/β: an IQA variant is paired only with losses trained with the same α/β (a fitted
          measure's IQA rank says nothing about a loss trained with uniform α/β); a variant
          without such an optimize arm is left out, and a note says so;
        - generator: "all" (the generator is one more setting cell) and, when the optimize grid has
          a `generator.arch` axis, each generator alone — with a line saying whether the
          conclusion holds across them;
        - setting: no adversarial loss, any adversarial loss, each discriminator;
        - panel: every evaluator, and the independent panel (no DISTS-style measure: no-reference
          models and measures without a learned backbone, e.g. PSNR/SSIM) — a robustness row that
          says when the conclusion flips.
        Circularity: an evaluator that shares a trunk with a run's loss or discriminator (its
        record's `shares`) never judges that run's backbone (intervals: `excluded`).
    transfer_differences(cells)  init A − init B, paired by (backbone, protocol, benchmark, seed)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from raygrid import spec as catalog
from raygrid.analysis.intervals import AsymmetryInterval, asymmetry_interval
from raygrid.analysis.tables import axis_columns

SPLIT_AXES = ("generator.arch",)  # optimize axes each of whose values is a study of its own
ALL = "all"
PANELS = ("all evaluators", "independent panel")
NO_ADV = "no adversarial loss"
ANY_ADV = "adversarial loss (all discriminators, weights)"


@dataclass
class Asymmetry:
    summary: pd.DataFrame  # one row per (iqa_variant, generator, setting, panel)
    ranks: pd.DataFrame  # one row per summary row x backbone
    notes: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # conclusions in words: flips, generators
    split: str | None = None  # the axis the rows are split on (generator.arch), if any


def conclusion(rho: float, lo: float, hi: float) -> str:
    """What a row says: the sign of ρ when its interval excludes 0, else inconclusive."""
    if not np.isfinite(rho):
        return "not computed"
    if np.isfinite(lo) and np.isfinite(hi):
        if hi < 0:
            return "asymmetry (ρ < 0)"
        if lo > 0:
            return "agreement (ρ > 0)"
        return "inconclusive (interval contains 0)"
    return f"ρ {'<' if rho < 0 else '>' if rho > 0 else '='} 0 (no interval)"


def settings(opt: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    none = opt["discriminator"] == catalog.NO_DISCRIMINATOR
    out = [(NO_ADV, none), (ANY_ADV, ~none)]
    for d in sorted(set(opt.loc[~none, "discriminator"].dropna())):
        out.append((f"adversarial: {d}", opt["discriminator"] == d))
    return [(label, m) for label, m in out if m.any()]


def _iqa_for(iqa: pd.DataFrame, variant: str, notes: list[str]) -> pd.DataFrame:
    sub = iqa[iqa["variant"] == variant]
    if sub["seed"].nunique() > 1:  # one prediction per pair and backbone: the mean over seeds
        notes.append(f"[{variant}] IQA predictions averaged over {sub['seed'].nunique()} assess seeds.")
        first = sub.drop_duplicates(["backbone", "benchmark", "item"]).set_index(["backbone", "benchmark", "item"])
        pred = sub.groupby(["backbone", "benchmark", "item"])["pred"].mean()
        sub = first.assign(pred=pred).reset_index()
    return sub


def asymmetry(iqa: pd.DataFrame, items: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
              exclude_shared: bool = True, per_discriminator: bool = True) -> Asymmetry:
    """The asymmetry rows (module docstring). iqa: tables.iqa_items; items: tables.optimization_items."""
    notes: list[str] = []
    if iqa.empty or items.empty:
        missing = [n for n, t in (("assess", iqa), ("optimize", items)) if t.empty]
        notes.append(f"asymmetry not computed: no per-item results of {' and '.join(missing)} at the common step.")
        return Asymmetry(pd.DataFrame(), pd.DataFrame(), notes)
    unknown = items["higher_better"].isna()
    if unknown.any():
        runs = items.loc[unknown, "run_id"].nunique()
        notes.append(f"{runs} optimize run(s) have no evaluator record (evaluators.json) for "
                     f"{', '.join(sorted(set(items.loc[unknown, 'evaluator'])))}: without a direction those "
                     "scores are not ranked.")
        items = items[~unknown]
    items = items.assign(higher_better=items["higher_better"].astype(bool),
                         excluded=items["excluded"].astype(bool) if exclude_shared else False)
    split = next((a for a in SPLIT_AXES if f"axis:{a}" in items and items[f"axis:{a}"].nunique() > 1), None)
    cells = ["discriminator", "adv_weight", *axis_columns(items)]  # "all": the generator is one more cell
    groups = [(ALL, items)] + ([(g, items[items[f"axis:{split}"] == g]) for g in sorted(items[f"axis:{split}"].unique())]
                               if split else [])
    variants = sorted(iqa["variant"].dropna().unique(), key=lambda v: (v != "uniform", v))
    summary, ranks = [], []
    for variant in variants:
        opt_v = items[items["alpha_beta"] == variant]
        if opt_v.empty:
            trained = ", ".join(sorted(set(items["alpha_beta"])))
            notes.append(f"IQA α/β {variant!r}: no optimize arm was trained with these α/β (losses trained with: "
                         f"{trained}); its asymmetry rows are left out — a measure's IQA rank is paired only with "
                         "losses built with the same α/β.")
            continue
        iqa_v = _iqa_for(iqa, variant, notes)
        for gen, opt_g in groups:
            opt_g = opt_g[opt_g["alpha_beta"] == variant]
            for label, mask in settings(opt_g):
                if not per_discriminator and label not in (NO_ADV, ANY_ADV):
                    continue
                for panel in PANELS:
                    sub = opt_g[mask] if panel == PANELS[0] else opt_g[mask & opt_g["independent"].astype(bool)]
                    key = {"iqa_variant": variant, "generator": gen, "setting": label, "panel": panel}
                    if sub.empty:
                        notes.append(f"[{variant} | {gen} | {label}] the {panel} has no evaluator.")
                        continue
                    own = [c for c in cells if gen == ALL or c != f"axis:{split}"]
                    res = asymmetry_interval(iqa_v, sub, cell_columns=own, n_boot=n_boot, seed=seed, level=level)
                    notes += [f"[{variant} | {gen} | {label} | {panel}] {n}" for n in res.notes]
                    summary.append(_summary_row(key, res, sub))
                    ranks += _rank_rows(key, res)
    out = Asymmetry(pd.DataFrame(summary), pd.DataFrame(ranks), notes, split=split)
    if not out.summary.empty:
        out.summary["flips"] = _flips(out.summary)
        out.lines = _lines(out.summary, split)
    return out


def _summary_row(key: dict, res: AsymmetryInterval, sub: pd.DataFrame) -> dict:
    row = {**key, **res.as_row()}
    row["conclusion"] = conclusion(res.spearman, res.spearman_lo, res.spearman_hi)
    used = sorted(set(sub["evaluator"]))
    row["evaluators"] = ", ".join(used)
    shared = sub[sub["excluded"]].groupby("evaluator")["backbone"].agg(lambda b: ", ".join(sorted(set(b))))
    row["left_out"] = "; ".join(f"{e} (for {b})" for e, b in shared.items())
    return row


def _rank_rows(key: dict, res: AsymmetryInterval) -> list[dict]:
    rows = [{**key, **r, "included": True, "note": ""} for r in res.ranks.to_dict("records")]
    rows += [{**key, "backbone": b, "included": False, "note": why} for b, why in res.missing.items()]
    return rows


def _flips(summary: pd.DataFrame) -> list[str]:
    """On each independent-panel row: whether its conclusion differs from the full panel's."""
    full = summary[summary["panel"] == PANELS[0]].set_index(["iqa_variant", "generator", "setting"])
    out = []
    for _, r in summary.iterrows():
        k = (r["iqa_variant"], r["generator"], r["setting"])
        if r["panel"] == PANELS[0] or k not in full.index:
            out.append("")
            continue
        f = full.loc[k]
        sign_a, sign_b = np.sign(f["spearman"]), np.sign(r["spearman"])
        if np.isfinite(sign_a) and np.isfinite(sign_b) and sign_a * sign_b < 0:
            out.append(f"yes: ρ {f['spearman']:+.2f} → {r['spearman']:+.2f}")
        elif f["conclusion"] != r["conclusion"]:
            out.append(f"conclusion changes: {f['conclusion']} → {r['conclusion']}")
        else:
            out.append("no")
    return out


def _lines(summary: pd.DataFrame, split: str | None) -> list[str]:
    lines = []
    for _, r in summary[summary["flips"].str.startswith(("yes", "conclusion"))].iterrows():
        lines.append(f"[{r['iqa_variant']} | {r['generator']} | {r['setting']}] judged by the independent panel only, "
                     f"the conclusion flips ({r['flips']}).")
    if split:
        full = summary[(summary["panel"] == PANELS[0]) & (summary["generator"] != ALL)]
        for (variant, setting), g in full.groupby(["iqa_variant", "setting"], sort=False):
            each = ", ".join(f"{r.generator}: {r.conclusion}, ρ {r.spearman:+.2f} [{r.spearman_lo:+.2f}, "
                             f"{r.spearman_hi:+.2f}]" for r in g.itertuples())
            signs = {np.sign(v) for v in g["spearman"] if np.isfinite(v)}
            holds = g["conclusion"].nunique() == 1 and len(signs) == 1
            verdict = "the conclusion holds across generators" if holds else "the conclusion differs between generators"
            lines.append(f"[{variant} | {setting}] per {split}: {verdict} ({each}).")
    return lines


# =============================================================================================
# Transfer
# =============================================================================================

TRANSFER_COMPARISONS = (("discriminator", "imagenet"), ("discriminator", "random"), ("imagenet", "random"))


def transfer_differences(cells: pd.DataFrame, metrics: tuple[str, ...] = ("srcc", "plcc"), n_boot: int = 2000,
                         seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """init A − init B, paired by (backbone, kind, train set, test benchmark, seed [, axes]), per
    backbone and over all ("all"): the mean paired difference with a percentile bootstrap over the
    paired cells (n ≥ 2), or for a single cell a normal interval from the two runs' own intervals
    (standard error ≈ width / (2z), independence assumed: conservative, both see the same images)."""
    cols = ["comparison", "backbone", "metric", "diff", "ci_lo", "ci_hi", "n_cells", "ci_method"]
    if cells.empty or "srcc" not in cells:
        return pd.DataFrame(columns=cols)
    cells = cells[cells["compared"].astype(bool)]
    pair_keys = ["backbone", "kind", "train_set", "test_set", "seed", *axis_columns(cells)]
    z = sps.norm.ppf(1 - (1 - level) / 2)
    rows = []
    for a, b in TRANSFER_COMPARISONS:
        for metric in metrics:
            keep = pair_keys + [metric, f"{metric}_lo", f"{metric}_hi"]
            joined = cells.loc[cells["init"] == a, keep].merge(cells.loc[cells["init"] == b, keep], on=pair_keys,
                                                              suffixes=("_a", "_b")).dropna(subset=[f"{metric}_a", f"{metric}_b"])
            for bb, g in [*joined.groupby("backbone"), ("all", joined)]:
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
