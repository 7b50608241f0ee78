"""What the human judgements say about the rest of the study (pure functions on DataFrames).

- `judge_quality`: per judge, the two flags — answering faster than a floor (median time), and
  contradicting their own repeated comparisons too often. Flagged judges are reported, never
  dropped here; `ranking.human_ranking(exclude_judges=...)` leaves them out on request.
- `human_asymmetry`: the paper's asymmetry statistic against the human ranking — each fidelity
  backbone's IQA rank vs its human-judged optimization rank (Spearman and Kendall), with an
  interval from the bootstrap draws of the human ranking (the IQA scores are taken as given).
- `evaluator_agreement`: per evaluator, the fraction of judged pairs (excluding "same") in which
  the evaluator prefers the run the person chose, with a crossed judges × crops bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from raygrid.judge.ranking import HumanRanking, crossed_bootstrap, design
from raygrid.judge.schema import NO_DISCRIMINATOR, item_attributes, validate

MIN_MEDIAN_MS = 1000  # below this median answer time a judge cannot have looked at three images
MAX_CONTRADICTION = 1 / 3  # random answering contradicts 2/3 of repeats
MIN_REPEATS = 3  # fewer repeats say nothing about consistency


def _winner_run(row) -> str:
    return {"left": row["left_run"], "right": row["right_run"]}.get(row["choice"], "same")


def judge_quality(judgements: pd.DataFrame, *, min_median_ms: float = MIN_MEDIAN_MS,
                  max_contradiction: float = MAX_CONTRADICTION, min_repeats: int = MIN_REPEATS) -> pd.DataFrame:
    """One row per judge: n, sittings, median_ms, repeats, contradictions, contradiction_rate,
    left_rate, same_rate, flag_fast, flag_inconsistent, flags (text; "" when none).

    A repeat contradicts its original when the outcome in terms of runs differs (another run
    preferred, or "same" against a preference); its rate is flagged above `max_contradiction`
    once the judge has at least `min_repeats` repeats.
    """
    validate(judgements)
    by_id = judgements.set_index("id")
    rows = []
    for judge, g in judgements.groupby("judge", sort=True):
        rep = g[g["repeat_of"].notna() & g["repeat_of"].isin(by_id.index)]
        contradictions = sum(_winner_run(r) != _winner_run(by_id.loc[r["repeat_of"]]) for _, r in rep.iterrows())
        median = float(pd.to_numeric(g["elapsed_ms"], errors="coerce").median())
        rate = contradictions / len(rep) if len(rep) else np.nan
        fast = bool(np.isfinite(median) and median < min_median_ms)
        inconsistent = bool(len(rep) >= min_repeats and rate > max_contradiction)
        flags = []
        if fast:
            flags.append(f"median answer {median:.0f} ms < {min_median_ms:.0f} ms")
        if inconsistent:
            flags.append(f"contradicts {contradictions}/{len(rep)} of own repeats (> {max_contradiction:.0%})")
        rows.append({"judge": judge, "n": len(g), "sittings": g["sitting"].nunique(), "median_ms": median,
                     "repeats": len(rep), "contradictions": int(contradictions), "contradiction_rate": rate,
                     "left_rate": float((g["choice"] == "left").mean()), "same_rate": float((g["choice"] == "same").mean()),
                     "flag_fast": fast, "flag_inconsistent": inconsistent, "flags": "; ".join(flags)})
    return pd.DataFrame(rows, columns=["judge", "n", "sittings", "median_ms", "repeats", "contradictions",
                                       "contradiction_rate", "left_rate", "same_rate", "flag_fast",
                                       "flag_inconsistent", "flags"])


def flagged_judges(quality: pd.DataFrame) -> list[str]:
    return list(quality.loc[quality["flag_fast"] | quality["flag_inconsistent"], "judge"])


# ---------------------------------------------------------------------------------------------
# The asymmetry against the human ranking
# ---------------------------------------------------------------------------------------------


def human_settings(attrs: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """(label, item mask) of the optimization settings the asymmetry is computed for: every
    judged setting, no adversarial loss, any adversarial loss, and each discriminator."""
    disc = attrs["discriminator"].fillna(NO_DISCRIMINATOR)
    out = [("all judged settings", pd.Series(True, index=attrs.index)), ("no adversarial loss", disc == NO_DISCRIMINATOR),
           ("adversarial loss (all discriminators, weights)", disc != NO_DISCRIMINATOR)]
    for d in sorted(set(disc) - {NO_DISCRIMINATOR}):
        out.append((f"adversarial: {d}", disc == d))
    return [(label, mask) for label, mask in out if mask.any()]


def _ranks_best_first(x: np.ndarray, higher_better: bool = True) -> np.ndarray:
    return stats.rankdata(-x if higher_better else x, axis=-1)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(-1) / np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))


def human_asymmetry(ranking: HumanRanking, iqa_scores: pd.Series, *, iqa_higher_better: bool = True,
                    level: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank correlation of each fidelity backbone's IQA rank with its human optimization rank.

    iqa_scores: backbone -> IQA score (e.g. mean SRCC over benchmarks; higher = better unless
    `iqa_higher_better=False`). Human score of a backbone in a setting: the mean strength of the
    judged items of that backbone in the setting (a mean over discriminator × weight settings,
    seeds pooled). Positive correlation: the better IQA measure is also the better loss.
    Returns (summary: one row per setting with spearman/kendall, intervals from the ranking's
    bootstrap draws, exact permutation p-values; ranks: one row per setting × backbone).
    """
    level = ranking.level if level is None else level
    attrs = item_attributes(ranking.items)
    iqa = pd.to_numeric(iqa_scores, errors="coerce")
    summary, ranks = [], []
    a = (1 - level) / 2
    for label, mask in human_settings(attrs):
        sub = attrs[mask]
        backbones = sorted(b for b in set(sub["backbone"].dropna()) if b in iqa.index and np.isfinite(iqa[b]))
        missing = sorted(set(sub["backbone"].dropna()) - set(backbones))
        idx = [[i for i in sub.index if sub.at[i, "backbone"] == b] for b in backbones]
        human = np.array([ranking.theta[ix].mean() for ix in idx]) if backbones else np.zeros(0)
        x = iqa[backbones].to_numpy(float) * (1 if iqa_higher_better else -1)
        row = {"setting": label, "n_backbones": len(backbones), "backbones": ", ".join(backbones),
               "missing": ", ".join(f"{b} (no IQA score)" for b in missing), "spearman": np.nan,
               "spearman_lo": np.nan, "spearman_hi": np.nan, "spearman_p": np.nan, "kendall": np.nan,
               "kendall_lo": np.nan, "kendall_hi": np.nan, "kendall_p": np.nan, "level": level}
        if len(backbones) >= 3:
            res_s = stats.spearmanr(x, human)
            res_k = stats.kendalltau(x, human)
            row["spearman"], row["kendall"] = float(res_s.statistic), float(res_k.statistic)
            perm = stats.permutation_test((x, human), lambda u, v: stats.spearmanr(u, v).statistic,
                                          permutation_type="pairings", n_resamples=np.inf if len(x) <= 8 else 9999,
                                          rng=np.random.default_rng(0))
            row["spearman_p"], row["kendall_p"] = float(perm.pvalue), float(res_k.pvalue)
            if ranking.draws is not None:
                hb = np.stack([ranking.draws[:, ix].mean(axis=1) for ix in idx], axis=1)  # (B, n_backbones)
                sp = _spearman_rows(np.broadcast_to(x, hb.shape), hb)
                kt = np.array([stats.kendalltau(x, h).statistic for h in hb])
                row["spearman_lo"], row["spearman_hi"] = np.nanquantile(sp, [a, 1 - a])
                row["kendall_lo"], row["kendall_hi"] = np.nanquantile(kt, [a, 1 - a])
        summary.append(row)
        iqa_rank = _ranks_best_first(x) if len(x) else x
        human_rank = _ranks_best_first(human) if len(human) else human
        for n, b in enumerate(backbones):
            ranks.append({"setting": label, "backbone": b, "iqa_score": float(iqa[b]), "iqa_rank": float(iqa_rank[n]),
                          "human_strength": float(human[n]), "human_rank": float(human_rank[n]),
                          "rank_shift": float(human_rank[n] - iqa_rank[n]), "n_settings": len(idx[n])})
    return pd.DataFrame(summary), pd.DataFrame(ranks)


