"""Everything the report's "what people saw" section shows, from one call (no HTML here).

    people = what_people_saw(judgements, iqa_scores=..., evaluator_values=..., higher_better=...)
    people.collected      False: show people.notes[0] (how to collect judgements)
    people.quality        per-judge flags (judge_quality)
    people.ranking        HumanRanking (.table: the human ranking with intervals)
    people.asymmetry      (summary, ranks) of human_asymmetry, or None without IQA scores
    people.agreement      evaluator_agreement table, or None without evaluator values
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from raygrid.judge.agreement import evaluator_agreement, flagged_judges, human_asymmetry, judge_quality
from raygrid.judge.ranking import HumanRanking, human_ranking


@dataclass
class PeopleSaw:
    collected: bool
    n_judgements: int = 0
    judges: int = 0
    quality: pd.DataFrame | None = None
    ranking: HumanRanking | None = None
    asymmetry: tuple[pd.DataFrame, pd.DataFrame] | None = None
    agreement: pd.DataFrame | None = None
    excluded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def what_people_saw(judgements: pd.DataFrame, *, experiment: str = "", tracking_uri: str | None = None,
                    iqa_scores: pd.Series | None = None, iqa_higher_better: bool = True,
                    evaluator_values: pd.DataFrame | None = None, higher_better: Mapping[str, bool] | None = None,
                    evaluator_backbones: Mapping[str, str | None] | None = None, exclude_flagged: bool = False,
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> PeopleSaw:
    """The section's content. Flagged judges count unless `exclude_flagged` (they are listed in
    `quality` either way). Without judgements: `collected` False and the how-to text in notes."""
    from raygrid.judge import how_to_collect

    if judgements is None or judgements.empty:
        return PeopleSaw(collected=False, notes=[how_to_collect(experiment or "<experiment>", tracking_uri)])
    quality = judge_quality(judgements)
    excluded = flagged_judges(quality) if exclude_flagged else []
    out = PeopleSaw(collected=True, n_judgements=len(judgements), judges=judgements["judge"].nunique(),
                    quality=quality, excluded=excluded)
    if excluded and set(excluded) >= set(judgements["judge"]):
        out.notes.append("every judge is flagged; nothing is left to rank with exclude_flagged")
        return out
    try:
        out.ranking = human_ranking(judgements, n_boot=n_boot, level=level, seed=seed, exclude_judges=excluded)
    except ValueError as e:
        out.notes.append(f"no human ranking: {e}")
        return out
    out.notes += out.ranking.notes
    if iqa_scores is not None:
        out.asymmetry = human_asymmetry(out.ranking, iqa_scores, iqa_higher_better=iqa_higher_better)
    if evaluator_values is not None:
        if higher_better is None:
            raise ValueError("what_people_saw: evaluator_values needs higher_better (each evaluator's direction)")
        out.agreement = evaluator_agreement(judgements, evaluator_values, higher_better, n_boot=n_boot, level=level,
                                            seed=seed, exclude_judges=excluded, evaluator_backbones=evaluator_backbones)
    return out
