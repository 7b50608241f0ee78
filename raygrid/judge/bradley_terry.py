"""Bradley–Terry with ties (Davidson 1970), fitted by batched Newton steps.

Model, for items i, j with log-strengths θ_i, θ_j and tie parameter ν = exp(η):

    P(i preferred) = e^θi / D,   P(j preferred) = e^θj / D,   P(same) = ν·e^((θi+θj)/2) / D,
    D = e^θi + e^θj + ν·e^((θi+θj)/2).

With ν → 0 it is the plain Bradley–Terry model. Two equal items are called "same" with
probability ν / (2 + ν). The likelihood only sees differences of θ; a Gaussian prior
θ ~ N(0, prior_sd²) (and η ~ N(0, prior_sd²)) makes the estimate finite when an item won or lost
every comparison, and centres it: at the maximum, Σθ = 0 (the likelihood's gradient along a
common shift is zero, so the prior's must be too). The prior is weak (sd 3 on the log scale,
where a difference of 3 is a 95 % win rate); with a few comparisons per pair it moves the
estimates by much less than their intervals.

Everything works on aggregated counts: `counts[..., p, o]` for the unordered pairs
`pairs[p] = (i, j)`, i < j, and outcomes o = 0 (i preferred), 1 (j preferred), 2 (same). The
leading axes are a batch (bootstrap resamples), all fitted at once: a resample costs one
(K+1)×(K+1) solve per Newton step, so 2 000 resamples of a 10-item ranking take well under a
second.

The log-likelihood is the log-partition function of an exponential family in (θ_i, θ_j, η) with
statistics s(i) = (1, 0, 0), s(j) = (0, 1, 0), s(same) = (½, ½, 1), so its Hessian is −n·Cov(s):
that is what `_derivatives` assembles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIOR_SD = 3.0
_MAX_ITER = 100
_TOL = 1e-10


def all_pairs(k: int) -> np.ndarray:
    """(P, 2) array of every unordered pair (i, j), i < j, of k items."""
    i, j = np.triu_indices(k, 1)
    return np.stack([i, j], axis=1)


@dataclass
class Fit:
    """MAP estimate (per batch entry) and its Laplace covariance."""

    theta: np.ndarray  # (..., K) log-strengths, Σθ = 0
    eta: np.ndarray  # (...,) log ν; -inf when ties are not modelled
    cov: np.ndarray  # (..., K', K') inverse of the negative Hessian; K' = K (+1 with ties)
    converged: np.ndarray  # (...,) bool

    @property
    def nu(self) -> np.ndarray:
        return np.exp(self.eta)


def _logits(theta: np.ndarray, eta: np.ndarray, pairs: np.ndarray, ties: bool) -> np.ndarray:
    a, b = theta[..., pairs[:, 0]], theta[..., pairs[:, 1]]
    if ties:
        t = eta[..., None] + 0.5 * (a + b)
    else:
        t = np.full_like(a, -np.inf)
    return np.stack([a, b, t], axis=-1)  # (..., P, 3)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    return logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))


def log_posterior(theta, eta, counts, pairs, ties: bool, prior_sd: float = PRIOR_SD) -> np.ndarray:
    logp = _log_softmax(_logits(theta, eta, pairs, ties))
    with np.errstate(invalid="ignore"):  # 0 · (−inf) for the tie outcome without ties
        ll = np.where(counts > 0, counts * logp, 0.0).sum(axis=(-1, -2))
    lp = -0.5 * (theta ** 2).sum(axis=-1) / prior_sd ** 2
    if ties:
        lp = lp - 0.5 * eta ** 2 / prior_sd ** 2
    return ll + lp


def _derivatives(theta, eta, counts, pairs, k: int, ties: bool, prior_sd: float):
    """Gradient (..., K') and Hessian (..., K', K') of the log posterior."""
    prob = np.exp(_log_softmax(_logits(theta, eta, pairs, ties)))
    pi, pj, pt = prob[..., 0], prob[..., 1], prob[..., 2]
    n = counts.sum(axis=-1)
    # E[s] and E[s sᵀ] of the statistics in (θi, θj, η)
    e = np.stack([pi + pt / 2, pj + pt / 2, pt], axis=-1)
    s2 = np.empty(prob.shape[:-1] + (3, 3))
    s2[..., 0, 0], s2[..., 1, 1], s2[..., 2, 2] = pi + pt / 4, pj + pt / 4, pt
    s2[..., 0, 1] = s2[..., 1, 0] = pt / 4
    s2[..., 0, 2] = s2[..., 2, 0] = s2[..., 1, 2] = s2[..., 2, 1] = pt / 2
    cov = s2 - e[..., :, None] * e[..., None, :]
    obs = np.stack([counts[..., 0] + counts[..., 2] / 2, counts[..., 1] + counts[..., 2] / 2, counts[..., 2]], axis=-1)
    g_pair = obs - n[..., None] * e  # (..., P, 3)
    h_pair = -n[..., None, None] * cov  # (..., P, 3, 3)

    dim = k + (1 if ties else 0)
    # parameter index of each pair's three coordinates (θi, θj, η); without ties η is dropped
    coord = np.stack([pairs[:, 0], pairs[:, 1], np.full(len(pairs), k)], axis=1)
    c = 3 if ties else 2
    coord, g_pair, h_pair = coord[:, :c], g_pair[..., :c], h_pair[..., :c, :c]
    grad = _scatter(g_pair, coord, dim)
    flat = coord[:, :, None] * dim + coord[:, None, :]  # (P, c, c) index into dim × dim
    hess = _scatter(h_pair.reshape(h_pair.shape[:-2] + (c * c,)), flat.reshape(len(pairs), -1), dim * dim)
    hess = hess.reshape(hess.shape[:-1] + (dim, dim))
    params = np.concatenate([theta, eta[..., None]], axis=-1) if ties else theta
    grad = grad - params / prior_sd ** 2
    hess = hess - np.eye(dim) / prior_sd ** 2
    return grad, hess


def _scatter(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Sum `values` (..., P, c) into (..., size) at `index` (P, c): a sparse assembly, so a
    ranking of many items costs O(pairs), not O(pairs × parameters²)."""
    lead = values.shape[:-2]
    nb = int(np.prod(lead)) if lead else 1
    flat = (np.arange(nb)[:, None] * size + index.reshape(1, -1)).ravel()
    out = np.bincount(flat, weights=values.reshape(nb, -1).ravel(), minlength=nb * size)
    return out.reshape(lead + (size,))


def fit(counts: np.ndarray, k: int, pairs: np.ndarray | None = None, ties: bool | None = None,
        prior_sd: float = PRIOR_SD) -> Fit:
    """MAP fit of Davidson's model to `counts` (..., P, 3); `ties=None`: model ties when any
    batch entry has one (otherwise plain Bradley–Terry, η = −inf)."""
    counts = np.asarray(counts, dtype=float)
    pairs = all_pairs(k) if pairs is None else np.asarray(pairs)
    if ties is None:
        ties = bool(counts[..., 2].sum() > 0)
    batch = counts.shape[:-2]
    theta = np.zeros(batch + (k,))
    eta = np.zeros(batch) if ties else np.full(batch, -np.inf)
    converged = np.zeros(batch, dtype=bool)
    current = log_posterior(theta, eta, counts, pairs, ties, prior_sd)
    for _ in range(_MAX_ITER):
        grad, hess = _derivatives(theta, eta, counts, pairs, k, ties, prior_sd)
        step = -np.linalg.solve(hess, grad[..., None])[..., 0]  # Newton: H is negative definite
        # Backtracking on the (concave) log posterior, per batch entry.
        alpha = np.ones(batch)
        for _ in range(30):
            t_new = theta + alpha[..., None] * step[..., :k]
            e_new = eta + alpha * step[..., k] if ties else eta
            new = log_posterior(t_new, e_new, counts, pairs, ties, prior_sd)
            worse = new < current - 1e-12
            if not worse.any():
                break
            alpha = np.where(worse, alpha / 2, alpha)
        theta, eta, current = t_new, e_new, new
        size = np.abs(alpha[..., None] * step).max(axis=-1) if step.size else np.zeros(batch)
        converged = size < _TOL
        if converged.all():
            break
    _, hess = _derivatives(theta, eta, counts, pairs, k, ties, prior_sd)
    return Fit(theta=theta, eta=eta, cov=np.linalg.inv(-hess), converged=converged)


def pair_counts(left: np.ndarray, right: np.ndarray, outcome: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per judgement: item index on the left and right, outcome 0 = left preferred, 1 = right,
    2 = same. Returns (pair index into `all_pairs(k)`, outcome relative to the pair's (i, j))."""
    left, right, outcome = (np.asarray(x, dtype=int) for x in (left, right, outcome))
    if np.any(left == right):
        raise ValueError("a judgement compares an item with itself")
    i, j = np.minimum(left, right), np.maximum(left, right)
    # index of (i, j) in np.triu_indices(k, 1) order
    pair = i * k - i * (i + 1) // 2 + (j - i - 1)
    swapped = left > right
    rel = np.where(outcome == 2, 2, np.where(swapped, 1 - outcome, outcome))
    return pair, rel


def win_probabilities(theta_i, theta_j, eta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(i preferred), P(j preferred), P(same)) under the model."""
    logits = np.stack(np.broadcast_arrays(theta_i, theta_j, eta + 0.5 * (np.asarray(theta_i) + theta_j)), axis=-1)
    p = np.exp(_log_softmax(logits))
    return p[..., 0], p[..., 1], p[..., 2]


def difference_information(theta_i, theta_j, eta) -> np.ndarray:
    """Fisher information about Δ = θi − θj carried by one more comparison of i and j:
    Var((s_i − s_j)/2) — p(1−p) for plain Bradley–Terry; ties carry less."""
    pi, pj, _ = win_probabilities(theta_i, theta_j, eta)
    # (s_i − s_j)/2 is +½ (i), −½ (j), 0 (same)
    mean = (pi - pj) / 2
    return (pi + pj) / 4 - mean ** 2