# ---------------------------------------------------------------------------------------------
# Evaluators against people
# ---------------------------------------------------------------------------------------------


def evaluator_agreement(judgements: pd.DataFrame, values: pd.DataFrame, higher_better: Mapping[str, bool], *,
                        n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                        exclude_judges: Iterable[str] = (),
                        evaluator_backbones: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Per evaluator: the fraction of judged pairs (not "same") where it prefers the chosen run.

    values: evaluator scores per run — index run_id (a run's value, e.g. its val/<evaluator> at
    the judged step) or a MultiIndex (run_id, crop_id) for per-crop scores; one column per
    evaluator. higher_better: evaluator -> its direction. A pair the evaluator scores equal
    counts one half. Pairs where either run has no value are left out for that evaluator, and
    so are pairs with a run trained on the evaluator's own features: `evaluator_backbones` maps an
    evaluator to the backbone it is built on (a run whose fidelity.backbone is that one is not
    judged by it; the study's rule for every evaluator).
    Columns: evaluator, higher_better, backbone, n_pairs, agreement, lo, hi, evaluator_ties,
    excluded_same_backbone, level.
    """
    validate(judgements)
    df = judgements[~judgements["judge"].isin(set(exclude_judges)) & (judgements["choice"] != "same")]
    evaluators = [e for e in values.columns]
    unknown = [e for e in evaluators if e not in higher_better]
    if unknown:
        raise ValueError(f"evaluator_agreement: no direction (higher_better) for {', '.join(map(str, unknown))}")
    per_crop = isinstance(values.index, pd.MultiIndex)

    def lookup(side: str) -> np.ndarray:
        keys = (list(zip(df[f"{side}_run"], df["crop_id"])) if per_crop else list(df[f"{side}_run"]))
        return values.reindex(keys).to_numpy(float)

    left, right = lookup("left"), lookup("right")  # (N, E)
    sign = np.array([1.0 if higher_better[e] else -1.0 for e in evaluators])
    diff = (left - right) * sign  # > 0: the evaluator prefers the left run
    chose_left = (df["choice"] == "left").to_numpy()[:, None]
    agree = np.where(diff == 0, 0.5, (diff > 0) == chose_left).astype(float)
    valid = np.isfinite(diff)
    own = np.zeros_like(valid)
    backbones = dict(evaluator_backbones or {})
    if backbones:
        lb = item_attributes(df["left_item"])["backbone"].to_numpy()
        rb = item_attributes(df["right_item"])["backbone"].to_numpy()
        for n, e in enumerate(evaluators):
            if backbones.get(e):
                own[:, n] = (lb == backbones[e]) | (rb == backbones[e])
    valid &= ~own
    agree = np.where(valid, agree, 0.0)

    d = design(df) if len(df) else None
    rows = []
    if d is None:
        return pd.DataFrame([{"evaluator": e, "higher_better": bool(higher_better[e]), "backbone": backbones.get(e),
                              "n_pairs": 0, "agreement": np.nan, "lo": np.nan, "hi": np.nan, "evaluator_ties": 0,
                              "excluded_same_backbone": 0, "level": level} for e in evaluators])
    j = pd.Categorical(df["judge"], categories=d.judges).codes
    c = pd.Categorical(df["crop_id"], categories=d.crops).codes
    sums = np.zeros((len(d.judges), len(d.crops), len(evaluators)))
    counts = np.zeros_like(sums)
    np.add.at(sums, (j, c), agree)
    np.add.at(counts, (j, c), valid.astype(float))

    def fraction(jw, cw):
        jw = np.ones(len(d.judges)) if jw is None else jw
        cw = np.ones(len(d.crops)) if cw is None else cw
        num = np.einsum("...j,...c,jce->...e", jw, cw, sums)
        den = np.einsum("...j,...c,jce->...e", jw, cw, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.moveaxis(num / den, -1, 0)

    point = fraction(None, None)
    res, _ = crossed_bootstrap(d, fraction, n_boot, level, seed)
    for n, e in enumerate(evaluators):
        lo = hi = np.nan
        if res is not None:
            dist = res.bootstrap_distribution[n]
            a = (1 - level) / 2
            if np.isfinite(dist).any():
                lo, hi = np.nanquantile(dist, [a, 1 - a])
        rows.append({"evaluator": e, "higher_better": bool(higher_better[e]), "backbone": backbones.get(e),
                     "n_pairs": int(valid[:, n].sum()), "agreement": float(point[n]), "lo": float(lo), "hi": float(hi),
                     "evaluator_ties": int((valid[:, n] & (diff[:, n] == 0)).sum()),
                     "excluded_same_backbone": int(own[:, n].sum()), "level": level})
    return pd.DataFrame(rows)
