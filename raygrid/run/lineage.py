"""Lineage: the runs a stage's trials start from (transfer from an optimize run's discriminator),
found in MLflow as typed records.

Each candidate run of the source stage becomes a `SourceRun`: its resolved trial config parsed
into the source trainable's config model (from the run's `raygrid.trial_config` tag; older runs
from their params), its checkpoints and the values they were chosen by. The trainable's
`Lineage` (raygrid.spec.trainables) decides on the typed configs which runs can be a trial's
source; this module picks the best of them, preferring runs of the current sweep invocation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from raygrid import io
from raygrid.space import Stage
from raygrid.spec import mlflow as names
from raygrid.spec.trainables import Lineage, get


@dataclass(frozen=True)
class SourceRun:
    run_id: str
    sweep_run_id: str | None
    config: BaseModel  # the run's resolved trial config, typed
    checkpoints: dict[str, str | None]  # "best" / "last" -> the full checkpoint's storage location
    scores: dict[str, float]  # "best" -> the value its best checkpoint was chosen by; "last" -> last logged value

    @classmethod
    def from_mlflow(cls, row: Any, metric: str) -> SourceRun | None:
        """A row of `search_trial_runs`; None if its config does not parse (not a usable source)."""
        config = _config(row)
        if config is None:
            return None
        return cls(
            run_id=row["run_id"],
            sweep_run_id=_text(row.get(f"tags.{names.TAG_SWEEP_RUN}")),
            config=config,
            checkpoints={"best": _text(row.get(f"tags.{names.TAG_CKPT_BEST}")),
                         "last": _text(row.get(f"tags.{names.TAG_CKPT_FINAL}"))},
            scores={"best": _number(row.get(f"tags.{names.TAG_BEST_PREFIX}{metric}")),
                    "last": _number(row.get(f"metrics.{metric}"))},
        )


def source_runs(tracking_uri: str, experiment: str, lineage: Lineage, metric: str) -> list[SourceRun]:
    """Every trial run of the lineage's source stage in the experiment, as typed records."""
    runs = names.search_trial_runs(tracking_uri, experiment, stage=lineage.source_stage)
    return [r for r in (SourceRun.from_mlflow(row, metric) for _, row in runs.iterrows()) if r is not None]


def choose(stage: Stage, lineage: Lineage, runs: list[SourceRun], sweep_run_id: str,
           mode: str) -> tuple[dict[int, SourceRun], list[int]]:
    """For each trial of `stage` that wants a source: the run it starts from. Among the runs the
    lineage accepts that have the wanted checkpoint, runs of this sweep invocation come first;
    the best score (by `mode`) wins, the first run when none has a score.
    Returns ({trial index: run}, [indices of trials with no such run])."""
    found, missing = {}, []
    for t in stage.trials:
        if not lineage.wants(t.config):
            continue
        which = lineage.pick(t.config)
        fits = [r for r in runs if r.checkpoints[which] and lineage.accepts(t.config, r.config)]
        mine = [r for r in fits if r.sweep_run_id == sweep_run_id]
        fits = mine or fits
        if not fits:
            missing.append(t.index)
            continue
        scored = [r for r in fits if not math.isnan(r.scores[which])]
        pick = (max if mode == "max" else min)(scored, key=lambda r: r.scores[which]) if scored else fits[0]
        found[t.index] = pick
    return found, missing


def checkpoint_file(run: SourceRun, which: str) -> str:
    """The checkpoint's state file (what the trial loads)."""
    return io.join(run.checkpoints[which], "state.pt")


def _config(row: Any) -> BaseModel | None:
    raw = _text(row.get(f"tags.{names.TAG_TRIAL_CONFIG}"))
    try:
        if raw is not None:
            data = json.loads(raw)
        else:  # runs logged before the config tag: rebuild the nested config from the flat params
            data = {}
            for col, value in row.items():
                if col.startswith("params.") and isinstance(value, str):
                    _set(data, col[len("params."):].split("."), _param_value(value))
        return get(data.get("trainable", "")).config.model_validate(data)
    except (ValueError, ValidationError, TypeError):
        return None


def _param_value(text: str) -> Any:
    # raygrid.spec.mlflow.flatten wrote str() of scalars and JSON of lists
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set(node: dict[str, Any], parts: list[str], value: Any) -> None:
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
