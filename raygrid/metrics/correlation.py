"""Agreement between a quality model's predictions and subjective scores (docs/models.md).

SRCC = scipy.stats.spearmanr, KRCC = kendalltau (tau-b), PLCC = pearsonr, as pyiqa computes them;
`plcc_logistic` is PLCC after the VQEG 4-parameter logistic fit
    yhat = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2,   init [max y, min y, mean x, std x / 4].

Direction: targets are taken as higher = better (as `load_benchmark`'s `score` column is). For a
lower-is-better prediction (a distance such as DISTS or LPIPS) pass `lower_better=True` and the
predictions are negated first, so a good model gets positive correlations.

`correlations` adds percentile bootstrap confidence intervals: `n_boot` resamples of the
(prediction, target) pairs with replacement, drawn from a seeded generator. The logistic fit per
resample dominates the cost: about 1-5 ms each, so n_boot=1000 takes a few seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import kendalltau, pearsonr, rankdata, spearmanr

MEASURES = ("srcc", "krcc", "plcc", "plcc_logistic")
BOOTSTRAP_FIT_TOL = 1e-6


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


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def correlations(
    pred,
    target,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    lower_better: bool = False,
) -> dict[str, float]:
    """SRCC, KRCC, PLCC and logistic PLCC with bootstrap CIs.

    Returns a flat dict (ready for MLflow): `n`, and for each measure m in MEASURES: `m`,
    `m_lo`, `m_hi` (the (1 - ci)/2 and (1 + ci)/2 percentiles of the bootstrap distribution;
    NaN when n_boot == 0). Degenerate resamples (constant values) are ignored.
    """
    x, y = _arrays(pred, target, lower_better)
    out: dict[str, float] = {"n": float(x.size)}
    point = {"srcc": srcc(x, y), "krcc": krcc(x, y), "plcc": plcc(x, y), "plcc_logistic": plcc_logistic(x, y)}
    out.update(point)
    if n_boot <= 0:
        for m in MEASURES:
            out[f"{m}_lo"] = out[f"{m}_hi"] = float("nan")
        return out

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    xb, yb = x[idx], y[idx]
    # Spearman = Pearson of average ranks, vectorised over resamples; Pearson likewise.
    boots = {
        "srcc": _rowwise_pearson(rankdata(xb, axis=1), rankdata(yb, axis=1)),
        "plcc": _rowwise_pearson(xb, yb),
    }
    krcc_b = np.empty(n_boot)
    logistic_b = np.empty(n_boot)
    try:  # warm-start every bootstrap fit at the full-sample solution: converges in a few steps
        p_full = fit_logistic(x, y)
    except RuntimeError:
        p_full = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant resamples warn; they become NaN below
        for i in range(n_boot):
            if np.ptp(xb[i]) == 0 or np.ptp(yb[i]) == 0:
                krcc_b[i] = logistic_b[i] = np.nan
                continue
            krcc_b[i] = kendalltau(xb[i], yb[i]).statistic
            # Looser tolerance and an analytic Jacobian: ~3x faster, PLCC within ~1e-5.
            logistic_b[i] = plcc_logistic(xb[i], yb[i], p0=p_full, tol=BOOTSTRAP_FIT_TOL, fallback=False)
    boots["krcc"] = krcc_b
    boots["plcc_logistic"] = logistic_b
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    for m in MEASURES:
        vals = boots[m][np.isfinite(boots[m])]
        # An interval from a minority of resamples (e.g. logistic fits that mostly fail to
        # converge) would describe a selected subset, not the statistic: report none.
        if vals.size and vals.size >= n_boot / 2:
            out[f"{m}_lo"], out[f"{m}_hi"] = (float(v) for v in np.percentile(vals, [lo_q, hi_q]))
        else:
            out[f"{m}_lo"] = out[f"{m}_hi"] = float("nan")
    return out
