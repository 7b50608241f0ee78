"""Every read of a sweep from MLflow: `load_sweep` -> `SweepData`, plus the lazy reads the report
makes later (metric histories, logged images, checkpoints, the logged space, judgements).

    load_sweep()   one row per trial (planned-but-not-run included), each stage compared at ONE
                   step, the per-item score tables at that step, the evaluator records

What is read (the MLflow contract, docs/analysis.md):
- the sweep runs' `plan.json`: trial lists (unioned by trial key over the sweep runs), budgets and
  each stage's `report` entry `{checkpoint: final|best, step, selection: {metric, mode}}`;
- the trial runs (`mlflow.search_runs`): params, latest metrics, tags; the outcome tags
  `raygrid.outcome` (+ `_step`, `_reason`); a trial re-run by a later invocation keeps its latest
  successful run;
- per compared trial: `scores/step_<step:08d>.parquet` at the compared step and `evaluators.json` (the optimize tables join it by run);
  when a run has no table (an older run), its metrics at that step (latest values or history).

The common step (docs/protocol.md): every stage is compared at one step S = report.step, or the
budget's last step. A trial whose evaluations reached S is compared — at S ("final") or at its best
evaluation up to S by the stage's `val/` selection metric ("best"). Every other trial is listed with
its outcome and step (`SweepData.trials["why"]`: "stopped at step 20", "collapsed at step 40",
"failed: loop.py:88", "not run") and enters no table and no ranking.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygrid.analysis.outcomes import (
    NOT_RUN,
    RUNNING,
    TAG_OUTCOME_STEP,
    failure_reason,
    why_not_compared,
)
from raygrid.spec import mlflow as names

# The Wave B contract between the Tune callback (writer) and this reader (see docs/analysis.md).
SCORES_DIR = "scores"
EVALUATORS_FILE = "evaluators.json"

_STATUS_OUTCOME = {"RUNNING": RUNNING, "SCHEDULED": RUNNING, "FAILED": "failed", "KILLED": "interrupted",
                   "FINISHED": "finished"}
_PREFERENCE = {"finished": 0, "stopped": 1, "collapsed": 1, "diverged": 1, RUNNING: 2, "failed": 3, "interrupted": 3}


def scores_artifact(step: int) -> str:
    return f"{SCORES_DIR}/step_{int(step):08d}.parquet"


@dataclass(frozen=True)
class StageReport:
    """How a stage's values are chosen: at `step` ("final") or at the best evaluation up to `step`
    by `selection` (metric, mode) ("best"). `source` says where the entry came from."""

    checkpoint: str
    step: int | None
    selection: tuple[str, str] | None
    source: str

    def describe(self) -> str:
        at = f"step {self.step}" if self.step is not None else "the last step each trial reached"
        if self.checkpoint == "best" and self.selection:
            metric, mode = self.selection
            return f"the best evaluation up to {at} by {metric} ({mode})"
        return f"{at} (final)"


@dataclass
class SweepData:
    """A sweep read back: `trials` (one row per trial), the plan and report entry per stage, the
    per-item tables of the compared trials at their compared step (`scores[stage]`, with
    `run_id`), and the evaluator records (`evaluators`, one row per run and evaluator).

    `trials` columns: stage, trial_key, run_id (None: not run), outcome, outcome_step, last_step,
    point, seed, params.*, metrics.* (at value_step), tags.*, compared (bool), value_step,
    value_source, why (for trials not compared).
    """

    experiment: str
    tracking_uri: str
    sweep_run_ids: list[str]
    trials: pd.DataFrame
    plan: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: dict[str, StageReport] = field(default_factory=dict)
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)
    evaluators: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)

    def stage(self, name: str) -> pd.DataFrame:
        if self.trials.empty:
            return self.trials
        return self.trials[self.trials["stage"] == name].reset_index(drop=True)

    def compared(self, name: str) -> pd.DataFrame:
        df = self.stage(name)
        return df[df["compared"]].reset_index(drop=True) if len(df) else df

    def axes(self, stage: str) -> list[str]:
        """The stage's grid axes (plan.json; else the keys of its trials' points), seed excluded."""
        axes = list((self.plan.get(stage) or {}).get("axes") or {})
        if not axes:
            for p in self.stage(stage).get("point", []):
                axes += [k for k in (p or {}) if k not in axes]
        return [a for a in axes if a != "seed"]


# =============================================================================================
# load_sweep
# =============================================================================================


def load_sweep(experiment: str, tracking_uri: str | None = None, sweep_run_id: str | None = None,
               checkpoint: str | None = None, report: dict[str, dict[str, Any]] | None = None) -> SweepData:
    """Read a sweep back from MLflow (see the module docstring).

    sweep_run_id: one invocation (its trial runs and its plan); None: every trial run of the
    experiment and the union of every sweep run's plan. checkpoint: None (each stage's report
    entry in plan.json), or "final"/"best" for every stage ("best" where the stage names a
    selection metric; the others stay "final"). report: {stage: entry} replacing plan.json's
    entries (same keys: checkpoint, step, selection), e.g. to compare at an earlier step."""
    import mlflow

    if checkpoint not in (None, "best", "final"):
        raise ValueError(f"checkpoint must be 'best', 'final' or None (the plan's), not {checkpoint!r}")
    uri = tracking_uri or mlflow.get_tracking_uri()
    client = names.client(uri)
    if client.get_experiment_by_name(experiment) is None:
        raise LookupError(f"no MLflow experiment named {experiment!r} in {uri}")
    notes: list[str] = []
    sweeps = _sweep_runs(uri, experiment, sweep_run_id)
    plan = _read_plans(uri, sweeps, notes)
    for st, entry in (report or {}).items():
        plan[st] = {**plan.get(st, {"trial_list": []}), "report": {**(plan.get(st, {}).get("report") or {}), **entry},
                    "report_step": None}
    runs = names.search_trial_runs(uri, experiment, sweep_run_id=sweep_run_id)
    observed = pd.DataFrame([_run_row(r) for _, r in runs.iterrows()]) if len(runs) else pd.DataFrame()
    observed, superseded = _dedupe(observed)
    if superseded:
        notes.append(f"{superseded} older run(s) of trials that ran again later were superseded "
                     "(same trial key; the latest successful run is used).")
    planned = _planned_rows(plan, observed)
    trials = pd.concat([observed, planned], ignore_index=True) if len(planned) else observed
    base = ["stage", "trial_key", "run_id", "outcome", "outcome_step", "last_step", "point", "seed", "compared",
            "value_step", "value_source", "why"]
    data = SweepData(experiment, uri, [s["run_id"] for s in sweeps], pd.DataFrame(columns=base), plan, notes=notes)
    if trials.empty:
        return data
    trials["seed"] = pd.to_numeric(trials.get("params.seed"), errors="coerce")
    order = [*plan, *(s for s in dict.fromkeys(trials["stage"]) if s not in plan)]  # the plan's stage order
    data.report = {st: stage_report(plan.get(st), trials[trials["stage"] == st], checkpoint) for st in order}
    if checkpoint == "best":
        notes += [f"Stage {st}: no selection metric, so its values stay at the final step." for st, r in
                  data.report.items() if r.checkpoint != "best"]
    parts = []
    for st, rep in data.report.items():
        df = _common_step(client, trials[trials["stage"] == st].copy(), rep, notes)
        frame, df, missing = _read_scores(uri, client, df, rep)
        data.scores[st] = frame
        parts.append(df)
        if missing:
            notes.append(f"Stage {st}: {missing} compared run(s) have no per-item table at their compared step: their "
                         "logged metrics are shown, and they enter no interval or ranking built from per-item scores.")
    data.trials = pd.concat(parts, ignore_index=True)
    data.evaluators = _read_evaluators(uri, data.trials[data.trials["compared"]])
    return data


def stage_report(entry: dict[str, Any] | None, trials: pd.DataFrame, override: str | None = None) -> StageReport:
    """The stage's report entry from plan.json; default: final, at the budget's last step."""
    rep = (entry or {}).get("report") or {}
    budget = ((entry or {}).get("budget") or {}).get("steps")
    sel = rep.get("selection") or None
    selection = (sel["metric"], sel.get("mode", "max")) if sel else None
    source = "plan.json" if rep else ("default (plan.json has no report entry)" if entry else "default (no plan.json)")
    which = override or rep.get("checkpoint") or "final"
    if override == "best" and selection is None:
        which = "final"
    if which == "best" and selection is None:
        raise ValueError(f"stage {trials['stage'].iloc[0] if len(trials) else '?'}: checkpoint 'best' needs a "
                         "report.selection metric (a val/ metric of the stage) in plan.json; none is there")
    step = (entry or {}).get("report_step")  # the plan's resolved step, when it gives one
    if step is None:
        step = rep.get("step") if rep.get("step") is not None else budget
    if step is None:  # no plan: the largest step any trial of the stage reached stands in for the budget
        last = pd.to_numeric(trials.get(f"metrics.{names.METRIC_STEP}"), errors="coerce")
        step = int(last.max()) if last is not None and last.notna().any() else None
    return StageReport(which, int(step) if step is not None else None, selection, source)


# -- runs and plans ---------------------------------------------------------------------------


def _sweep_runs(uri: str, experiment: str, sweep_run_id: str | None) -> list[dict[str, Any]]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'",
                            max_results=10000, output_format="pandas", order_by=["attributes.start_time ASC"])
    out = [{"run_id": r["run_id"], "status": r["status"], "artifact_uri": r["artifact_uri"]} for _, r in df.iterrows()]
    if sweep_run_id:
        out = [s for s in out if s["run_id"] == sweep_run_id] or [{"run_id": sweep_run_id, "status": "?",
                                                                   "artifact_uri": None}]
    return out


def _read_plans(uri: str, sweeps: list[dict[str, Any]], notes: list[str]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for s in sweeps:
        try:
            plan = json.loads(download_text(uri, s["run_id"], names.ARTIFACT_PLAN, s["artifact_uri"]))
        except Exception:  # noqa: BLE001 — an older or foreign sweep run: no plan, no "not run" rows
            notes.append(f"sweep run {s['run_id']} has no readable plan.json: trials that never started "
                         "cannot be listed as missing for it, and its stages use the default report step.")
            continue
        for st in plan.get("stages", []):
            entry = merged.setdefault(st["name"], {**st, "trial_list": []})
            known = {t["key"] for t in entry["trial_list"]}
            entry["trial_list"] += [t for t in st.get("trial_list", []) if t["key"] not in known]
    return merged


def _outcome(r: pd.Series) -> str:
    tag = r.get(f"tags.{names.TAG_OUTCOME}")
    if isinstance(tag, str) and tag:
        return tag
    return _STATUS_OUTCOME.get(r.get("status"), "finished")


def _run_row(r: pd.Series) -> dict[str, Any]:
    row = {k: v for k, v in r.items() if k.startswith(("params.", "metrics.", "tags."))}
    try:
        point = json.loads(r.get(f"tags.{names.TAG_POINT}") or "{}")
    except (TypeError, json.JSONDecodeError):
        point = {}
    last = _float(r.get(f"metrics.{names.METRIC_STEP}"))
    step_tag = _float(r.get(f"tags.{TAG_OUTCOME_STEP}"))
    row.update({"stage": r.get(f"tags.{names.TAG_STAGE}"), "trial_key": r.get(f"tags.{names.TAG_TRIAL_KEY}"),
                "run_id": r["run_id"], "outcome": _outcome(r), "last_step": last,
                "outcome_step": step_tag if math.isfinite(step_tag) else last, "point": point,
                "start_time": r.get("start_time"), "status": r.get("status"), "artifact_uri": r.get("artifact_uri")})
    return row


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    if df.empty:
        return df, 0
    df = df.assign(_pref=df["outcome"].map(_PREFERENCE).fillna(4))
    df = df.sort_values(["_pref", "start_time"], ascending=[True, False], kind="stable")
    kept = df.drop_duplicates(["stage", "trial_key"], keep="first")
    return kept.drop(columns="_pref").reset_index(drop=True), len(df) - len(kept)


def _planned_rows(plan: dict[str, dict[str, Any]], observed: pd.DataFrame) -> pd.DataFrame:
    """Planned grid trials without a run. Optuna stages are skipped: their trials are samples,
    not the listed grid points."""
    seen = set(zip(observed["stage"], observed["trial_key"])) if len(observed) else set()
    rows = []
    for stage, entry in plan.items():
        if entry.get("search"):
            continue
        for t in entry.get("trial_list", []):
            if (stage, t["key"]) in seen:
                continue
            row = {f"params.{k}": v for k, v in names.flatten(t["config"]).items()}
            row.update({"stage": stage, "trial_key": t["key"], "run_id": None, "outcome": NOT_RUN,
                        "last_step": np.nan, "outcome_step": np.nan, "point": t.get("point", {}),
                        "start_time": None, "status": None})
            rows.append(row)
    return pd.DataFrame(rows)


# -- the common step ----------------------------------------------------------------------------


def _common_step(client, df: pd.DataFrame, rep: StageReport, notes: list[str]) -> pd.DataFrame:
    """Mark the trials compared at the stage's step and the step their values come from."""
    df["compared"], df["value_step"], df["value_source"], df["why"] = False, np.nan, "", ""
    for i, r in df.iterrows():
        last = _float(r.get("last_step"))
        reached = r["run_id"] is not None and rep.step is not None and math.isfinite(last) and last >= rep.step
        if not reached:
            step = _float(r.get("outcome_step"))
            df.at[i, "why"] = why_not_compared(r["outcome"], step if math.isfinite(step) else last,
                                               failure_reason(r), rep.step)
            continue
        step = float(rep.step)
        if rep.checkpoint == "best":
            metric, mode = rep.selection
            hist = [m for m in client.get_metric_history(r["run_id"], metric) if m.step <= rep.step
                    and math.isfinite(m.value)]
            if not hist:
                df.at[i, "why"] = f"no {metric} up to step {rep.step} (the selection metric)"
                continue
            best = (max if mode == "max" else min)(m.value for m in hist)
            step = float(min(m.step for m in hist if m.value == best))
        df.at[i, "compared"], df.at[i, "value_step"] = True, step
    return df


