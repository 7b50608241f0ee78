"""An interval is a claim: simulated coverage of the nominal 95% intervals, new scheme vs old.

1. IQA SRCC on FR benchmarks with a reference effect (25 references x 24 distortions): the interval
   clustered by reference covers the true SRCC; the pair-level one does not.
2. The asymmetry rho on simulated sweeps with a known true ranking (noise from images, seeds,
   evaluators and references): the paired hierarchical bootstrap covers the true rho; the old
   scheme (evaluator x set cells resampled as independent, seeds averaged first, images not
   resampled) does not.
The figures are printed (pytest -s) and recorded as junit properties; docs/statistics.md quotes them.
"""

import numpy as np
import pandas as pd
from scipy import stats

from raygrid.analysis.intervals import (
    _rank_best_first,
    _row_spearman,
    asymmetry_interval,
)
from raygrid.metrics.correlation import correlations

REPLICATES = 200
LEVEL = 0.95

# --- 1. IQA: a benchmark of references x distortions --------------------------------------------

N_REF, TYPES, LEVELS = 25, 6, 4
DIST_LEVEL = np.tile(np.arange(1, LEVELS + 1), TYPES) / LEVELS
DIST_TYPE = np.repeat(np.arange(TYPES), LEVELS)
TYPE_WEIGHT = np.array([1.0, 0.8, 1.2, 0.9, 1.1, 1.0])  # how much humans mind each distortion type


def fr_benchmark(rng, n_ref):
    """MOS depends on the distortion (type-weighted level), the content (a reference offset) and
    noise; the measure sees the level unweighted plus its own reference-dependent bias: a measure
    that misjudges a reference misjudges all its 24 pairs. The distortion set is fixed (the same 24
    for every reference), so the population is: new reference contents, the same distortions."""
    bias = rng.normal(0, 0.2, n_ref)[:, None]
    content = rng.normal(0, 0.1, n_ref)[:, None]
    mos = -DIST_LEVEL * TYPE_WEIGHT[DIST_TYPE] + content + rng.normal(0, 0.08, (n_ref, DIST_LEVEL.size))
    pred = -DIST_LEVEL + bias + rng.normal(0, 0.08, (n_ref, DIST_LEVEL.size))
    return pred.ravel(), mos.ravel(), np.repeat(np.arange(n_ref), DIST_LEVEL.size)


def test_iqa_srcc_interval_coverage(record_property):
    # The true SRCC: the same statistic on 40 000 references (Monte Carlo error ~0.002).
    truth = stats.spearmanr(*fr_benchmark(np.random.default_rng(12345), 40_000)[:2]).statistic
    hits = {"clustered": [], "pairs": []}
    width = {"clustered": [], "pairs": []}
    for r in range(REPLICATES):
        pred, mos, ref = fr_benchmark(np.random.default_rng(r), N_REF)
        for scheme, clusters in (("clustered", ref), ("pairs", None)):
            res = correlations(pred, mos, n_boot=1000, seed=r, ci=LEVEL, clusters=clusters, measures=("srcc",))
            hits[scheme].append(res["srcc_lo"] <= truth <= res["srcc_hi"])
            width[scheme].append(res["srcc_hi"] - res["srcc_lo"])
    cover = {k: float(np.mean(v)) for k, v in hits.items()}
    print(f"\nIQA SRCC coverage ({REPLICATES} replicates, nominal {LEVEL:.0%}, true SRCC {truth:.3f}): "
          f"clustered by reference {cover['clustered']:.3f} (mean width {np.mean(width['clustered']):.3f}), "
          f"pair-level {cover['pairs']:.3f} (mean width {np.mean(width['pairs']):.3f})")
    record_property("iqa_coverage_clustered", cover["clustered"])
    record_property("iqa_coverage_pairs", cover["pairs"])
    assert cover["clustered"] >= 0.90, cover
    assert cover["pairs"] < 0.85, cover


# --- 2. The asymmetry: sweeps with a known true ranking -----------------------------------------

K = 6  # backbones
IQA_NOISE = np.array([0.45, 0.55, 0.65, 0.75, 0.85, 0.95])  # lower = better IQA measure
OPT_TRUE = np.array([0.4, 0.0, 0.8, 1.2, 0.6, 1.0])  # population mean optimization quality
N_BENCH, BENCH_REFS, PER_REF = 3, 20, 12
N_EVAL, N_SETS, N_IMG, N_SEEDS, N_CELLS = 8, 3, 20, 3, 2
SD_SEED, SD_IMAGE, SD_EVAL, SD_EVAL_SET, SD_RESID = 0.5, 1.5, 0.3, 0.1, 0.3
NAMES = [f"bb{k}" for k in range(K)]


def true_rho():
    """The correlation of the population means. IQA: pred = mos + noise_k * u with (mos, u)
    jointly Gaussian, so the population SRCC is (6/pi) asin(r/2), r = 1/sqrt(1 + noise_k^2).
    Optimization: the noise terms (seed, image, evaluator) have mean 0 and are exchangeable across
    backbones, so the population mean rank orders the backbones as OPT_TRUE does."""
    srcc = 6 / np.pi * np.arcsin(1 / np.sqrt(1 + IQA_NOISE**2) / 2)
    return stats.spearmanr(srcc, OPT_TRUE).statistic


def _categorical(codes, names):
    return pd.Categorical.from_codes(codes, categories=names)


