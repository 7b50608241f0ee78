"""The asymmetry interval: does the IQA ranking of the fidelity backbones predict their ranking as
losses? A paired, hierarchical bootstrap from per-image scores (docs/statistics.md).

Input 1: IQA table, one row per (backbone, benchmark, distorted image), from the assess runs'
per-image tables (one run per backbone x benchmark, the α/β variant chosen by the caller):

    backbone      str    fidelity backbone of the measure (the loss it is compared with)
    benchmark     str    FR benchmark name
    item          str    distorted image id, as in the benchmark table (same id for every backbone)
    ref_id        str    its reference image id (the benchmark table's `ref_id`)
    pred          float  the measure's output for the pair (a distance for DISTS-style measures)
    lower_better  bool   direction of `pred` (FidelityMeasure.lower_better; constant per backbone)
    score         float  human score, higher = better (the benchmark table's `score`)

Input 2: optimization table, long: one row per (backbone, setting cell, seed, evaluator, test set,
test image), from the optimize runs' per-image tables at the reported step joined with the run's
axes and the panel's evaluator record:

    backbone       str    fidelity-loss backbone of the run
    <cell columns> any    the run's setting cell, `cell_columns` (default discriminator, adv_weight)
    seed           int    the run's seed
    evaluator      str    evaluator name
    test_set       str    test set name (never a validation set)
    image          str    test image id within the set (same ids for every run)
    value          float  the evaluator's score of the run's output for that image
    higher_better  bool   the evaluator's direction (constant per evaluator)
    excluded       bool   optional: the evaluator shares a trunk with this run's loss or
                          discriminator; an evaluator flagged in any row of a backbone is left out
                          of that backbone's score (it still ranks the other backbones)

The caller passes the rows of one comparison (one α/β variant; one optimization setting, e.g. the
cells without an adversarial loss); the cells of a backbone are averaged.

Statistic. IQA score of a backbone = mean over benchmarks of SRCC(oriented pred, score); rank 1 =
highest. Optimization: per (evaluator, test set) the backbones are ranked by their mean value over
cells, seeds and images (1 = best in the evaluator's direction); a backbone's score is its mean
rank over its evaluators (each evaluator's rank averaged over its test sets first); rank 1 =
lowest. Reported: Spearman's rho and Kendall's tau-b between the two rankings.

Resampled (scipy.stats.bootstrap, independent draws per factor: the pigeonhole bootstrap of a
crossed design): test images within each test set, seeds, evaluators (each with all its test sets,
never evaluator x set cells as if independent), and references within each benchmark; every draw
is shared by all backbones (paired). Benchmarks, test sets, cells and backbones are fixed. Both
rankings are recomputed per resample; percentile interval; p-values of the point estimate from
scipy.stats.permutation_test(permutation_type='pairings'), exact up to 8 backbones.

Missing data (raygrid.analysis.evidence), resolved in this order and each step named in `notes`:
backbones without rows on either side are left out (`missing`, with the reason); benchmarks or
cells that some backbone lacks, seeds that some (backbone, cell) lacks, evaluator x set
combinations that some run lacks, and images (pairs) that some run lacks are left out for every
backbone, so all are compared on the same evidence. Non-finite values count as missing.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from raygrid.analysis.evidence import (
    Benchmark,
    Evidence,
    check_columns,
    constant_per,
    duplicates,
    prepare_iqa,
    prepare_opt,
)
from raygrid.metrics.correlation import ClusterRanks, cluster_weights, weighted_pearson

IQA_COLUMNS = ("backbone", "benchmark", "item", "ref_id", "pred", "lower_better", "score")
OPT_COLUMNS = ("backbone", "seed", "evaluator", "test_set", "image", "value", "higher_better")
DEFAULT_CELL_COLUMNS = ("discriminator", "adv_weight")
IQA_METRICS = ("srcc", "plcc")
CI_METHODS = ("percentile", "basic", "BCa")  # percentile is the default: docs/statistics.md
EXACT_PERMUTATIONS_MAX = 8  # k! pairings enumerated up to 8 backbones (40 320)
_MAX_BATCH_CELLS = 4_000_000  # resamples x (largest array per resample) held at once


@dataclass
class AsymmetryInterval:
    spearman: float
    spearman_lo: float
    spearman_hi: float
    spearman_p: float
    kendall: float
    kendall_lo: float
    kendall_hi: float
    kendall_p: float
    level: float
    n_boot: int
    n_boot_valid: int  # resamples in which both rankings are defined
    resampled: str  # what the bootstrap resampled, for the report
    # per backbone: iqa_score, iqa_rank, opt_score, opt_rank, rank_shift, n_evaluators, and the
    # percentile intervals of its ranks (iqa_rank_lo/hi, opt_rank_lo/hi): a rank correlation's
    # interval is only as good as the rankings are stable (docs/statistics.md)
    ranks: pd.DataFrame
    missing: dict[str, str] = field(default_factory=dict)  # backbone -> why it is not compared
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def as_row(self) -> dict:
        """Flat summary (one report table row)."""
        keys = ("spearman", "spearman_lo", "spearman_hi", "spearman_p", "kendall", "kendall_lo", "kendall_hi",
                "kendall_p", "level", "n_boot", "n_boot_valid", "resampled")
        row = {k: getattr(self, k) for k in keys}
        row.update(self.counts, backbones=", ".join(self.ranks["backbone"]) if len(self.ranks) else "",
                   missing="; ".join(f"{b} ({w})" for b, w in self.missing.items()), notes=" ".join(self.notes))
        return row


# ---------------------------------------------------------------------------------------------
# The statistic: both rankings and their correlation, for a batch of resamples
# ---------------------------------------------------------------------------------------------


def _rank_best_first(scores: np.ndarray, higher_better: bool) -> np.ndarray:
    """Average ranks along the last axis, 1 = best; rounded first so that equal means computed in
    a different order tie exactly."""
    s = np.round(scores, 12)
    return stats.rankdata(-s if higher_better else s, axis=-1)


def _row_spearman(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    ra, rb = stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis)
    ra, rb = np.moveaxis(ra, axis, -1), np.moveaxis(rb, axis, -1)
    return weighted_pearson(ra, rb, np.ones_like(ra))


def _row_kendall(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b along `axis`: sum(sa*sb) / sqrt(sum sa^2 * sum sb^2) over pairs i < j."""
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    i, j = np.triu_indices(a.shape[-1], k=1)
    sa, sb = np.sign(a[..., i] - a[..., j]), np.sign(b[..., i] - b[..., j])
    den = np.sqrt((sa * sa).sum(-1) * (sb * sb).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sa * sb).sum(-1) / den, np.nan)


