"""Reading a sweep back from MLflow into pandas: `load_sweep` → `SweepData`.

Everything here reads MLflow only (`mlflow.search_runs`, the sweep run's `plan.json`, metric
histories and the `meta.json` of checkpoint artifacts), so it works on a finished or a partial
sweep, on a local store or on a tracking server.

    load_sweep()    one row per trial: planned-but-not-run, failed, stopped, finished

- plan.json: the plans of the sweep runs are merged (trial lists unioned by trial key); a planned
  grid trial that never ran, failed or is still running keeps its row (state "not run"/"failed"/
  "running", NaN values), so the tables in `raygrid.analysis.asymmetry` can count it per cell.
- Duplicates: without a sweep run id, a trial re-run by a later invocation keeps its latest
  successful run (`_dedupe`); the superseded runs are counted in `SweepData.notes`.
- Values: with checkpoint="best", the val/* and test/* metrics of optimize and transfer runs are
  the values at the step of the trial's best checkpoint (its `meta.json`, else the metric
  histories; a run without one keeps its last logged values); with "final", the last logged values.
- Parsed columns: backbone, variant, benchmark, discriminator, adv_weight, init, kind, train_set,
  seed, plus one `axis:<name>` column per extra axis of a space.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygrid.spec import mlflow as tracking

STAGES = ("assess", "optimize", "transfer")
OK_STATES = ("finished", "stopped")  # trials whose values enter the tables
NOT_RUN = "not run"

# Known axes of each stage: they become named columns; any other axis of a space (a linked
# "protocol", a varied alpha_beta, generator, ...) becomes an extra grouping column of its own.
CANONICAL_AXES = {
    "assess": {"fidelity.backbone", "benchmark", "fit_on", "fidelity.alpha_beta"},
    "optimize": {"fidelity.backbone", "adversarial.discriminator", "loss.adversarial_weight"},
    "transfer": {"model.backbone", "model.init", "model.kind", "data.train", "data.test"},
}
# The scheduler metric of a stage when the plan is not available (the defaults of the spaces).
DEFAULT_SELECTION = {"optimize": ("val/psnr_y", "max"), "transfer": ("val/srcc", "max"), "assess": ("abs_srcc", "max")}


# =============================================================================================
# Reading MLflow
# =============================================================================================


@dataclass
class SweepData:
    """Every trial of a sweep (or of every sweep of an experiment) as one DataFrame.

    `trials` columns: stage, trial_key, run_id (None when not run), state, seed, point (dict),
    `params.*` (strings, as MLflow stores them), `metrics.*` (at `checkpoint`, see `value_step`
    and `value_source`), `tags.*`, plus parsed columns per stage (backbone, benchmark, ...).
    """

    experiment: str
    tracking_uri: str
    sweep_run_ids: list[str]
    checkpoint: str
    trials: pd.DataFrame
    plan: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> plan.json stage entry
    notes: list[str] = field(default_factory=list)

    def stage(self, name: str) -> pd.DataFrame:
        if self.trials.empty:
            return self.trials
        return self.trials[self.trials["stage"] == name].reset_index(drop=True)

    def selection(self, stage: str) -> tuple[str, str]:
        """(metric, mode) the stage's scheduler ranks checkpoints by."""
        sched = (self.plan.get(stage) or {}).get("scheduler") or {}
        if sched.get("metric"):
            return sched["metric"], sched.get("mode", "max")
        return DEFAULT_SELECTION[stage]


def load_sweep(experiment: str, tracking_uri: str | None = None, sweep_run_id: str | None = None,
               checkpoint: str = "best") -> SweepData:
    """Read a sweep back from MLflow.

    sweep_run_id: one invocation (its trial runs and its plan); None = every trial run of the
    experiment, deduplicated by trial key (a trial re-run by a later invocation keeps its latest
    successful run) and the union of the plans of every sweep run.
    checkpoint: "best" — optimize/transfer values at the step of the trial's best checkpoint (the
    stage's scheduler metric, tag `raygrid.best.<metric>`); "final" — the last logged values.
    """
    import mlflow

    if checkpoint not in ("best", "final"):
        raise ValueError(f"checkpoint must be 'best' or 'final', not {checkpoint!r}")
    uri = tracking_uri or mlflow.get_tracking_uri()
    client = tracking.client(uri)
    if client.get_experiment_by_name(experiment) is None:
        raise LookupError(f"no MLflow experiment named {experiment!r} in {uri}")
    notes: list[str] = []

    runs = tracking.search_trial_runs(uri, experiment, sweep_run_id=sweep_run_id)
    sweeps = _sweep_runs(uri, experiment, sweep_run_id)
    plan = _read_plans(uri, sweeps, notes)

    rows = [_run_row(r) for _, r in runs.iterrows()] if len(runs) else []
    observed = pd.DataFrame(rows)
    observed, superseded = _dedupe(observed)
    if superseded:
        notes.append(f"{superseded} older run(s) of trials that ran again later were superseded "
                     "(same trial key; the latest successful run is used).")
    planned = _planned_rows(plan, observed)
    trials = pd.concat([observed, planned], ignore_index=True) if len(planned) else observed
    if trials.empty:
        trials = pd.DataFrame(columns=["stage", "trial_key", "run_id", "state", "seed", "point"])
    else:
        trials = _with_values(client, uri, trials, checkpoint, plan, notes)
        trials = _parse_columns(trials)
    return SweepData(experiment, uri, [s["run_id"] for s in sweeps], checkpoint, trials, plan, notes)