def simulate_sweep(rng):
    """(IQA table, optimization table, optimization values array, evaluator directions)."""
    iqa = []
    for j in range(N_BENCH):
        ref = np.repeat(np.arange(BENCH_REFS), PER_REF)
        mos = rng.normal(0, np.sqrt(0.5), BENCH_REFS)[ref] + rng.normal(0, np.sqrt(0.5), ref.size)
        shared = rng.normal(size=BENCH_REFS)  # references hard for every measure
        for k in range(K):
            u = 0.5 * shared + np.sqrt(0.75) * rng.normal(size=BENCH_REFS)
            noise = np.sqrt(0.6) * u[ref] + np.sqrt(0.4) * rng.normal(size=ref.size)
            iqa.append(pd.DataFrame({"backbone": NAMES[k], "benchmark": f"bench{j}", "item": np.arange(ref.size),
                                     "ref_id": ref, "pred": -(mos + IQA_NOISE[k] * noise), "lower_better": True,
                                     "score": mos}))
    gain = rng.uniform(0.5, 1.5, N_EVAL)  # evaluators' scales differ
    higher = np.arange(N_EVAL) % 2 == 0  # half the evaluators are lower-is-better
    quality = (OPT_TRUE[None, None, :, None, None, None]
               + rng.normal(0, SD_SEED, (K, N_CELLS, N_SEEDS))[None, None, ..., None]  # a run's luck
               + rng.normal(0, SD_IMAGE, (N_SETS, K, N_IMG))[None, :, :, None, None, :]  # image x loss
               + rng.normal(0, SD_EVAL, (N_EVAL, K))[:, None, :, None, None, None]  # evaluator taste
               + rng.normal(0, SD_EVAL_SET, (N_EVAL, N_SETS, K))[..., None, None, None]
               + rng.normal(0, SD_RESID, (N_EVAL, N_SETS, K, N_CELLS, N_SEEDS, N_IMG)))
    value = gain[:, None, None, None, None, None] * quality + rng.normal(0, 3, (N_EVAL, N_SETS, 1, 1, 1, N_IMG))
    value = np.where(higher[:, None, None, None, None, None], value, -value)
    e, t, k, c, s, i = np.indices(value.shape).reshape(6, -1)
    opt = pd.DataFrame({"backbone": _categorical(k, NAMES), "discriminator": "none", "adv_weight": c.astype(float),
                        "seed": s, "evaluator": _categorical(e, [f"eval{x}" for x in range(N_EVAL)]),
                        "test_set": _categorical(t, [f"set{x}" for x in range(N_SETS)]), "image": i,
                        "value": value.ravel(), "higher_better": higher[e]})
    return pd.concat(iqa, ignore_index=True), opt, value, higher


def old_scheme_interval(iqa, value, higher, n_boot, seed):
    """The interval the analysis reported before: the benchmark columns of the backbone x benchmark
    SRCC matrix and, independently, the evaluator x set cells are resampled; every cell's ranking
    comes from values averaged over seeds, cells and images first (never resampled)."""
    srcc = (iqa.assign(q=-iqa["pred"]).groupby(["backbone", "benchmark"])[["q", "score"]]
            .apply(lambda g: stats.spearmanr(g["q"], g["score"]).statistic).unstack().to_numpy())
    means = value.mean(axis=(3, 4, 5))  # evaluator x set x backbone
    cell_ranks = _rank_best_first(np.where(higher[:, None, None], means, -means).reshape(-1, K), True).T
    rng = np.random.default_rng(seed)
    ib = rng.integers(0, srcc.shape[1], (n_boot, srcc.shape[1]))
    ic = rng.integers(0, cell_ranks.shape[1], (n_boot, cell_ranks.shape[1]))
    rho = _row_spearman(_rank_best_first(srcc[:, ib].mean(-1).T, True),
                        _rank_best_first(cell_ranks[:, ic].mean(-1).T, False))
    return np.quantile(rho[np.isfinite(rho)], [(1 - LEVEL) / 2, (1 + LEVEL) / 2])


def test_asymmetry_rho_interval_coverage(record_property):
    truth = true_rho()
    hits = {"new": [], "old": []}
    width = {"new": [], "old": []}
    for r in range(REPLICATES):
        iqa, opt, value, higher = simulate_sweep(np.random.default_rng(r))
        res = asymmetry_interval(iqa, opt, n_boot=500, seed=r, level=LEVEL)
        assert res.n_boot_valid == 500 and not res.notes and not res.missing
        lo, hi = old_scheme_interval(iqa, value, higher, 500, r)
        for scheme, (a, b) in (("new", (res.spearman_lo, res.spearman_hi)), ("old", (lo, hi))):
            hits[scheme].append(a <= truth <= b)
            width[scheme].append(b - a)
    cover = {k: float(np.mean(v)) for k, v in hits.items()}
    print(f"\nasymmetry rho coverage ({REPLICATES} replicates, nominal {LEVEL:.0%}, true rho {truth:.3f}): "
          f"paired hierarchical {cover['new']:.3f} (mean width {np.mean(width['new']):.3f}), "
          f"old cells scheme {cover['old']:.3f} (mean width {np.mean(width['old']):.3f})")
    print(f"resampled: {res.resampled}")
    record_property("asymmetry_coverage_new", cover["new"])
    record_property("asymmetry_coverage_old", cover["old"])
    assert cover["new"] >= 0.90, cover
    assert cover["old"] < 0.85, cover
