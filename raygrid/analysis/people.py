"""What people saw: the human judgements of a sweep against the rest of the analysis.

The judgements come from raygrid.judge (the MLflow mirror on the sweep runs, read by
raygrid.analysis.load.judgements); the ranking, its intervals, the asymmetry against it and the
per-evaluator agreement are raygrid.judge's (`what_people_saw`). This module supplies what the
judge cannot know: each backbone's IQA score (the assessment table's mean SRCC over the
benchmarks every backbone has, of the α/β variant the optimize runs were trained with), each
judged run's evaluator values at the common step (its test/ values), and each evaluator's
direction and backbone from the evaluator records.
"""

from __future__ import annotations

import pandas as pd

from raygrid.judge import PeopleSaw, what_people_saw


def iqa_scores(assessment: pd.DataFrame, variant: str = "uniform") -> tuple[pd.Series, list[str]]:
    """backbone -> mean SRCC over the benchmarks every backbone of `variant` has."""
    sub = assessment[assessment["variant"] == variant]
    if sub.empty:
        return pd.Series(dtype=float), []
    wide = sub.pivot_table(index="backbone", columns="benchmark", values="srcc", aggfunc="mean")
    common = [b for b in wide.columns if wide[b].notna().all()]
    return wide[common].mean(axis=1), common


def people(judgements: pd.DataFrame, *, experiment: str, tracking_uri: str, assessment: pd.DataFrame,
           run_values: pd.DataFrame, evaluators: pd.DataFrame, variant: str = "uniform", n_boot: int = 2000,
           seed: int = 0, level: float = 0.95) -> PeopleSaw:
    """raygrid.judge.what_people_saw with the sweep's IQA scores, evaluator values and records.

    run_values: tables.run_values (one row per compared optimize run, `test/<evaluator>` columns);
    evaluators: tables.evaluator_table (evaluator, higher_better, evaluator_backbone)."""
    if judgements is None or judgements.empty:
        return what_people_saw(judgements, experiment=experiment, tracking_uri=tracking_uri)
    scores, _ = iqa_scores(assessment, variant)
    values = None
    higher = backbones = None
    if len(run_values) and len(evaluators):
        known = [e for e in evaluators["evaluator"] if f"test/{e}" in run_values]
        values = run_values.set_index("run_id")[[f"test/{e}" for e in known]]
        values.columns = known
        info = evaluators.set_index("evaluator")
        higher = {e: bool(info.at[e, "higher_better"]) for e in known}
        backbones = {e: (info.at[e, "evaluator_backbone"] if isinstance(info.at[e, "evaluator_backbone"], str) else None)
                     for e in known}
    return what_people_saw(judgements, experiment=experiment, tracking_uri=tracking_uri,
                           iqa_scores=scores if len(scores) else None, evaluator_values=values, higher_better=higher,
                           evaluator_backbones=backbones, n_boot=n_boot, seed=seed, level=level)
