"""SRCC/KRCC/PLCC agree with scipy; the logistic fit and the bootstrap CIs behave."""

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import curve_fit

from raygrid.metrics.correlation import correlations, krcc, plcc, plcc_logistic, srcc


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


def test_vectorised_bootstrap_srcc_equals_scipy_loop():
    pred, mos = _data(n=40, seed=5, ties=True)
    n_boot = 200
    res = correlations(pred, mos, n_boot=n_boot, seed=3, ci=0.9)
    idx = np.random.default_rng(3).integers(0, 40, size=(n_boot, 40))
    loop = [stats.spearmanr(pred[i], mos[i]).statistic for i in idx]
    lo, hi = np.percentile(loop, [5, 95])
    assert res["srcc_lo"] == pytest.approx(lo, abs=1e-12) and res["srcc_hi"] == pytest.approx(hi, abs=1e-12)


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