def _sweep_runs(uri: str, experiment: str, sweep_run_id: str | None) -> list[dict[str, Any]]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    filt = "tags.`raygrid.kind` = 'sweep'"
    df = mlflow.search_runs(experiment_names=[experiment], filter_string=filt, max_results=10000,
                            output_format="pandas", order_by=["attributes.start_time ASC"])
    out = [{"run_id": r["run_id"], "status": r["status"]} for _, r in df.iterrows()]
    if sweep_run_id:
        out = [s for s in out if s["run_id"] == sweep_run_id] or [{"run_id": sweep_run_id, "status": "?"}]
    return out


@contextlib.contextmanager
def quiet_downloads():
    """MLflow draws a progress bar per artifact download; a report makes dozens."""
    old = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old


def download_artifact(uri: str, run_id: str, path: str, dst_dir: str) -> str:
    """A run's artifact into dst_dir (raises if it does not exist)."""
    import mlflow

    with quiet_downloads():
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst_dir,
                                                   tracking_uri=uri)


def download_text(uri: str, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory(prefix="raygrid-art-") as tmp:
        return Path(download_artifact(uri, run_id, path, tmp)).read_text()


def _read_plans(uri: str, sweeps: list[dict[str, Any]], notes: list[str]) -> dict[str, dict[str, Any]]:
    """Merge the stages of every sweep run's plan.json; trial lists are unioned by trial key."""
    merged: dict[str, dict[str, Any]] = {}
    for s in sweeps:
        try:
            plan = json.loads(download_text(uri, s["run_id"], "plan.json"))
        except Exception:  # noqa: BLE001 — an older or foreign sweep run: no plan, no "not run" rows
            notes.append(f"sweep run {s['run_id']} has no readable plan.json: trials that never started "
                         "cannot be listed as missing for it.")
            continue
        for st in plan.get("stages", []):
            entry = merged.setdefault(st["name"], {**st, "trial_list": []})
            known = {t["key"] for t in entry["trial_list"]}
            entry["trial_list"] += [t for t in st.get("trial_list", []) if t["key"] not in known]
    return merged


def _state(row: pd.Series) -> str:
    outcome = row.get("tags.raygrid.outcome")
    if isinstance(outcome, str) and outcome:
        return outcome
    status = row.get("status")
    return {"RUNNING": "running", "SCHEDULED": "running", "FAILED": "failed", "KILLED": "failed"}.get(status, "finished")


def _run_row(r: pd.Series) -> dict[str, Any]:
    row = {k: v for k, v in r.items() if k.startswith(("params.", "metrics.", "tags."))}
    try:
        point = json.loads(r.get("tags.raygrid.point") or "{}")
    except (TypeError, json.JSONDecodeError):
        point = {}
    row.update({
        "stage": r.get("tags.raygrid.stage"), "trial_key": r.get("tags.raygrid.trial_key"),
        "run_id": r["run_id"], "state": _state(r), "point": point, "start_time": r.get("start_time"),
        "status": r.get("status"),
    })
    return row


_STATE_ORDER = {"finished": 0, "stopped": 0, "running": 1, "failed": 2}


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    if df.empty:
        return df, 0
    df = df.assign(_pref=df["state"].map(_STATE_ORDER).fillna(3))
    df = df.sort_values(["_pref", "start_time"], ascending=[True, False], kind="stable")
    kept = df.drop_duplicates(["stage", "trial_key"], keep="first")
    return kept.drop(columns="_pref").reset_index(drop=True), len(df) - len(kept)


def _planned_rows(plan: dict[str, dict[str, Any]], observed: pd.DataFrame) -> pd.DataFrame:
    """Rows for planned grid trials with no run. Optuna stages are skipped: their trials are
    samples, not the listed grid points."""
    seen = set(zip(observed["stage"], observed["trial_key"])) if len(observed) else set()
    rows = []
    for stage, entry in plan.items():
        if entry.get("search"):
            continue
        for t in entry.get("trial_list", []):
            if (stage, t["key"]) in seen:
                continue
            row = {f"params.{k}": v for k, v in tracking.flatten(t["config"]).items()}
            row.update({"stage": stage, "trial_key": t["key"], "run_id": None, "state": NOT_RUN,
                        "point": t.get("point", {}), "start_time": None, "status": None})
            rows.append(row)
    return pd.DataFrame(rows)


# -- values at the best checkpoint ---------------------------------------------------------------


def _with_values(client, uri: str, trials: pd.DataFrame, checkpoint: str, plan: dict, notes: list[str]) -> pd.DataFrame:
    """Fill `value_step`/`value_source`; with checkpoint="best", replace the val/* and test/*
    metrics of optimize and transfer runs by their values at the best checkpoint's step.
    Losses and throughput stay last values (they describe training, not a checkpoint)."""
    trials = trials.copy()
    step_col = "metrics.progress/step"
    trials["value_step"] = trials.get(step_col, np.nan)
    trials["value_source"] = np.where(trials["run_id"].notna(), "last logged", "")
    if checkpoint != "best":
        return trials
    fallback = 0
    for i, row in trials.iterrows():
        if row["stage"] not in ("optimize", "transfer") or row["state"] not in OK_STATES:
            continue  # failed/running trials do not enter the tables
        keys = [c[len("metrics."):] for c in trials.columns
                if c.startswith(("metrics.val/", "metrics.test/")) and pd.notna(row[c])]
        got = _best_values(client, uri, row, keys)
        if got is None:
            fallback += 1
            continue
        step, values, source = got
        for k, v in values.items():
            trials.at[i, f"metrics.{k}"] = v
        trials.at[i, "value_step"] = step
        trials.at[i, "value_source"] = source
    if fallback:
        notes.append(f"{fallback} optimize/transfer run(s) have no best checkpoint (tag raygrid.best.*): "
                     "their last logged values are used.")
    return trials


def _best_values(client, uri: str, row: pd.Series, keys: list[str]) -> tuple[float, dict[str, float], str] | None:
    tag = next((c for c in row.index if c.startswith("tags.raygrid.best.") and isinstance(row[c], str)), None)
    if tag is None:
        return None
    metric, best = tag[len("tags.raygrid.best."):], float(row[tag])
    # 1. The best checkpoint's own meta.json: every reported metric at that step, one download.
    meta = _best_meta(uri, row["run_id"])
    if meta is not None:
        values = {k: float(meta["metrics"][k]) for k in keys if k in meta["metrics"]}
        return float(meta["step"]), values, "best checkpoint (meta.json)"
    # 2. The metric histories: the first step whose selection metric equals the tagged best value.
    history = client.get_metric_history(row["run_id"], metric)
    steps = [m.step for m in history if math.isclose(m.value, best, rel_tol=1e-9, abs_tol=1e-12)]
    if not steps:
        return None
    step = min(steps)
    values = {}
    for k in keys:
        at = [m for m in client.get_metric_history(row["run_id"], k) if m.step == step]
        values[k] = at[-1].value if at else float("nan")
    return float(step), values, "best checkpoint (metric history)"


def _best_meta(uri: str, run_id: str) -> dict[str, Any] | None:
    try:
        meta = json.loads(download_text(uri, run_id, "checkpoints/best/meta.json"))
    except Exception:  # noqa: BLE001 — artifact pruned or never attached: the caller uses the histories
        return None
    return meta if isinstance(meta, dict) and "step" in meta and isinstance(meta.get("metrics"), dict) else None


# -- parsed columns -------------------------------------------------------------------------------


def _param(df: pd.DataFrame, key: str) -> pd.Series:
    col = f"params.{key}"
    return df[col] if col in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def _none(v: Any) -> Any:
    return None if (v is None or (isinstance(v, float) and math.isnan(v)) or v in ("None", "null", "")) else v


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _json_list(v: Any) -> list[str]:
    if isinstance(v, list):
        return v
    try:
        out = json.loads(v)
        return out if isinstance(out, list) else [str(out)]
    except (TypeError, ValueError):
        return []


def _parse_columns(trials: pd.DataFrame) -> pd.DataFrame:
    t = trials.copy()
    t["seed"] = pd.to_numeric(_param(t, "seed"), errors="coerce")
    fb, mb = _param(t, "fidelity.backbone"), _param(t, "model.backbone")
    t["backbone"] = np.where(t["stage"] == "transfer", mb, fb)
    # assess
    # (lists, not Series.map: a str-dtype Series turns None back into NaN)
    fit = [_none(v) for v in _param(t, "fit_on")]
    ab = [_none(v) for v in _param(t, "fidelity.alpha_beta")]
    t["variant"] = [(f"fitted on {f}" if f else (a or "uniform")) if s == "assess" else None
                    for f, a, s in zip(fit, ab, t["stage"])]
    t["benchmark"] = _param(t, "benchmark")
    # optimize
    t["discriminator"] = _param(t, "adversarial.discriminator")
    t["adv_weight"] = _param(t, "loss.adversarial_weight").map(_to_float)
    # transfer
    t["init"] = _param(t, "model.init")
    t["kind"] = _param(t, "model.kind")
    t["train_set"] = _param(t, "data.train")
    # extra axes: grouping columns named after the axis
    for stage in STAGES:
        mask = t["stage"] == stage
        for axis in sorted(_extra_axes(t[mask], stage)):
            t.loc[mask, f"axis:{axis}"] = [str(p.get(axis)) for p in t.loc[mask, "point"]]
    return t


def _extra_axes(df: pd.DataFrame, stage: str) -> set[str]:
    keys: set[str] = set()
    for p in df["point"]:
        if isinstance(p, dict):
            keys |= set(p)
    return keys - {"seed"} - CANONICAL_AXES.get(stage, set())


def _axis_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("axis:") and df[c].notna().any()]