@dataclass(frozen=True)
class _Factor:
    kind: str  # evaluator | seed | image | reference (for `resampled`)
    size: int
    slot: int | None = None  # which test set / benchmark


class _Statistic:
    """statistic(*drawn indices, axis=-1) for scipy.stats.bootstrap, one index array per resampled
    factor (factors with one member are not resampled: scipy needs two; their weights are 1)."""

    def __init__(self, benches: list[Benchmark], opt: Evidence, iqa_metric: str):
        self.benches, self.opt, self.metric = benches, opt, iqa_metric
        self.k = opt.keep.shape[1]
        self.rank_y = [ClusterRanks(b.y, b.ref, b.n_refs) for b in benches]
        self.rank_x = [[ClusterRanks(x, b.ref, b.n_refs) for x in b.x] for b in benches]
        self.factors = [_Factor("evaluator", len(opt.evaluators)), _Factor("seed", len(opt.seeds))]
        self.factors += [_Factor("image", s.v.shape[-1], i) for i, s in enumerate(opt.sets)]
        self.factors += [_Factor("reference", b.n_refs, i) for i, b in enumerate(benches)]
        self.resampled = [f for f in self.factors if f.size >= 2]

    def weights(self, idx: tuple[np.ndarray, ...]) -> tuple[int, dict]:
        """Drawn indices -> how often each member of each factor was drawn (B x size)."""
        b = idx[0].shape[0] if idx else 1
        out = {(f.kind, f.slot): np.ones((b, f.size)) for f in self.factors}
        for f, drawn in zip(self.resampled, idx):
            out[f.kind, f.slot] = cluster_weights(drawn.astype(np.intp), f.size).astype(np.float64)
        return b, out

    def scores(self, *idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(IQA score, optimization score), each B x K, for drawn indices (B x n per factor)."""
        b, w = self.weights(idx)
        iqa = np.zeros((b, self.k))
        for j, bench in enumerate(self.benches):
            refs = w["reference", j]  # B x references: how often each was drawn
            rows = refs[:, bench.ref]
            ry = self.rank_y[j](refs) if self.metric == "srcc" else bench.y
            for k in range(self.k):
                rx = self.rank_x[j][k](refs) if self.metric == "srcc" else bench.x[k]
                iqa[:, k] += weighted_pearson(rx, ry, rows)
        iqa /= len(self.benches)

        ws = w["seed", None]
        rank_sum = np.zeros((b, len(self.opt.evaluators), self.k))
        n_sets = np.zeros(len(self.opt.evaluators))
        for t, s in enumerate(self.opt.sets):
            wi = w["image", t]
            m = np.einsum("eksi,bi->beks", s.v, wi) / wi.sum(-1)[:, None, None, None]
            m = np.einsum("beks,bs->bek", m, ws) / ws.sum(-1)[:, None, None]
            rank_sum[:, s.evaluators] += _rank_best_first(m, True)
            n_sets[s.evaluators] += 1
        mean_rank = rank_sum / n_sets[None, :, None]
        we = w["evaluator", None][:, :, None] * self.opt.keep[None]  # B x E x K
        with np.errstate(invalid="ignore", divide="ignore"):
            opt = (we * mean_rank).sum(1) / we.sum(1)
        return iqa, opt

    def __call__(self, *idx: np.ndarray, axis: int = -1) -> np.ndarray:
        """(2 + 2K) x B: Spearman, Kendall, then each backbone's IQA rank and optimization rank."""
        idx = tuple(np.moveaxis(np.asarray(i), axis, -1) for i in idx)
        lead = idx[0].shape[:-1] if idx else ()
        iqa, opt = self.scores(*(i.reshape(-1, i.shape[-1]) for i in idx))
        valid = np.isfinite(iqa).all(-1) & np.isfinite(opt).all(-1)
        r_iqa = np.where(valid[:, None], _rank_best_first(iqa, True), np.nan)
        r_opt = np.where(valid[:, None], _rank_best_first(np.nan_to_num(opt, nan=0.0), False), np.nan)
        out = np.concatenate([_row_spearman(r_iqa, r_opt)[None], _row_kendall(r_iqa, r_opt)[None], r_iqa.T, r_opt.T])
        return out.reshape(len(out), *lead)

    def describe(self, n_boot: int, level: float, method: str) -> str:
        by = {kind: [f for f in self.factors if f.kind == kind] for kind in ("evaluator", "seed", "image", "reference")}

        def part(kind: str, text: str) -> str:
            fs = by[kind]
            if not any(f.size >= 2 for f in fs):
                return f"{kind}s not resampled (only {sum(f.size for f in fs)})"
            return text.format(n=sum(f.size for f in fs), sets=len(fs))

        parts = [
            part("image", "test images within each test set ({n} in {sets} sets)"),
            part("seed", "seeds ({n})"),
            part("evaluator", "evaluators ({n}, each with all its test sets)"),
            part("reference", "IQA reference images within each benchmark ({n} in {sets} benchmarks)"),
        ]
        return (f"{'; '.join(parts)}; one draw shared by every backbone (paired); fixed: backbones, benchmarks, "
                f"test sets, setting cells; {n_boot} resamples, {method} {level:.0%} interval")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _permutation_p(x: np.ndarray, y: np.ndarray, fn, seed: int) -> float:
    """Two-sided p of fn(x, y) over the orderings of y. One sample with x held fixed: permuting
    both samples (what two samples would do) repeats each pairing k! times."""
    exact = math.factorial(len(x)) <= math.factorial(EXACT_PERMUTATIONS_MAX)
    res = stats.permutation_test((y,), lambda b, axis=-1: fn(np.broadcast_to(x, b.shape), b, axis),
                                 permutation_type="pairings", vectorized=True, alternative="two-sided",
                                 n_resamples=np.inf if exact else 9999, rng=np.random.default_rng(seed))
    return float(res.pvalue)


def asymmetry_interval(
    iqa: pd.DataFrame,
    opt: pd.DataFrame,
    *,
    cell_columns: tuple[str, ...] | list[str] = DEFAULT_CELL_COLUMNS,
    iqa_metric: str = "srcc",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    method: str = "percentile",
) -> AsymmetryInterval:
    """Spearman and Kendall between the IQA and the optimization ranking of the backbones, with a
    paired hierarchical bootstrap interval and permutation p-values (see the module docstring for
    the two tables and what is resampled). cell_columns: the optimization table's setting columns;
    iqa_metric: "srcc" or "plcc" per benchmark; method: scipy.stats.bootstrap's interval (the
    percentile default is the one whose coverage docs/statistics.md reports)."""
    if iqa_metric not in IQA_METRICS:
        raise ValueError(f"iqa_metric {iqa_metric!r}: expected one of {IQA_METRICS}")
    if method not in CI_METHODS:
        raise ValueError(f"method {method!r}: expected one of {CI_METHODS} (scipy.stats.bootstrap's)")
    cell_columns = list(cell_columns)
    check_columns(iqa, IQA_COLUMNS, "IQA")
    check_columns(opt, (*OPT_COLUMNS, *cell_columns), "optimization")
    constant_per(iqa, "backbone", "lower_better", "IQA")
    duplicates(iqa, ["backbone", "benchmark", "item"], "IQA")
    duplicates(opt, ["backbone", *cell_columns, "seed", "evaluator", "test_set", "image"], "optimization")

    notes: list[str] = []
    have_iqa = set(iqa.loc[np.isfinite(iqa["pred"].astype(float)), "backbone"].unique())
    have_opt = set(opt.loc[np.isfinite(opt["value"].astype(float)), "backbone"].unique())
    missing = {b: ("no IQA result" if b not in have_iqa else "no optimization result")
               for b in sorted(have_iqa ^ have_opt)}
    backbones = sorted(have_iqa & have_opt)
    benches = prepare_iqa(iqa, backbones, notes) if backbones else []
    prepared = prepare_opt(opt, cell_columns, backbones, notes) if backbones else None
    if prepared is not None:
        alone = [b for k, b in enumerate(backbones) if not prepared.keep[:, k].any()]
        for b in alone:
            missing[b] = "every evaluator shares its trunk"
        if alone:
            ks = [k for k, b in enumerate(backbones) if b not in alone]
            backbones = [backbones[k] for k in ks]
            benches = [Benchmark(x.name, x.x[ks], x.y, x.ref, x.n_refs) for x in benches]
            prepared.keep = prepared.keep[:, ks]
            for s in prepared.sets:
                s.v = s.v[:, ks]
    nan = float("nan")
    empty = AsymmetryInterval(nan, nan, nan, nan, nan, nan, nan, nan, level, n_boot, 0, "nothing resampled",
                              pd.DataFrame(), missing, notes)
    if prepared is None or not benches or len(backbones) < 3:
        notes.append(f"asymmetry not computed: {len(backbones)} backbone(s) with both results, "
                     f"{len(benches)} benchmark(s); a rank correlation needs 3 backbones and a benchmark.")
        return empty

    stat = _Statistic(benches, prepared, iqa_metric)
    full = tuple(np.arange(f.size)[None] for f in stat.resampled)
    iqa_score, opt_score = (a[0] for a in stat.scores(*full))
    r_iqa, r_opt = _rank_best_first(iqa_score, True), _rank_best_first(opt_score, False)
    rho, tau = stat(*full)[:2, 0]
    n_ev = prepared.keep.sum(0)
    ranks = pd.DataFrame({"backbone": backbones, "iqa_score": iqa_score, "iqa_rank": r_iqa, "opt_score": opt_score,
                          "opt_rank": r_opt, "rank_shift": r_opt - r_iqa, "n_evaluators": n_ev})
    counts = {"n_backbones": len(backbones), "n_benchmarks": len(benches),
              "n_references": sum(b.n_refs for b in benches), "n_pairs": sum(b.y.size for b in benches),
              "n_evaluators": len(prepared.evaluators), "n_test_sets": len(prepared.sets),
              "n_images": sum(s.v.shape[-1] for s in prepared.sets), "n_seeds": len(prepared.seeds),
              "n_cells": prepared.n_cells}
    p_rho = _permutation_p(r_iqa, r_opt, _row_spearman, seed) if np.isfinite(rho) else nan
    p_tau = _permutation_p(r_iqa, r_opt, _row_kendall, seed) if np.isfinite(tau) else nan

    k = len(backbones)
    lo = hi = np.full(2 + 2 * k, nan)
    n_valid = 0
    if n_boot > 0 and stat.resampled:
        biggest = max([b.y.size * len(backbones) for b in benches]
                      + [s.v.size for s in prepared.sets])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning for NaN resamples: handled below
            res = stats.bootstrap(tuple(np.arange(f.size) for f in stat.resampled), stat, n_resamples=n_boot,
                                  vectorized=True, paired=False, axis=-1, confidence_level=level,
                                  method=method, rng=np.random.default_rng(seed),
                                  batch=max(1, _MAX_BATCH_CELLS // biggest))
        dist = res.bootstrap_distribution
        ok = np.isfinite(dist[:2]).all(0)
        n_valid = int(ok.sum())
        if n_valid == n_boot:
            lo, hi = res.confidence_interval.low, res.confidence_interval.high
        elif n_valid >= n_boot / 2:  # resamples with an undefined ranking are left out, and counted
            lo, hi = np.quantile(dist[:, ok], [(1 - level) / 2, (1 + level) / 2], axis=1)
            notes.append(f"{n_boot - n_valid} of {n_boot} resamples left out (a ranking was undefined).")
        else:
            notes.append(f"no interval: only {n_valid} of {n_boot} resamples define both rankings.")
    for side, off in (("iqa", 2), ("opt", 2 + k)):  # how firmly each backbone holds its rank
        ranks[f"{side}_rank_lo"], ranks[f"{side}_rank_hi"] = lo[off:off + k], hi[off:off + k]
    return AsymmetryInterval(float(rho), float(lo[0]), float(hi[0]), p_rho, float(tau), float(lo[1]), float(hi[1]),
                             p_tau, level, n_boot, n_valid, stat.describe(n_boot, level, method), ranks, missing, notes,
                             counts)