def _read_scores(uri: str, client, df: pd.DataFrame, rep: StageReport) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The per-item table of every compared trial at its value step; trials without one keep
    their metrics at that step (the latest values, or the metric histories)."""
    frames, missing = [], 0
    with tempfile.TemporaryDirectory(prefix="raygrid-scores-") as tmp:
        for i, r in df[df["compared"]].iterrows():
            step = int(r["value_step"])
            try:
                path = download_artifact(uri, r["run_id"], scores_artifact(step), os.path.join(tmp, r["run_id"]),
                                         r.get("artifact_uri"))
                table = pd.read_parquet(path)
            except Exception:  # noqa: BLE001 — an older run without per-item tables
                table = None
            if table is not None:
                frames.append(table.assign(run_id=r["run_id"]))
                df.at[i, "value_source"] = f"per-item table at step {step}"
                continue
            missing += 1
            if step != _float(r.get("last_step")):
                keys = [c[len("metrics."):] for c in df.columns if c.startswith("metrics.") and pd.notna(r[c])]
                for k, v in metrics_at(client, r["run_id"], keys, step).items():
                    df.at[i, f"metrics.{k}"] = v
            df.at[i, "value_source"] = f"logged metrics at step {step} (no per-item table)"
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, df, missing


def metrics_at(client, run_id: str, keys: list[str], step: int) -> dict[str, float]:
    out = {}
    for k in keys:
        at = [m for m in client.get_metric_history(run_id, k) if m.step == step]
        out[k] = at[-1].value if at else float("nan")
    return out


def _read_evaluators(uri: str, compared: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, evaluator) from each compared run's evaluators.json."""
    rows = []
    for run_id, root in zip(compared["run_id"], compared["artifact_uri"]):
        try:
            records = json.loads(download_text(uri, run_id, EVALUATORS_FILE, root))
        except Exception:  # noqa: BLE001, S112 — an older run without a record
            continue
        for rec in records:
            rows.append({"run_id": run_id, **rec, "shares": tuple(rec.get("shares") or ())})
    cols = ["run_id", "name", "metric", "family", "mode", "higher_better", "range", "backbone", "weights", "shares"]
    return pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame(columns=cols)


