"""Lineage: the runs a stage's trials start from (transfer from an optimize run's discriminator),
found in MLflow as typed records.

Each candidate run of the source stage becomes a `SourceRun`: its resolved trial config parsed
into the source trainable's config model (from the run's `raygrid.trial_config` tag; older runs
from their params) and its checkpoints. The trainable's `Lineage` (raygrid.spec.trainables)
decides on the typed configs which run a trial's rule names (one cell and seed: never a
metric-based pick across cells) and refuses a source that cannot be one (a frozen discriminator
trunk); this module applies it to the runs MLflow has, preferring runs of the current sweep
invocation, then the most recent.
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
    checkpoints: dict[str, str | None]  # "best" / "final" -> the full checkpoint's storage location
    start_time: float = 0.0  # ms since the epoch (MLflow's), to prefer the latest run of a cell

    @classmethod
    def from_mlflow(cls, row: Any) -> SourceRun | None:
        """A row of `search_trial_runs`; None if its config does not parse (not a usable source)."""
        config = _config(row)
        if config is None:
            return None
        start = row.get("start_time")
        return cls(
            run_id=row["run_id"],
            sweep_run_id=_text(row.get(f"tags.{names.TAG_SWEEP_RUN}")),
            config=config,
            checkpoints={"best": _text(row.get(f"tags.{names.TAG_CKPT_BEST}")),
                         "final": _text(row.get(f"tags.{names.TAG_CKPT_FINAL}"))},
            start_time=_timestamp(start),
        )


def source_runs(tracking_uri: str, experiment: str, lineage: Lineage) -> list[SourceRun]:
    """Every trial run of the lineage's source stage in the experiment, as typed records."""
    runs = names.search_trial_runs(tracking_uri, experiment, stage=lineage.source_stage)
    return [r for r in (SourceRun.from_mlflow(row) for _, row in runs.iterrows()) if r is not None]


def choose(stage: Stage, lineage: Lineage, runs: list[SourceRun],
           sweep_run_id: str) -> tuple[dict[int, SourceRun], list[int], dict[int, str]]:
    """For each trial of `stage` that wants a source: the run its rule names. Among the runs the
    lineage accepts that have the wanted checkpoint, runs of this sweep invocation come first,
    then the most recent. Returns ({trial index: run}, [indices of trials with no such run],
    {trial index: why the run found is refused})."""
    found, missing, refused = {}, [], {}
    for t in stage.trials:
        if not lineage.wants(t.config):
            continue
        which = lineage.checkpoint(t.config)
        fits = [r for r in runs if r.checkpoints[which] and lineage.accepts(t.config, r.config)]
        mine = [r for r in fits if r.sweep_run_id == sweep_run_id]
        fits = mine or fits
        if not fits:
            missing.append(t.index)
            continue
        pick = max(fits, key=lambda r: r.start_time)
        why = lineage.refuse(t.config, pick.config)
        if why:
            refused[t.index] = f"run {pick.run_id}: {why}"
            continue
        found[t.index] = pick
    return found, missing, refused


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


def _timestamp(value: Any) -> float:
    """MLflow's start_time column (a pandas Timestamp, or ms) as ms; 0 when unknown."""
    if hasattr(value, "timestamp"):
        try:
            return float(value.timestamp()) * 1000.0
        except (ValueError, OverflowError):  # NaT
            return 0.0
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(out) else out
