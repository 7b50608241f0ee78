"""SRCC/KRCC/PLCC agree with scipy; the logistic fit and the bootstrap CIs behave."""

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import curve_fit

from raygrid.metrics.correlation import (
    ClusterRanks,
    correlations,
    krcc,
    plcc,
    plcc_logistic,
    srcc,
)


def _data(n=60, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    pred = np.tanh((mos - 3) * 0.8) + rng.normal(0, 0.15, n)  # monotone but not linear
    if ties:
        pred = np.round(pred, 1)
    return pred, mos


def test_match_scipy():
    pred, mos = _data(ties=True)
    assert srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    assert plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos).statistic, abs=1e-12)


def test_logistic_plcc_matches_a_direct_vqeg_fit():
    pred, mos = _data(seed=1)

    def f(x, b1, b2, b3, b4):
        return (b1 - b2) / (1 + np.exp(-(x - b3) / b4)) + b2

    b, _ = curve_fit(f, pred, mos, p0=[mos.max(), mos.min(), pred.mean(), pred.std() / 4], maxfev=10000)
    want = stats.pearsonr(f(pred, *b), mos).statistic
    assert plcc_logistic(pred, mos) == pytest.approx(want, abs=1e-6)
    assert plcc_logistic(pred, mos) > plcc(pred, mos)  # the fit linearises a tanh-shaped relation


def test_lower_better_negates():
    pred, mos = _data(seed=3)
    dist = -pred
    assert srcc(dist, mos, lower_better=True) == pytest.approx(srcc(pred, mos))
    assert srcc(dist, mos) == pytest.approx(-srcc(pred, mos))
    res = correlations(dist, mos, n_boot=50, lower_better=True)
    assert res["srcc"] > 0.8


def test_bootstrap_ci_reproducible_and_sensible():
    pred, mos = _data(n=80, seed=4, ties=True)
    a = correlations(pred, mos, n_boot=200, seed=7)
    b = correlations(pred, mos, n_boot=200, seed=7)
    c = correlations(pred, mos, n_boot=200, seed=8)
    assert a == b and a != c
    assert a["n"] == 80
    for m in ("srcc", "krcc", "plcc", "plcc_logistic"):
        assert a[f"{m}_lo"] <= a[m] <= a[f"{m}_hi"], m
        assert a[f"{m}_hi"] - a[f"{m}_lo"] < 0.3
    wide = correlations(pred[:20], mos[:20], n_boot=200, seed=7)
    assert wide["srcc_hi"] - wide["srcc_lo"] > a["srcc_hi"] - a["srcc_lo"]


def _naive_cluster_statistic(pred, mos, ref, measure):
    """The textbook cluster bootstrap statistic: gather the pairs of the drawn references, compute."""
    rows = {c: np.flatnonzero(ref == c) for c in np.unique(ref)}
    keys = np.unique(ref)

    def stat(idx):
        take = np.concatenate([rows[keys[i]] for i in idx])
        x, y = pred[take], mos[take]
        if measure == "srcc":
            return stats.spearmanr(x, y).statistic
        if measure == "krcc":
            return stats.kendalltau(x, y).statistic
        if measure == "plcc":
            return stats.pearsonr(x, y).statistic
        return plcc_logistic(x, y, fallback=False)

    return stat


def _clustered_data(n_ref=12, per_ref=7, seed=0, ref_effect=0.6):
    rng = np.random.default_rng(seed)
    ref = np.repeat(np.arange(n_ref), per_ref)
    ref = np.array([f"img{r:02d}.bmp" for r in ref])  # reference ids are names in the tables
    q = rng.normal(size=ref.size)
    bias = rng.normal(0, ref_effect, n_ref)[np.unique(ref, return_inverse=True)[1]]
    mos = 1 + 4 / (1 + np.exp(-1.5 * q)) + rng.normal(0, 0.2, ref.size)
    pred = np.round(q + bias + rng.normal(0, 0.4, ref.size), 1)  # ties, as real predictions have
    return pred, mos, ref


@pytest.mark.parametrize("measure", ["srcc", "krcc", "plcc", "plcc_logistic"])
def test_clustered_bootstrap_equals_scipy_with_the_textbook_statistic(measure):
    """Same draws (scipy.stats.bootstrap, same rng), statistic computed by gathering the drawn
    references' rows: the vectorised weighted statistic must give the same BCa interval."""
    pred, mos, ref = _clustered_data()
    res = correlations(pred, mos, n_boot=150, seed=5, clusters=ref, measures=(measure,))
    want = stats.bootstrap((np.arange(12),), _naive_cluster_statistic(pred, mos, ref, measure), n_resamples=150,
                           vectorized=False, method="BCa", rng=np.random.default_rng(5))
    tol = 1e-4 if measure == "plcc_logistic" else 1e-10  # the resample fits use a looser tolerance
    assert res["resampled"] == "reference images" and res["ci_method"] == "BCa" and res["n_clusters"] == 12
    assert res[f"{measure}_lo"] == pytest.approx(want.confidence_interval.low, abs=tol)
    assert res[f"{measure}_hi"] == pytest.approx(want.confidence_interval.high, abs=tol)


