"""The human ranking of optimize settings: Davidson's Bradley–Terry model with a crossed
(judges × crops) cluster bootstrap.

Why a two-way bootstrap: judgements by one judge are correlated (a judge has a taste), and so are
judgements on one crop (a crop favours some losses). Resampling single judgements would treat
them as independent and give intervals that are too narrow. Here judges and crops are drawn with
replacement, independently, and every judgement of a drawn (judge, crop) cell enters the refit
with weight (times the judge was drawn) × (times the crop was drawn) — the "pigeonhole"
bootstrap for crossed random effects, which errs on the wide side. With a single judge (or a
single crop) only the other level is resampled, and the notes say so. scipy.stats.bootstrap
does the drawing and the percentile intervals; the statistic refits every resample at once
(`bradley_terry.fit` is batched).

Strengths are log-strengths centred to mean 0 over the ranked items; rank 1 = most preferred.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from raygrid.judge import bradley_terry as bt
from raygrid.judge.schema import OUTCOME, item_attributes, validate


@dataclass
class Design:
    """Judgements coded for fitting: counts[judge, crop, pair, outcome]."""

    items: list[str]
    judges: list[str]
    crops: list[str]
    counts: np.ndarray  # (J, C, P, 3)

    @property
    def pairs(self) -> np.ndarray:
        return bt.all_pairs(len(self.items))

    def aggregate(self, judge_weight: np.ndarray | None = None, crop_weight: np.ndarray | None = None) -> np.ndarray:
        """(..., P, 3) counts with per-judge and per-crop multiplicities (batched)."""
        jw = np.ones(len(self.judges)) if judge_weight is None else judge_weight
        cw = np.ones(len(self.crops)) if crop_weight is None else crop_weight
        return np.einsum("...j,...c,jcpo->...po", jw, cw, self.counts)


def design(judgements: pd.DataFrame, items: Iterable[str] | None = None) -> Design:
    validate(judgements)
    items = sorted(set(judgements["left_item"]) | set(judgements["right_item"])) if items is None else list(items)
    judges = sorted(judgements["judge"].unique())
    crops = sorted(judgements["crop_id"].unique())
    index = {k: i for i, k in enumerate(items)}
    keep = judgements["left_item"].isin(index) & judgements["right_item"].isin(index)
    df = judgements[keep]
    k = len(items)
    counts = np.zeros((len(judges), len(crops), k * (k - 1) // 2, 3))
    if len(df):
        pair, rel = bt.pair_counts(df["left_item"].map(index).to_numpy(), df["right_item"].map(index).to_numpy(),
                                   df["choice"].map(OUTCOME).to_numpy(), k)
        j = pd.Categorical(df["judge"], categories=judges).codes
        c = pd.Categorical(df["crop_id"], categories=crops).codes
        np.add.at(counts, (j, c, pair, rel), 1)
    return Design(items, judges, crops, counts)


def _multiplicity(sample: np.ndarray, n: int) -> np.ndarray:
    sample = np.asarray(sample).astype(int)
    return (sample[..., :, None] == np.arange(n)).sum(axis=-2).astype(float)


def crossed_bootstrap(d: Design, statistic, n_boot: int, level: float, seed: int, batch: int = 250):
    """scipy.stats.bootstrap over the judge and crop levels that have ≥ 2 clusters.

    `statistic(judge_weight (..., J), crop_weight (..., C)) -> (M, ...)`. Returns
    (the scipy result or None when neither level can be resampled, list of resampled levels)."""
    levels = [(name, n) for name, n in (("judges", len(d.judges)), ("crops", len(d.crops))) if n >= 2]
    if not levels or n_boot <= 0:
        return None, [name for name, _ in levels]

    def stat(*samples, axis=-1):
        weights = {name: _multiplicity(s, n) for (name, n), s in zip(levels, samples)}
        return statistic(weights.get("judges"), weights.get("crops"))

    data = tuple(np.arange(n) for _, n in levels)
    res = stats.bootstrap(data, stat, n_resamples=n_boot, batch=batch, vectorized=True, paired=False,
                          method="percentile", confidence_level=level, rng=np.random.default_rng(seed))
    return res, [name for name, _ in levels]


@dataclass
class HumanRanking:
    """One row per ranked item in `table` (best first); `draws` are the bootstrap draws of the
    centred log-strengths (B × K, items in `items` order) for statistics derived from them."""

    table: pd.DataFrame
    items: list[str]
    theta: np.ndarray
    draws: np.ndarray | None
    nu: float
    n_judgements: int
    judges: list[str]
    crops: list[str]
    resampled: list[str]
    level: float
    n_boot: int
    notes: list[str] = field(default_factory=list)


def human_ranking(judgements: pd.DataFrame, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                  exclude_judges: Iterable[str] = (), prior_sd: float = bt.PRIOR_SD) -> HumanRanking:
    """Davidson–Bradley–Terry strengths of the judged settings with crossed-bootstrap intervals.

    `table` columns: rank, item, label, backbone, discriminator, adv_weight, strength (centred
    log-strength), strength_lo/hi, rank_lo/hi (percentile intervals of the bootstrap ranks),
    n (comparisons), wins, ties, losses. `exclude_judges` leaves out judges (e.g. flagged ones);
    by default everyone counts and the flags are reported beside the ranking.
    """
    notes: list[str] = []
    exclude = set(exclude_judges)
    df = judgements[~judgements["judge"].isin(exclude)] if exclude else judgements
    if exclude:
        notes.append(f"left out judge(s): {', '.join(sorted(exclude))}")
    d = design(df)
    k = len(d.items)
    if k < 2:
        raise ValueError(f"a ranking needs judgements of at least 2 settings; these judgements have {k}")
    ties = bool(d.counts[..., 2].sum() > 0)
    point = bt.fit(d.aggregate(), k, d.pairs, ties=ties, prior_sd=prior_sd)

    def refit(jw, cw):
        f = bt.fit(d.aggregate(jw, cw), k, d.pairs, ties=ties, prior_sd=prior_sd)
        return np.moveaxis(f.theta, -1, 0)

    res, resampled = crossed_bootstrap(d, refit, n_boot, level, seed)
    draws = None
    lo = hi = rank_lo = rank_hi = np.full(k, np.nan)
    if res is None:
        notes.append("one judge and one crop: no interval (nothing to resample)")
    else:
        draws = np.moveaxis(res.bootstrap_distribution, 0, -1)  # (B, K)
        lo, hi = res.confidence_interval.low, res.confidence_interval.high
        ranks = stats.rankdata(-draws, axis=1)
        a = (1 - level) / 2
        rank_lo, rank_hi = np.quantile(ranks, a, axis=0), np.quantile(ranks, 1 - a, axis=0)
        if len(resampled) < 2:
            notes.append(f"only the {resampled[0]} are resampled (a single "
                         f"{'crop' if resampled == ['judges'] else 'judge'}): the interval ignores that source of variation")
    agg = d.aggregate()
    wins, losses, n_ties = np.zeros(k), np.zeros(k), np.zeros(k)
    for p, (i, j) in enumerate(d.pairs):
        wins[i] += agg[p, 0]; losses[i] += agg[p, 1]; wins[j] += agg[p, 1]; losses[j] += agg[p, 0]
        n_ties[i] += agg[p, 2]; n_ties[j] += agg[p, 2]
    table = item_attributes(d.items).drop(columns="point")
    table["strength"] = point.theta
    table["strength_lo"], table["strength_hi"] = lo, hi
    table["rank"] = stats.rankdata(-point.theta, method="min").astype(int)
    table["rank_lo"], table["rank_hi"] = rank_lo, rank_hi
    table["n"] = (wins + losses + n_ties).astype(int)
    table["wins"], table["ties"], table["losses"] = wins.astype(int), n_ties.astype(int), losses.astype(int)
    table = table.sort_values(["rank", "label"]).reset_index(drop=True)
    table = table[["rank", "item", "label", "backbone", "discriminator", "adv_weight", "strength", "strength_lo",
                   "strength_hi", "rank_lo", "rank_hi", "n", "wins", "ties", "losses"]]
    return HumanRanking(table=table, items=d.items, theta=point.theta, draws=draws,
                        nu=float(point.nu) if ties else 0.0, n_judgements=int(agg.sum()), judges=d.judges,
                        crops=d.crops, resampled=resampled, level=level, n_boot=n_boot, notes=notes)
