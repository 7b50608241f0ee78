"""The paper's tables, from a `SweepData` (raygrid.analysis.load): every value is at the stage's
common step and comes from the per-item tables (the run's logged metrics only for runs without
one); tables report `test/` sets only; trials that did not reach the common step are counted per
cell by outcome ("1 collapsed at step 40", raygrid.analysis.outcomes) and never averaged in.

    assessment_table   fidelity measure x benchmark: SRCC/PLCC, bootstrap over reference images
    iqa_items          the assess per-item rows the asymmetry resamples
    optimization_table loss x adversarial setting: the evaluator panel on the test sets
    optimization_items the optimize per-item rows, joined with the evaluator records
    discriminator_table designs per fidelity loss, ranked without the evaluators they share a trunk with
    transfer_cells / transfer_table   IQA models by initialisation, bootstrap over reference images

Each table groups by the config keys it is about (`*_KEYS`); any other axis of the stage's grid
becomes a column `axis:<key>` of its own, so no cell mixes grid points.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from raygrid import spec as catalog
from raygrid.analysis.load import SweepData
from raygrid.analysis.outcomes import counts
from raygrid.metrics.correlation import MIN_CLUSTERS, correlations

ASSESS_KEYS = {"backbone": "fidelity.backbone", "benchmark": "benchmark", "fit_on": "fit_on",
               "alpha_beta": "fidelity.alpha_beta"}
OPT_KEYS = {"backbone": "fidelity.backbone", "discriminator": "adversarial.discriminator",
            "adv_weight": "loss.adversarial_weight", "alpha_beta": "fidelity.alpha_beta"}
TRANSFER_KEYS = {"backbone": "model.backbone", "init": "model.init", "kind": "model.kind", "train_set": "data.train",
                 "test_sets": "data.test"}
TEST = "test"  # the role whose sets the tables report (val sets select; docs/protocol.md)
INITS = ("imagenet", "discriminator", "random")


# =============================================================================================
# Shared bookkeeping
# =============================================================================================


def _param(df: pd.DataFrame, key: str) -> pd.Series:
    col = f"params.{key}"
    return df[col] if col in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def _none(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v in ("None", "null", "") else v


def to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def json_list(v: Any) -> list[str]:
    if isinstance(v, list):
        return v
    try:
        out = json.loads(v)
        return out if isinstance(out, list) else [str(out)]
    except (TypeError, ValueError):
        return []


def runs(data: SweepData, stage: str, keys: dict[str, str]) -> pd.DataFrame:
    """The stage's trials with a column per `keys` entry (from the params) and `axis:<key>` for
    every other grid axis of the stage."""
    df = data.stage(stage).copy()
    for col, key in keys.items():
        df[col] = [_none(v) for v in _param(df, key)]
    for axis in extra_axes(data, stage, keys):
        df[f"axis:{axis}"] = [str((p or {}).get(axis)) for p in df["point"]] if len(df) else []
    return df


def extra_axes(data: SweepData, stage: str, keys: dict[str, str]) -> list[str]:
    return [a for a in data.axes(stage) if a not in set(keys.values())]


def axis_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("axis:")]


def _grouped(df: pd.DataFrame, keys: list[str]):
    return df.groupby(keys, dropna=False, sort=False)  # a cell with a missing key is still a cell


def backbone_order_key(b: Any) -> int:
    """The records' order (as the paper lists the backbones); unknown names last."""
    return list(catalog.BACKBONES).index(b) if b in catalog.BACKBONES else len(catalog.BACKBONES)


def assess_variant(fit_on: Any, alpha_beta: Any) -> str:
    """The α/β a measure (an assess run) or a loss (an optimize run) is built with."""
    return f"fitted on {fit_on}" if _none(fit_on) else (_none(alpha_beta) or "uniform")


# =============================================================================================
# 1. Assessment
# =============================================================================================


def assess_runs(data: SweepData) -> pd.DataFrame:
    df = runs(data, "assess", ASSESS_KEYS)
    df["variant"] = [assess_variant(f, a) for f, a in zip(df["fit_on"], df["alpha_beta"])]
    return df


