"""Agreement between a quality model's predictions and subjective scores, with intervals that cover.

SRCC = scipy.stats.spearmanr, KRCC = kendalltau (tau-b), PLCC = pearsonr, as pyiqa computes them;
`plcc_logistic` is PLCC after the VQEG 4-parameter logistic fit
    yhat = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2,   init [max y, min y, mean x, std x / 4].

Direction: targets are taken as higher = better (as the benchmark tables' `score` column is). For a
lower-is-better prediction (a distance such as DISTS or LPIPS) pass `lower_better=True` and the
predictions are negated first, so a good model gets positive correlations.

Intervals (docs/statistics.md). The pairs of a full-reference benchmark are not independent: every
reference image contributes one pair per distortion, and a measure that misjudges a reference
misjudges all of its pairs. `correlations(..., clusters=reference_ids)` therefore resamples whole
references (all pairs of a reference together): scipy.stats.bootstrap over the unique reference
ids, with a statistic that gathers their rows. A reference drawn k times enters with weight k;
SRCC and PLCC are computed as weighted statistics, which equal spearmanr/pearsonr of the expanded
sample exactly and vectorise over resamples; KRCC and the logistic PLCC run per resample on the
expanded sample. The interval is BCa: with 25-200 references a correlation's bootstrap distribution
is skewed and biased near 1, which the percentile interval ignores (simulated coverage of both in
docs/statistics.md); BCa's jackknife is leave-one-reference-out, cheap at this cluster count.
`clusters=None` keeps the earlier pair-level percentile bootstrap, for comparison only: it treats
the pairs as independent and under-covers (tests/test_intervals_coverage.py).

Cost, measured on one core with n_boot=1000 and all four measures: 3,000 pairs in 30 references
2.3 s, 10,125 pairs in 81 references (KADID-10k's size) 5.8 s; the logistic fits dominate (SRCC and
PLCC alone: 0.2 s / 0.9 s). The pair-level bootstrap costs the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import bootstrap, kendalltau, pearsonr, spearmanr

MEASURES = ("srcc", "krcc", "plcc", "plcc_logistic")
BOOTSTRAP_FIT_TOL = 1e-6
# A resample's logistic fit starts at the full sample's solution and converges in tens of
# evaluations; one that has not converged after this many is a failed fit (NaN), not a reason to
# spend seconds per resample (scipy's default budget is 10000; measures whose fit never converges,
# e.g. random-weight backbones, made a 200-resample bootstrap take tens of seconds).
BOOTSTRAP_MAXFEV = 600
# Keys of `correlations`' result that hold text, not numbers: log them as params/tags, not metrics.
TEXT_KEYS = ("resampled", "ci_method")
CLUSTER_METHOD = "BCa"  # the interval for a clustered bootstrap (see the module docstring)
PAIR_METHOD = "percentile"  # the earlier pair-level interval, kept for comparison
_MAX_BATCH_CELLS = 2_000_000  # resamples x pairs held in memory at once (~16 MB per float matrix)


def _arrays(pred, target, lower_better: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pred and target differ in length: {x.size} vs {y.size}")
    if x.size < 3:
        raise ValueError(f"need at least 3 pairs, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("pred and target must be finite")
    return (-x if lower_better else x), y


def srcc(pred, target, lower_better: bool = False) -> float:
    x, y = _arrays(pred, target, lower_better)
    return float(spearmanr(x, y).statistic)


def krcc(pred, target, lower_better: bool = False) -> float:
    x, y = _arrays(pred, target, lower_better)
    return float(kendalltau(x, y).statistic)


def plcc(pred, target, lower_better: bool = False) -> float:
    x, y = _arrays(pred, target, lower_better)
    return float(pearsonr(x, y).statistic)


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / b4)) + b2


def _logistic4_jac(x, b1, b2, b3, b4):
    e = np.exp(-(x - b3) / b4)
    s = 1.0 / (1.0 + e)
    ds = s * s * e  # d s / d((x - b3) / b4)
    return np.stack([s, 1.0 - s, -(b1 - b2) * ds / b4, -(b1 - b2) * ds * (x - b3) / b4**2], axis=1)


def fit_logistic(pred, target, p0=None, tol: float | None = None) -> np.ndarray:
    """Fitted [b1, b2, b3, b4] of `logistic4` mapping pred to target (pyiqa's initial values and,
    with tol=None, scipy's default tolerances). Raises RuntimeError if the fit does not converge."""
    x, y = _arrays(pred, target)
    if p0 is None:
        p0 = [y.max(), y.min(), x.mean(), (x.std() / 4) or 1.0]
    kwargs = {} if tol is None else {"xtol": tol, "ftol": tol, "jac": _logistic4_jac}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow while exploring
        params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=10000, **kwargs)
    return params


