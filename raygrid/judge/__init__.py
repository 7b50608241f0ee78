"""People as the ground truth: a paired-comparison (2AFC with a reference) judging page over a
sweep's SR crops, and the analysis of the judgements (docs/judging.md).

For the report ("what people saw"), in one call:

    people = what_people_saw(load_judgements(uri, experiment), experiment=experiment,
                             iqa_scores=..., evaluator_values=..., higher_better=...)

or piece by piece:

    judgements = load_judgements(tracking_uri, experiment)      # MLflow mirror (+ local files)
    if judgements.empty: how_to_collect(experiment, tracking_uri)
    quality = judge_quality(judgements)                          # flags, never drops
    ranking = human_ranking(judgements)                          # .table, .draws, .notes
    summary, ranks = human_asymmetry(ranking, iqa_scores)        # iqa_scores: backbone -> score
    agreement = evaluator_agreement(judgements, values, higher_better)

The app (`python -m raygrid.judge`) lives in cli/app/source/store/sync; importing this package
loads none of torch, MLflow or the web server.
"""

from raygrid.judge.agreement import evaluator_agreement, flagged_judges, human_asymmetry, judge_quality
from raygrid.judge.ranking import HumanRanking, human_ranking
from raygrid.judge.schema import CHOICES, COLUMNS, item_attributes, item_label
from raygrid.judge.section import PeopleSaw, what_people_saw


def load_judgements(tracking_uri: str, experiment: str, local_files=()):
    """Every judgement of `experiment` (the MLflow mirror on its sweep runs, plus local SQLite
    files when given), merged by id; an empty frame with the schema's columns when none exist."""
    from raygrid.judge.sync import load_judgements as _load

    return _load(tracking_uri, experiment, list(local_files))


def how_to_collect(experiment: str, tracking_uri: str | None = None) -> str:
    """The report's text when an experiment has no judgements yet."""
    uri = f" --tracking-uri {tracking_uri}" if tracking_uri else ""
    return (f"No human judgements yet. To collect them, run `python -m raygrid.judge --experiment {experiment}{uri}` "
            "and open the printed address (127.0.0.1, no network needed): each screen shows the reference crop "
            "between two SR crops of the same region from two runs; press ← (or 1) if the left one is closer to the "
            "reference, → (or 3) for the right one, ↓ (or 2) if they look the same. Several people can judge at once "
            "or one after another; afterwards `python -m raygrid.judge --experiment "
            f"{experiment}{uri} --sync` puts the judgements into MLflow, where this report reads them.")


__all__ = ["CHOICES", "COLUMNS", "HumanRanking", "PeopleSaw", "evaluator_agreement", "flagged_judges", "how_to_collect",
           "human_asymmetry", "human_ranking", "item_attributes", "item_label", "judge_quality", "load_judgements",
           "what_people_saw"]
