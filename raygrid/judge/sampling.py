"""Which comparison to show next: active sampling where the ranking is least certain.

The rule, applied on every request to everything judged so far (every judge, every sitting):

1. Repeats. Every `repeat_every`-th comparison of a judge repeats one of that judge's own earlier
   comparisons (the oldest not yet repeated) with the sides swapped: same runs, same crop. These
   measure the judge's self-consistency (`agreement.judge_quality`) and count in the ranking
   like any other judgement.
2. Otherwise, the pair of settings (i, j) with the largest

       score(i, j) = Φ(−|Δ| / σ) · σ²·I / (1 + σ²·I)

   where Δ, σ² are the mean and variance of θi − θj under the Laplace approximation of the
   current Davidson–Bradley–Terry posterior (`bradley_terry.fit`), and I is the Fisher
   information about Δ of one more comparison. The first factor is the posterior probability
   that the current order of i and j is wrong; the second is the share of the uncertainty about
   Δ that one more comparison removes. Their product spends comparisons on pairs whose order is
   in doubt *and* can still be settled, so two settings that look the same do not absorb every
   comparison once their difference is known to be small. Ties in the score go to the pair
   compared least often, then to a seeded draw.
3. Within the pair: the run (seed) of each setting judged least often, then the crop that this
   pair has been judged on least often (then least often by this judge).
4. Sides: the order this judge has seen less often for this pair (left/right swapped), then the
   one seen less often by everyone, then a seeded coin. So each pair a judge sees twice is seen
   in both orders, and every pair is shown in both orders across the session.

The draw is seeded by (judge, number of judgements so far): the same state gives the same pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from raygrid.judge import bradley_terry as bt
from raygrid.judge.ranking import design

REPEAT_EVERY = 8


@dataclass(frozen=True)
class Proposal:
    left_run: str
    right_run: str
    crop_id: str
    repeat_of: str | None
    reason: str  # why this pair (for the page's debug line and the tests)


def _rng(judge: str, n: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{judge}\0{n}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def pair_scores(judgements: pd.DataFrame, items: Sequence[str]) -> pd.DataFrame:
    """Score of every unordered pair of `items` (columns i, j, item_i, item_j, n, delta, sd, p_wrong,
    gain, score), from the current posterior."""
    k = len(items)
    pairs = bt.all_pairs(k)
    if len(judgements):
        d = design(judgements, items)
        counts = d.aggregate()
    else:
        counts = np.zeros((len(pairs), 3))
    ties = bool(counts[:, 2].sum() > 0)
    f = bt.fit(counts, k, pairs, ties=ties)
    cov = f.cov[:k, :k]
    i, j = pairs[:, 0], pairs[:, 1]
    delta = f.theta[i] - f.theta[j]
    var = cov[i, i] + cov[j, j] - 2 * cov[i, j]
    # without observed ties, assume the prior median tie rate (ν = 1) for the information
    eta = f.eta if ties else 0.0
    info = bt.difference_information(f.theta[i], f.theta[j], eta)
    p_wrong = norm.cdf(-np.abs(delta) / np.sqrt(var))
    gain = var * info / (1 + var * info)
    return pd.DataFrame({"i": i, "j": j, "item_i": [items[x] for x in i], "item_j": [items[x] for x in j],
                         "n": counts.sum(axis=1), "delta": delta, "sd": np.sqrt(var), "p_wrong": p_wrong,
                         "gain": gain, "score": p_wrong * gain})


def next_comparison(judgements: pd.DataFrame, judge: str, runs: Mapping[str, Sequence[str]],
                    crops: Mapping[str, Sequence[str]], repeat_every: int = REPEAT_EVERY) -> Proposal:
    """The next comparison for `judge`.

    runs: item -> its run ids (seeds); crops: run id -> the crop ids it has SR images for.
    judgements: every stored judgement of this experiment (the store's frame).
    """
    items = sorted(i for i, r in runs.items() if any(crops.get(x) for x in r))
    if len(items) < 2:
        raise ValueError(f"need at least 2 settings with SR crops to compare, have {len(items)}")
    mine = judgements[judgements["judge"] == judge] if len(judgements) else judgements
    rng = _rng(judge, len(mine))

    if repeat_every > 1 and len(mine) % repeat_every == repeat_every - 1:
        proposal = _repeat(mine, crops)
        if proposal is not None:
            return proposal

    known = judgements[judgements["left_item"].isin(items) & judgements["right_item"].isin(items)] if len(judgements) else judgements
    scores = pair_scores(known, items)
    scores["tiebreak"] = rng.random(len(scores))
    # pairs without a crop that both settings have cannot be shown
    scores["ok"] = [bool(_common_crops(runs[a], runs[b], crops)) for a, b in zip(scores["item_i"], scores["item_j"])]
    scores = scores[scores["ok"]]
    if scores.empty:
        raise ValueError("no two settings share a crop: nothing to compare")
    best = scores.sort_values(["score", "n", "tiebreak"], ascending=[False, True, True]).iloc[0]
    a, b = best["item_i"], best["item_j"]
    run_a, run_b = _least_judged_run(known, runs[a], crops), _least_judged_run(known, runs[b], crops)
    crop = _least_judged_crop(known, mine, a, b, sorted(set(crops[run_a]) & set(crops[run_b])), rng)
    left, _ = _sides(known, mine, a, b, rng)
    left_run, right_run = (run_a, run_b) if left == a else (run_b, run_a)
    reason = f"score {best['score']:.3f} (P(order wrong) {best['p_wrong']:.2f}, gain {best['gain']:.2f}, n {int(best['n'])})"
    return Proposal(left_run, right_run, crop, None, reason)


def _common_crops(runs_a, runs_b, crops) -> set[str]:
    return {c for x in runs_a for c in crops.get(x, ())} & {c for y in runs_b for c in crops.get(y, ())}


def _repeat(mine: pd.DataFrame, crops: Mapping[str, Sequence[str]]) -> Proposal | None:
    repeated = set(mine["repeat_of"].dropna())
    originals = mine[mine["repeat_of"].isna() & ~mine["id"].isin(repeated)]
    for _, row in originals.sort_values(["created_at", "id"]).iterrows():
        if row["crop_id"] in crops.get(row["left_run"], ()) and row["crop_id"] in crops.get(row["right_run"], ()):
            return Proposal(row["right_run"], row["left_run"], row["crop_id"], row["id"], "repeat with sides swapped")
    return None


def _least_judged_run(known: pd.DataFrame, candidates: Sequence[str], crops) -> str:
    usable = [r for r in candidates if crops.get(r)]
    if not len(known):
        return min(usable)
    used = pd.concat([known["left_run"], known["right_run"]]).value_counts()
    return min(usable, key=lambda r: (int(used.get(r, 0)), r))


def _least_judged_crop(known, mine, a, b, options: list[str], rng) -> str:
    def n(df):
        if not len(df):
            return pd.Series(dtype=int)
        hit = ((df["left_item"] == a) & (df["right_item"] == b)) | ((df["left_item"] == b) & (df["right_item"] == a))
        return df.loc[hit, "crop_id"].value_counts()

    everyone, me = n(known), n(mine)
    draw = dict(zip(options, rng.random(len(options))))
    return min(options, key=lambda c: (int(everyone.get(c, 0)), int(me.get(c, 0)), draw[c]))


def _sides(known, mine, a, b, rng) -> tuple[str, str]:
    def left_counts(df):
        if not len(df):
            return 0, 0
        return (int(((df["left_item"] == a) & (df["right_item"] == b)).sum()),
                int(((df["left_item"] == b) & (df["right_item"] == a)).sum()))

    for a_left, b_left in (left_counts(mine), left_counts(known)):
        if a_left != b_left:
            return (a, b) if a_left < b_left else (b, a)
    return (a, b) if rng.random() < 0.5 else (b, a)