def plcc_logistic(pred, target, lower_better: bool = False, p0=None, tol: float | None = None,
                  fallback: bool = True) -> float:
    """PLCC between target and the logistic fit of pred. If the fit fails to converge, falls back
    to the raw PLCC (the fitted map is then not monotone-informative anyway), or NaN with
    fallback=False (bootstrap resamples: a fallback value there would mix two statistics)."""
    x, y = _arrays(pred, target, lower_better)
    try:
        yhat = logistic4(x, *fit_logistic(x, y, p0, tol))
    except RuntimeError:
        return float(pearsonr(x, y).statistic) if fallback else float("nan")
    if np.ptp(yhat) == 0:
        return float("nan")
    return float(pearsonr(yhat, y).statistic)


# ---------------------------------------------------------------------------------------------
# Weighted statistics: a resample of clusters = integer weights on the rows
# ---------------------------------------------------------------------------------------------


def weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of a, b (B x n, or n broadcast) with row weights w (B x n).
    With integer weights this is pearsonr of the sample in which row i appears w_i times."""
    sw = w.sum(-1, keepdims=True)
    am = (w * a).sum(-1, keepdims=True) / sw
    bm = (w * b).sum(-1, keepdims=True) / sw
    da, db = a - am, b - bm
    cov, va, vb = (w * da * db).sum(-1), (w * da * da).sum(-1), (w * db * db).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((va > 0) & (vb > 0), cov / np.sqrt(va * vb), np.nan)


# Up to here the table's matrix product is the faster path; its cost grows with the clusters, the
# cumulative sum's does not (one core, 500 resamples: 38 vs 98 ms at 128 clusters, 169 vs 189 ms
# at 256, 216 vs 123 ms at 512).
TABLE_MAX_CLUSTERS = 128


class ClusterRanks:
    """Average ranks of a fixed vector under many resamples of its clusters, vectorised.

    Row i belongs to cluster g_i; a resample that draws cluster c `counts[c]` times holds row i
    `counts[g_i]` times. `__call__(counts)` returns each row's average rank in that expanded
    sample, S_i + (T_i + 1) / 2 (what scipy.stats.rankdata gives there), S_i the number of rows
    below v_i and T_i the number equal to it. Exact either way (sums of integers and halves):
    - up to TABLE_MAX_CLUSTERS clusters (references of an FR benchmark), S and T are linear in the
      counts: with table[c, i] = #{j in c: v_j < v_i} + #{j in c: v_j = v_i} / 2, built once by a
      sort per cluster, a batch of resamples is one matrix product, `counts @ table + 1/2`;
    - with more (every pair its own cluster, an NR benchmark's images) the rows are sorted and tie
      groups found once; a resample then costs one cumulative sum of its row weights.
    """

    def __init__(self, v: np.ndarray, cluster_of_row: np.ndarray, n_clusters: int):
        self.g = cluster_of_row
        self.table = None
        if n_clusters <= TABLE_MAX_CLUSTERS:
            self.table = np.zeros((n_clusters, v.size))
            for c in range(n_clusters):
                members = np.sort(v[cluster_of_row == c])
                below = np.searchsorted(members, v, side="left")
                self.table[c] = below + (np.searchsorted(members, v, side="right") - below) / 2
            return
        self.order = np.argsort(v, kind="stable")
        sv = v[self.order]
        new_group = np.r_[True, sv[1:] != sv[:-1]]
        self.ends = np.r_[np.flatnonzero(new_group)[1:] - 1, v.size - 1]  # last sorted position per group
        self.group = np.empty(v.size, dtype=np.intp)
        self.group[self.order] = np.cumsum(new_group) - 1

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        """(B x n_clusters) draw counts -> (B x n) average ranks of the rows."""
        if self.table is not None:
            return counts @ self.table + 0.5
        c = np.cumsum(counts[:, self.g[self.order]], axis=1, dtype=np.float64)  # row weights, sorted
        c_end = c[:, self.ends]
        c_before = np.concatenate([np.zeros((c.shape[0], 1)), c_end[:, :-1]], axis=1)
        # a tie group holding total weight T after S rows occupies ranks S+1..S+T: average S + (T+1)/2
        return ((c_end + c_before + 1) / 2)[:, self.group]


def cluster_weights(idx: np.ndarray, n_clusters: int) -> np.ndarray:
    """(B x m) drawn cluster indices -> (B x n_clusters) multiplicities."""
    b = idx.shape[0]
    flat = (idx + n_clusters * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n_clusters).reshape(b, n_clusters)


class _ClusterStatistic:
    """The measures of the pairs of the drawn clusters; vectorised for scipy.stats.bootstrap.

    Called with drawn cluster indices (... x m, m = number of clusters for a resample, one fewer for
    BCa's jackknife); returns (len(measures) x ...).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, cluster_of_row: np.ndarray, n_clusters: int,
                 measures: Sequence[str]):
        self.x, self.y, self.g, self.n_clusters = x, y, cluster_of_row, n_clusters
        self.measures = list(measures)
        self.rank_x = ClusterRanks(x, cluster_of_row, n_clusters)
        self.rank_y = ClusterRanks(y, cluster_of_row, n_clusters)
        self.p_full = None
        if "plcc_logistic" in self.measures:
            try:  # warm-start every resample's fit at the full-sample solution: a few steps each
                self.p_full = fit_logistic(x, y)
            except RuntimeError:
                pass

    def __call__(self, idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx), axis, -1).astype(np.intp)
        lead = idx.shape[:-1]
        counts = cluster_weights(idx.reshape(-1, idx.shape[-1]), self.n_clusters)
        drawn = counts.astype(np.float64)
        w = drawn[:, self.g]  # B x n row weights
        out = np.full((len(self.measures), w.shape[0]), np.nan)
        for k, m in enumerate(self.measures):
            if m == "srcc":
                out[k] = weighted_pearson(self.rank_x(drawn), self.rank_y(drawn), w)
            elif m == "plcc":
                out[k] = weighted_pearson(self.x, self.y, w)
            else:
                out[k] = self._per_resample(m, counts)
        return out.reshape(len(self.measures), *lead)

    def _per_resample(self, measure: str, counts: np.ndarray) -> np.ndarray:
        vals = np.full(counts.shape[0], np.nan)
        if measure == "plcc_logistic" and self.p_full is None:
            return vals  # the full sample's fit failed: its point estimate is the raw-PLCC fallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant resamples warn; they are NaN
            for i, c in enumerate(counts):
                reps = c[self.g]
                keep = reps > 0
                xk, yk = self.x[keep], self.y[keep]
                if reps.sum() < 3 or np.ptp(xk) == 0 or np.ptp(yk) == 0:
                    continue
                if measure == "krcc":
                    vals[i] = kendalltau(np.repeat(xk, reps[keep]), np.repeat(yk, reps[keep])).statistic
                else:
                    vals[i] = _weighted_plcc_logistic(xk, yk, reps[keep], self.p_full)
        return vals