def iqa_items(data: SweepData) -> pd.DataFrame:
    """Per-item rows of the compared assess runs: backbone, variant, benchmark, item, ref_id,
    pred, lower_better, score, seed, run_id (+ axis columns). A run fitted on its own benchmark is
    scored on the test split only (its other pairs were fitted on)."""
    items = data.scores.get("assess", pd.DataFrame())
    if items.empty:
        return pd.DataFrame(columns=["backbone", "variant", "benchmark", "item", "ref_id", "pred", "lower_better",
                                     "score", "seed", "run_id"])
    run = assess_runs(data)
    run = run.loc[run["compared"], ["run_id", "backbone", "variant", "seed", "fit_on", *axis_columns(run)]]
    df = items.merge(run, on="run_id", how="inner")
    if "split" in df:
        df = df[(df["fit_on"] != df["benchmark"]) | (df["split"] == TEST)]
    return df.drop(columns=["fit_on"]).reset_index(drop=True)


def assessment_table(data: SweepData, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """One row per (α/β variant, backbone, benchmark [, axes]): SRCC and PLCC of quality
    (the oriented prediction) against the human score, with a bootstrap interval that resamples
    the benchmark's reference images (metrics.correlation, clusters = ref_id); KRCC without one.
    Several seeds: the mean of the runs' values. Runs without a per-item table: their logged metrics."""
    run = assess_runs(data)
    cols = ["variant", "backbone", "benchmark"]
    if run.empty:
        return pd.DataFrame(columns=cols + ["srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi", "n_pairs",
                                            "n_refs", "resampled", "n_compared", "n_planned", "status"])
    items = iqa_items(data)
    per_run = {}
    for run_id, g in items.groupby("run_id"):
        flip = bool(g["lower_better"].iloc[0])
        refs = g["ref_id"].astype(str).to_numpy()
        n_refs = len(set(refs.tolist()))
        enough = n_refs >= MIN_CLUSTERS  # fewer references: no interval (the assess stage's rule)
        c = correlations(g["pred"].to_numpy(float), g["score"].to_numpy(float), n_boot=n_boot if enough else 0,
                         seed=seed, ci=level, lower_better=flip, clusters=refs if enough else None,
                         measures=("srcc", "plcc"))
        if not enough:
            c.update(n_clusters=float(n_refs), resampled=f"no interval: {n_refs} reference images (fewer than {MIN_CLUSTERS})")
        c["krcc"] = stats.kendalltau(-g["pred"] if flip else g["pred"], g["score"]).statistic
        per_run[run_id] = {**c, "n_pairs": c["n"], "n_refs": c["n_clusters"]}
    keys = cols + axis_columns(run)
    rows = []
    for key, g in _grouped(run, keys):
        row = dict(zip(keys, key))
        ok = g[g["compared"]]
        vals = [per_run.get(r) or _logged_correlations(ok[ok["run_id"] == r].iloc[0]) for r in ok["run_id"]]
        for m in ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi", "krcc", "n_pairs", "n_refs"):
            v = [to_float(x.get(m)) for x in vals]
            row[m] = float(np.mean(v)) if v else np.nan
        row["resampled"] = "; ".join(sorted({str(x.get("resampled")) for x in vals})) if vals else ""
        row.update(counts(g))
        rows.append(row)
    return _sorted(pd.DataFrame(rows), ["variant", "backbone"])


def _logged_correlations(r: pd.Series) -> dict[str, Any]:
    out = {m: r.get(f"metrics.{m}") for m in ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi", "krcc")}
    return {**out, "n_pairs": r.get("metrics.n", r.get("metrics.pairs")), "n_refs": np.nan,
            "resampled": "the run's own interval (no per-item table)"}


def _sorted(df: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.assign(_order=df["backbone"].map(backbone_order_key))
    lead = [c for c in first if c != "backbone"]
    return df.sort_values(lead + ["_order", "backbone"], kind="stable").drop(columns="_order").reset_index(drop=True)


# =============================================================================================
# 2. Optimization
# =============================================================================================


def opt_runs(data: SweepData) -> pd.DataFrame:
    df = runs(data, "optimize", OPT_KEYS)
    df["adv_weight"] = df["adv_weight"].map(to_float)
    df["alpha_beta"] = [a or "uniform" for a in df["alpha_beta"]]
    return df


def optimization_items(data: SweepData) -> pd.DataFrame:
    """Per test image x evaluator rows of the compared optimize runs, joined with each run's
    evaluator record: evaluator (its metric key), family, mode, backbone (of the evaluator),
    higher_better, shares_loss, shares_discriminator, excluded (either), independent (no
    DISTS-style measure: no-reference, or no learned backbone), plus the run's columns."""
    items = data.scores.get("optimize", pd.DataFrame())
    cols = ["run_id", "backbone", "discriminator", "adv_weight", "alpha_beta", "seed", "evaluator", "test_set", "image",
            "value", "higher_better", "excluded", "independent"]
    if items.empty:
        return pd.DataFrame(columns=cols)
    items = items[items["role"] == TEST].rename(columns={"set": "test_set"})
    rec = data.evaluators.rename(columns={"backbone": "evaluator_backbone"})
    by_name = items.merge(rec, left_on=["run_id", "evaluator"], right_on=["run_id", "name"], how="left")
    miss = by_name["metric"].isna()
    if miss.any():  # the table may name an evaluator by its metric key
        by_metric = items[miss.to_numpy()].merge(rec, left_on=["run_id", "evaluator"], right_on=["run_id", "metric"],
                                                 how="left")
        by_name = pd.concat([by_name[~miss], by_metric], ignore_index=True)
    df = by_name.assign(evaluator=by_name["metric"].fillna(by_name["evaluator"]))
    shares = df["shares"].map(lambda s: tuple(s) if isinstance(s, (list, tuple)) else ())
    df["shares_loss"] = shares.map(lambda s: "loss" in s)
    df["shares_discriminator"] = shares.map(lambda s: "discriminator" in s)
    df["excluded"] = df["shares_loss"] | df["shares_discriminator"]
    df["independent"] = (df["mode"] == "NR") | df["evaluator_backbone"].isna()
    run = opt_runs(data)
    run = run.loc[run["compared"], ["run_id", "backbone", "discriminator", "adv_weight", "alpha_beta", "seed",
                                    *axis_columns(run)]]
    return df.drop(columns=["name", "metric", "shares"]).merge(run, on="run_id", how="inner")


def evaluator_table(items: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluator of the records: direction, mode, family, backbone."""
    if items.empty:
        return pd.DataFrame(columns=["evaluator", "higher_better", "mode", "family", "evaluator_backbone", "independent"])
    cols = ["evaluator", "higher_better", "mode", "family", "evaluator_backbone", "independent"]
    return items.dropna(subset=["higher_better"]).drop_duplicates("evaluator")[cols].reset_index(drop=True)


def run_values(data: SweepData, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per compared optimize run: `test/<set>/<evaluator>` (mean over the set's images)
    and `test/<evaluator>` (mean over every test image), as the loop logs them; runs without a
    per-item table: their logged test/ metrics."""
    items = optimization_items(data) if items is None else items
    run = opt_runs(data)
    ok = run[run["compared"]]
    rows = []
    for _, r in ok.iterrows():
        g = items[items["run_id"] == r["run_id"]]
        if len(g):
            vals = {f"test/{t}/{e}": v for (t, e), v in g.groupby(["test_set", "evaluator"])["value"].mean().items()}
            vals.update({f"test/{e}": v for e, v in g.groupby("evaluator")["value"].mean().items()})
        else:
            vals = {c[len("metrics."):]: r[c] for c in r.index if c.startswith("metrics.test/") and pd.notna(r[c])}
        rows.append({"run_id": r["run_id"], **vals})
    return pd.DataFrame(rows, columns=["run_id"]) if not rows else pd.DataFrame(rows)


def optimization_table(data: SweepData, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (fidelity backbone, discriminator, adversarial weight, α/β [, axes]): every
    `test/` value at the common step, the mean over the cell's compared seeds, with counts."""
    run = opt_runs(data)
    keys = list(OPT_KEYS)
    if run.empty:
        return pd.DataFrame(columns=keys + ["n_compared", "n_planned", "status", "step"])
    items = optimization_items(data) if items is None else items
    values = run_values(data, items)
    run = run.merge(values, on="run_id", how="left") if len(values) else run
    order = {e: i for i, e in enumerate(dict.fromkeys(items["evaluator"]))}  # the records' order
    by_record = lambda c: (order.get(c.rsplit("/", 1)[1], len(order)), c)
    pooled = sorted((c for c in run.columns if c.startswith("test/") and c.count("/") == 1), key=by_record)
    per_set = sorted((c for c in run.columns if c.startswith("test/") and c.count("/") >= 2), key=by_record)
    keys += axis_columns(run)
    rows = []
    for key, g in _grouped(run, keys):
        row = dict(zip(keys, key))
        row.update(counts(g))
        ok = g[g["compared"]]
        row["step"] = float(ok["value_step"].mean()) if len(ok) else np.nan
        for c in pooled + per_set:
            row[c] = float(pd.to_numeric(ok[c], errors="coerce").mean()) if len(ok) else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_none"] = out["discriminator"] != catalog.NO_DISCRIMINATOR
    out["_order"] = out["backbone"].map(backbone_order_key)
    out = out.sort_values(["_order", "backbone", "_none", "discriminator", "adv_weight"], kind="stable")
    return out.drop(columns=["_none", "_order"]).reset_index(drop=True)


def pooled_evaluators(table: pd.DataFrame) -> list[str]:
    return [c.split("/", 1)[1] for c in table.columns if c.startswith("test/") and c.count("/") == 1]


def _rank_best_first(x: np.ndarray, higher_better: bool) -> np.ndarray:
    s = np.round(np.asarray(x, dtype=float), 12)  # equal means computed in another order tie exactly
    return stats.rankdata(-s if higher_better else s)


def discriminator_table(items: pd.DataFrame) -> pd.DataFrame:
    """Discriminator designs ranked per fidelity loss (and per extra axis), with the gain over no
    adversarial loss.

    Per (evaluator, test set) the designs are ranked by their mean over weights, seeds and images
    (1 = best in the evaluator's direction; "none" included); an evaluator's ranks are averaged
    over its test sets, `mean_rank` over the evaluators. Left out of a loss's ranking (column
    `left_out`): every evaluator that shares a trunk with the loss or with any compared design's
    discriminator (the evaluator record's `shares`) — it would judge features a generator was
    trained on. `gain <evaluator>` = design − none over every test image, signed so > 0 is better."""
    if items.empty or items["higher_better"].isna().all():
        return pd.DataFrame()
    df = items.dropna(subset=["higher_better"])
    group_keys = ["backbone", *axis_columns(df)]
    rows = []
    for gkey, g in _grouped(df, group_keys):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        left_out = sorted(set(g.loc[g["excluded"], "evaluator"]))
        use = g[~g["evaluator"].isin(left_out)]
        design = use.groupby(["discriminator", "evaluator", "test_set"])["value"].mean().unstack("discriminator")
        direction = g.drop_duplicates("evaluator").set_index("evaluator")["higher_better"].astype(bool)
        ranks = pd.DataFrame(np.nan, index=design.index, columns=design.columns)
        for idx, row in design.iterrows():
            ok = row.notna()
            ranks.loc[idx, ok] = _rank_best_first(row[ok].to_numpy(float), direction[idx[0]])
        per_ev = ranks.groupby(level="evaluator").mean()
        mean_rank = per_ev.mean(axis=0) if len(per_ev) else pd.Series(np.nan, index=design.columns)
        designs = sorted(set(g["discriminator"]), key=lambda d: (d != catalog.NO_DISCRIMINATOR, str(d)))
        mean_rank = mean_rank.reindex(designs)
        order = _rank_best_first(mean_rank.fillna(np.inf).to_numpy(float), False)
        pooled = g.groupby(["discriminator", "evaluator"])["value"].mean().unstack("evaluator")
        n_w = g.groupby("discriminator")["adv_weight"].nunique()
        n_runs = g.groupby("discriminator")["run_id"].nunique()
        for d, mr, rk in zip(designs, mean_rank, order):
            head, trunk = ("—", "—") if d == catalog.NO_DISCRIMINATOR else catalog.split_discriminator(d)
            row = {**dict(zip(group_keys, gkey)), "discriminator": d, "head": head, "trunk": trunk,
                   "n_weights": int(n_w.get(d, 0)), "n_runs": int(n_runs.get(d, 0)),
                   "n_evaluators": int(per_ev[d].notna().sum()) if d in per_ev else 0, "mean_rank": float(mr),
                   "rank": float(rk) if np.isfinite(mr) else np.nan, "left_out": ", ".join(left_out)}
            for e in pooled.columns:
                v = pooled.loc[d, e]
                row[f"test/{e}"] = float(v)
                none = pooled.loc[catalog.NO_DISCRIMINATOR, e] if catalog.NO_DISCRIMINATOR in pooled.index else np.nan
                row[f"gain {e}"] = (1.0 if direction[e] else -1.0) * (float(v) - float(none)) + 0.0  # no -0.0
            rows.append(row)
    out = pd.DataFrame(rows)
    out["_order"] = out["backbone"].map(backbone_order_key)
    out = out.sort_values(["_order", "backbone", *group_keys[1:], "rank"], kind="stable", na_position="last")
    return out.drop(columns="_order").reset_index(drop=True)


# =============================================================================================
# 3. Transfer
# =============================================================================================


def transfer_cells(data: SweepData, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """One row per (transfer trial, test benchmark): SRCC/PLCC of the model's test predictions at
    the common step, with a bootstrap over reference images (FR benchmarks; NR: over images)."""
    run = runs(data, "transfer", TRANSFER_KEYS)
    base = ["backbone", "kind", "train_set", "test_set", "init"]
    if run.empty:
        return pd.DataFrame(columns=base + ["seed", "compared", "srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi"])
    items = data.scores.get("transfer", pd.DataFrame())
    items = items[items["role"] == TEST] if len(items) else items
    by_run = {r: g for r, g in items.groupby("run_id")} if len(items) else {}
    sources = {r["run_id"]: r for _, r in opt_runs(data).iterrows() if r["run_id"]}
    axes = axis_columns(run)
    rows = []
    for _, t in run.iterrows():
        g = by_run.get(t["run_id"])
        benches = list(dict.fromkeys(json_list(t.get("test_sets")) + (list(g["benchmark"].unique()) if g is not None else [])))
        for bench in benches or [None]:
            row = {k: t.get(k) for k in ["backbone", "kind", "train_set", "init", "seed", "compared", "outcome", "why",
                                         "run_id", *axes]}
            row["test_set"] = bench
            row["source"] = _source(t, sources)
            if t["compared"] and g is not None and bench in set(g["benchmark"]):
                b = g[g["benchmark"] == bench]
                refs = b["ref_id"] if "ref_id" in b and b["ref_id"].notna().all() else None
                c = correlations(b["pred"].to_numpy(float), b["score"].to_numpy(float), n_boot=n_boot, seed=seed,
                                 ci=level, clusters=None if refs is None else refs.astype(str).to_numpy(),
                                 measures=("srcc", "plcc"))
                row.update({k: c[k] for k in ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi")},
                           resampled=c["resampled"], n_items=c["n"])
            elif t["compared"] and bench:
                for m in ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi"):
                    row[m] = to_float(t.get(f"metrics.test/{bench}/{m}"))
                row["resampled"] = "the run's own interval (no per-item table)"
            rows.append(row)
    return pd.DataFrame(rows)


def _source(t: pd.Series, sources: dict[str, pd.Series]) -> str:
    run = t.get("tags.raygrid.init_from_run")
    if not isinstance(run, str) or not run:
        return ""
    src = sources.get(run)
    if src is None:
        return f"run {run}"
    return f"{src['backbone']} loss + {src['discriminator']} @ {src['adv_weight']:g} (run {run[:8]})"


def transfer_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (backbone, kind, train set, test benchmark, init [, axes]): SRCC/PLCC mean over
    the compared seeds, their standard deviation, the mean bootstrap bounds, and counts."""
    keys = ["backbone", "kind", "train_set", "test_set", "init"] + axis_columns(cells)
    if cells.empty:
        return pd.DataFrame(columns=keys + ["srcc", "plcc", "n_compared", "status"])
    rows = []
    for key, g in _grouped(cells, keys):
        row = dict(zip(keys, key))
        ok = g[g["compared"].astype(bool)]
        for m in ("srcc", "srcc_lo", "srcc_hi", "plcc", "plcc_lo", "plcc_hi"):
            row[m] = float(ok[m].mean()) if m in ok and len(ok) else np.nan
        for m in ("srcc", "plcc"):
            vals = ok[m].dropna() if m in ok else pd.Series(dtype=float)
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else np.nan
        row.update(counts(g))
        row["source"] = "; ".join(sorted({s for s in g["source"] if s}))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_init"] = out["init"].map({n: i for i, n in enumerate(INITS)}).fillna(len(INITS))
    return out.sort_values(keys[:-1] + ["_init"], kind="stable").drop(columns="_init").reset_index(drop=True)