# =============================================================================================
# Reads made later by the report
# =============================================================================================


def metric_histories(data: SweepData, run_ids: list[str], keys: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run_id: {metric: [(step, value), ...]}} (MlflowClient.get_metric_history)."""
    client = names.client(data.tracking_uri)
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run_id in run_ids:
        out[run_id] = {}
        for k in keys:
            hist = sorted(client.get_metric_history(run_id, k), key=lambda m: (m.step, m.timestamp))
            if hist:
                out[run_id][k] = [(int(m.step), float(m.value)) for m in hist]
    return out


_IMAGE = re.compile(r"^(?P<key>.+?)\+step\+(?P<step>\d+)\+timestamp\+\d+\+.+\.png$")


def logged_images(data: SweepData, run_id: str) -> pd.DataFrame:
    """The images a run logged with `log_image(key=..., step=...)`: columns key, step, path."""
    client = names.client(data.tracking_uri)
    rows = []
    for a in client.list_artifacts(run_id, "images"):
        m = _IMAGE.match(Path(a.path).name)
        if m:
            rows.append({"key": m["key"].replace("~", "/"), "step": int(m["step"]), "path": a.path})
    return pd.DataFrame(rows, columns=["key", "step", "path"])


def judgements(data: SweepData) -> pd.DataFrame:
    """The human judgements of the experiment (raygrid.judge's MLflow mirror)."""
    from raygrid.judge import load_judgements

    return load_judgements(data.tracking_uri, data.experiment)


def logged_space(data: SweepData) -> dict[str, Any] | None:
    """The validated space the newest sweep run logged (`space.yaml`), or None."""
    import yaml

    for run_id in reversed(data.sweep_run_ids):
        try:
            return yaml.safe_load(download_text(data.tracking_uri, run_id, names.ARTIFACT_SPACE)) or {}
        except Exception:  # noqa: BLE001, S112 — no such artifact (an older run)
            continue
    return None


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


def download_artifact(uri: str, run_id: str, path: str, dst_dir: str, artifact_uri: str | None = None) -> str:
    """A run's artifact into dst_dir (raises if it does not exist). With the run's artifact_uri
    (search_runs has it) MLflow reads the artifact store directly instead of looking the run up
    again (a tenth of the time on a sqlite store)."""
    import mlflow

    os.makedirs(dst_dir, exist_ok=True)
    with quiet_downloads():
        if isinstance(artifact_uri, str) and artifact_uri:
            return mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{path}",
                                                       dst_path=dst_dir, tracking_uri=uri)
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst_dir,
                                                   tracking_uri=uri)


def download_text(uri: str, run_id: str, path: str, artifact_uri: str | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="raygrid-art-") as tmp:
        return Path(download_artifact(uri, run_id, path, tmp, artifact_uri)).read_text()


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