def _weighted_plcc_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, p0) -> float:
    """plcc_logistic of the sample in which row i appears w_i times, without expanding it: least
    squares with sigma = 1/sqrt(w) minimises sum w_i r_i^2, the expanded sample's objective. Looser
    tolerance and an analytic Jacobian: ~3x faster than the defaults, PLCC within ~1e-5."""
    if p0 is None:
        p0 = [y.max(), y.min(), np.average(x, weights=w), (np.sqrt(np.cov(x, aweights=w)) / 4) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(logistic4, x, y, p0=p0, sigma=1 / np.sqrt(w), maxfev=BOOTSTRAP_MAXFEV, jac=_logistic4_jac,
                                  xtol=BOOTSTRAP_FIT_TOL, ftol=BOOTSTRAP_FIT_TOL)
    except RuntimeError:
        return float("nan")
    yhat = logistic4(x, *params)
    if np.ptp(yhat) == 0:
        return float("nan")
    return float(weighted_pearson(yhat, y, w.astype(np.float64)))


def _cluster_index(clusters, n: int) -> tuple[np.ndarray, int]:
    c = np.asarray(clusters).ravel()
    if c.size != n:
        raise ValueError(f"clusters has {c.size} entries for {n} pairs; expected one reference id per pair")
    if c.dtype.kind == "f" and not np.isfinite(c).all():
        raise ValueError("clusters must not contain NaN: every pair needs its reference id")
    if c.dtype == object and any(v is None for v in c):
        raise ValueError("clusters must not contain None: every pair needs its reference id")
    _, inverse = np.unique(c, return_inverse=True)
    n_clusters = int(inverse.max()) + 1
    if n_clusters < 3:
        raise ValueError(f"clusters: need at least 3 distinct reference ids to resample, got {n_clusters}")
    return inverse.ravel(), n_clusters


def correlations(
    pred,
    target,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    lower_better: bool = False,
    clusters=None,
    measures: Sequence[str] = MEASURES,
) -> dict[str, float | str]:
    """SRCC, KRCC, PLCC and logistic PLCC with bootstrap confidence intervals.

    clusters: the reference-image id of every pair (FR benchmarks). The bootstrap then resamples
    whole references (BCa interval). None: every pair is its own unit (the earlier pair-level
    percentile interval; under-covers when pairs share references: use it for comparison only).
    measures: a subset of MEASURES to compute (the coverage simulations ask for SRCC alone).

    Returns a flat dict: `n` (pairs), `n_clusters` (resampled units), `resampled` ("reference
    images" or "image pairs") and `ci_method` (text: see TEXT_KEYS), and for each measure m: `m`,
    `m_lo`, `m_hi` (the `ci` interval; NaN when n_boot == 0, or when fewer than half of the
    resamples give a value, e.g. logistic fits that mostly fail: an interval from a minority of
    resamples would describe a selected subset, not the statistic). Resamples in which a measure
    is undefined (constant values, a failed logistic fit) are left out of that measure's interval,
    which is then the percentile interval of the rest.
    """
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise ValueError(f"measures: unknown {unknown or 'empty list'}; expected a subset of {MEASURES}")
    x, y = _arrays(pred, target, lower_better)
    if clusters is None:
        cluster_of_row, n_clusters = np.arange(x.size), x.size
        resampled, method = "image pairs", PAIR_METHOD
    else:
        cluster_of_row, n_clusters = _cluster_index(clusters, x.size)
        resampled, method = "reference images", CLUSTER_METHOD
    out: dict[str, float | str] = {"n": float(x.size), "n_clusters": float(n_clusters),
                                   "resampled": resampled, "ci_method": method}
    point = {"srcc": srcc, "krcc": krcc, "plcc": plcc, "plcc_logistic": plcc_logistic}
    for m in measures:
        out[m] = point[m](x, y)
    if n_boot <= 0:
        for m in measures:
            out[f"{m}_lo"] = out[f"{m}_hi"] = float("nan")
        return out

    stat = _ClusterStatistic(x, y, cluster_of_row, n_clusters, measures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning for NaN resamples: handled below
        res = bootstrap(
            (np.arange(n_clusters),), stat, n_resamples=n_boot, vectorized=True, axis=-1,
            confidence_level=ci, method=method, rng=np.random.default_rng(seed),
            batch=max(1, _MAX_BATCH_CELLS // x.size),
        )
    lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    dist = np.atleast_2d(res.bootstrap_distribution)
    for k, m in enumerate(measures):
        finite = dist[k][np.isfinite(dist[k])]
        if np.isfinite(lo[k]) and np.isfinite(hi[k]) and finite.size == n_boot:
            out[f"{m}_lo"], out[f"{m}_hi"] = float(lo[k]), float(hi[k])
        elif finite.size >= n_boot / 2:
            out[f"{m}_lo"], out[f"{m}_hi"] = (float(v) for v in np.quantile(finite, [(1 - ci) / 2, (1 + ci) / 2]))
        else:
            out[f"{m}_lo"] = out[f"{m}_hi"] = float("nan")
    return out


MIN_CLUSTERS = 3  # fewer reference images than this: no bootstrap interval


def reference_correlations(pred, target, ref_ids, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """`correlations` of an IQA evaluation whose rows share reference images (the benchmark
    table's `ref_id`; an NR image is its own reference): the interval resamples references, and
    with fewer than MIN_CLUSTERS references there is none (a bootstrap over one or two references
    says nothing about others). Numbers only (TEXT_KEYS dropped)."""
    refs = np.asarray([str(r) for r in ref_ids])
    n_refs = len(set(refs.tolist()))
    if n_refs >= MIN_CLUSTERS:
        corr = correlations(pred, target, n_boot=n_boot, seed=seed, clusters=refs)
    else:
        corr = correlations(pred, target, n_boot=0)
        corr["n_clusters"] = float(n_refs)
    return {k: float(v) for k, v in corr.items() if k not in TEXT_KEYS}