@pytest.mark.parametrize("n_clusters", [12, 300])  # the product with a table; the cumulative sum
def test_cluster_ranks_are_rankdata_of_the_expanded_sample(n_clusters):
    rng = np.random.default_rng(n_clusters)
    g = rng.integers(0, n_clusters, 4 * n_clusters)
    v = np.round(rng.normal(size=g.size), 1)  # ties within and across clusters
    counts = rng.multinomial(n_clusters, np.ones(n_clusters) / n_clusters, size=5)
    counts[0] = 0
    counts[0, :2] = (3, 2)  # most clusters not drawn
    got = ClusterRanks(v, g, n_clusters)(counts.astype(float))
    for row, c in zip(got, counts):
        reps = c[g]
        ranks = stats.rankdata(np.repeat(v, reps))  # the expanded sample's average ranks
        want = np.repeat(np.arange(v.size), reps)
        kept = reps > 0
        assert np.array_equal(row[kept], [ranks[want == i][0] for i in np.flatnonzero(kept)])


def test_pair_level_bootstrap_equals_scipy_percentile_over_pairs():
    pred, mos = _data(n=40, seed=5, ties=True)
    res = correlations(pred, mos, n_boot=200, seed=3, ci=0.9, measures=("srcc", "plcc"))
    for m, fn in (("srcc", stats.spearmanr), ("plcc", stats.pearsonr)):
        want = stats.bootstrap((pred, mos), lambda a, b, fn=fn: fn(a, b).statistic, paired=True, vectorized=False,
                               n_resamples=200, confidence_level=0.9, method="percentile",
                               rng=np.random.default_rng(3))
        assert res[f"{m}_lo"] == pytest.approx(want.confidence_interval.low, abs=1e-12)
        assert res[f"{m}_hi"] == pytest.approx(want.confidence_interval.high, abs=1e-12)
    assert res["resampled"] == "image pairs" and res["n_clusters"] == 40 and "krcc" not in res


def test_clustered_interval_is_wider_when_references_carry_an_effect():
    ratios = {}
    for effect in (0.0, 0.8):
        for seed in range(4):
            pred, mos, ref = _clustered_data(n_ref=20, per_ref=24, seed=seed, ref_effect=effect)
            pair = correlations(pred, mos, n_boot=300, seed=1, measures=("srcc",))
            clus = correlations(pred, mos, n_boot=300, seed=1, clusters=ref, measures=("srcc",))
            assert clus["srcc"] == pair["srcc"]  # same point estimate: only the interval changes
            ratios[effect, seed] = (clus["srcc_hi"] - clus["srcc_lo"]) / (pair["srcc_hi"] - pair["srcc_lo"])
    assert all(ratios[0.8, s] > ratios[0.0, s] for s in range(4)), ratios
    assert np.mean([ratios[0.8, s] for s in range(4)]) > 1.5, ratios  # design effect of shared references
    assert np.mean([ratios[0.0, s] for s in range(4)]) < 1.2, ratios  # none without a reference effect


def test_cluster_input_is_checked():
    pred, mos, ref = _clustered_data()
    with pytest.raises(ValueError, match="clusters has 83 entries for 84 pairs"):
        correlations(pred, mos, clusters=ref[:-1])
    with pytest.raises(ValueError, match="at least 3 distinct reference ids"):
        correlations(pred, mos, clusters=np.where(np.arange(ref.size) % 2, "a", "b"))
    with pytest.raises(ValueError, match="NaN"):
        correlations(pred, mos, clusters=np.r_[np.arange(ref.size - 1), np.nan])
    with pytest.raises(ValueError, match="unknown \\['rmse'\\]"):
        correlations(pred, mos, measures=("srcc", "rmse"))


def test_no_bootstrap_and_bad_input():
    pred, mos = _data(n=10)
    res = correlations(pred, mos, n_boot=0)
    assert np.isnan(res["srcc_lo"]) and res["srcc"] == pytest.approx(srcc(pred, mos))
    with pytest.raises(ValueError, match="length"):
        srcc(pred, mos[:-1])
    with pytest.raises(ValueError, match="at least 3"):
        plcc([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        krcc([1, np.nan, 3], [1, 2, 3])
