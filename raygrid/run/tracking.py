"""MLflow: one experiment per sweep name, one parent run per sweep invocation, one child run
per trial — written by a single process, the Tune driver (`TrialRunLogger`).

Why a callback of our own rather than Ray's `MLflowLoggerCallback`: that one logs metrics at
`training_iteration` (which restarts after a resume), makes a new run when a trial is restored
(duplicate runs, ray-project/ray#48664) and cannot attach checkpoints. Here a trial's run is found
again by its tags, metrics are logged at the trial's own monotonic `step`, and the final and best
checkpoints are attached as artifacts when the trial ends.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from raygrid import io
from raygrid.run import failures, interrupt
from raygrid.space.expand import sampled_json
from raygrid.spec import mlflow as names
from raygrid.spec import records
from raygrid.spec.mlflow import client, flatten

# Tune's bookkeeping keys: not experiment metrics.
_TUNE_KEYS = {
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid", "hostname", "node_ip",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
    "timesteps_since_restore", "done", "trial_id", "experiment_id", "date", "config",
    "checkpoint_dir_name", "should_checkpoint", "experiment_tag", "checkpoint_path", "step",
}
_VERSIONED = ("raygrid", "torch", "torchvision", "ray", "mlflow", "timm", "open_clip_torch", "spandrel",
              "optuna", "numpy", "pandas", "scipy")


def git_commit() -> str:
    """The commit of the raygrid checkout (with '-dirty' when it has uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance_tags() -> dict[str, str]:
    tags = {names.TAG_GIT_COMMIT: git_commit()}
    tags.update({f"{names.TAG_VERSION_PREFIX}{k}": v for k, v in package_versions().items()})
    return tags


# ---------------------------------------------------------------------------------------------
# Experiment and sweep run
# ---------------------------------------------------------------------------------------------


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | None) -> str:
    """Create the sweep's experiment once, in the launcher (never in concurrent workers)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if artifact_root:
        location = artifact_root if "://" in artifact_root else Path(artifact_root).resolve().as_uri()
        location = location.rstrip("/") + f"/{name}"
    return c.create_experiment(name, artifact_location=location)


def start_sweep_run(tracking_uri: str, experiment_id: str, sweep_name: str, storage_uri: str,
                    resume: bool, extra_tags: dict[str, str] | None = None) -> tuple[str, bool]:
    """The parent run of this invocation: on --resume, the latest unfinished one for this storage."""
    c = client(tracking_uri)
    if resume:
        runs = c.search_runs(
            [experiment_id],
            filter_string=f"tags.`{names.TAG_SWEEP}` = '{sweep_name}' and tags.`{names.TAG_STORAGE}` = '{storage_uri}' "
                          f"and tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if runs:
            c.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id, True
    tags = {names.TAG_SWEEP: sweep_name, names.TAG_STORAGE: storage_uri, names.TAG_KIND: names.KIND_SWEEP,
            **provenance_tags(), **(extra_tags or {})}
    run = c.create_run(experiment_id, run_name=f"sweep-{sweep_name}", tags=tags)
    return run.info.run_id, False


def end_run(tracking_uri: str, run_id: str, ok: bool, status: str | None = None) -> None:
    """End the sweep run: FINISHED or FAILED, or the given status (KILLED after Ctrl-C/SIGTERM)."""
    client(tracking_uri).set_terminated(run_id, status=status or ("FINISHED" if ok else "FAILED"))


# ---------------------------------------------------------------------------------------------
# The Tune callback: one child run per trial
# ---------------------------------------------------------------------------------------------


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


class TrialRunLogger(_tune_callback_base()):
    """Logs every trial of a stage as a child run of the sweep run.

    `stage_info` carries what the callback cannot see in a result: the stage's scheduler metric
    and mode (for the best checkpoint) and its step budget (to tell early stops from finishes).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, sweep_run_id: str, sweep_name: str,
                 stage: str, metric: str, mode: str, budget_steps: int, storage_uri: str,
                 endpoint_url: str | None = None, telemetry: bool = True,
                 points: list[dict[str, Any]] | None = None):
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.sweep_run_id, self.sweep_name, self.stage = sweep_run_id, sweep_name, stage
        self.metric, self.mode, self.budget_steps = metric, mode, budget_steps
        self.storage_uri, self.endpoint_url = storage_uri, endpoint_url
        self.telemetry = telemetry
        self.points = points  # grid points of an Optuna stage (to resolve a sampled trial's config)
        # trial_id -> {"run_id", "last_step", "best", "best_path", "last_path", "retries"}
        self._trials: dict[str, dict[str, Any]] = {}
        self._client = None
        self._gauge = None
        self._live: set[str] = set()  # trials running or waiting at the last Tune step
        self._reopened: set[str] = set()  # trials whose run this process has (re)opened
        self._abort: failures.Failure | None = None  # a failure that stops the whole stage (no nodes)

    # Tune pickles callbacks with the experiment state; keep the client out of it.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        state["_gauge"] = None
        state["_reopened"] = set()
        return state

    def get_state(self) -> dict[str, Any]:
        return {"trials": self._trials}

    def set_state(self, state: dict[str, Any]) -> None:
        self._trials = state.get("trials", {})

    @property
    def client(self):
        if self._client is None:
            self._client = client(self.tracking_uri)
        return self._client

    # -- run lookup ---------------------------------------------------------------------------

    def _info(self, trial) -> dict[str, Any]:
        info = self._trials.get(trial.trial_id)
        if info is None:
            info = self._trials[trial.trial_id] = {"run_id": None, "last_step": -1, "best": None,
                                                    "best_path": None, "last_path": None, "retries": 0}
        if info["run_id"] is None:
            info["run_id"], info["last_step"] = self._find_or_create_run(trial)
        elif info.get("ended") in (None, "interrupted") and trial.trial_id not in self._reopened:
            self._reopen(info["run_id"])  # its run as the state restored after an interruption left it
        self._reopened.add(trial.trial_id)
        info["ended"] = None if info.get("ended") == "interrupted" else info.get("ended")
        return info

    def _reopen(self, run_id: str) -> None:
        """A trial continues (resume, retry): its run is RUNNING again and loses the tags of an
        earlier interruption."""
        run = self.client.get_run(run_id)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        if run.data.tags.get(names.TAG_OUTCOME) == "interrupted":
            for tag in (names.TAG_OUTCOME, names.TAG_OUTCOME_REASON, names.TAG_OUTCOME_STEP):
                self.client.delete_tag(run_id, tag)

    def _find_or_create_run(self, trial) -> tuple[str, int]:
        search = trial.config.get("search")
        spec = sampled_json(self.points[search["point"]], search["values"], self.stage) if search else trial.config["spec"]
        meta = spec["meta"]
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{names.TAG_SWEEP_RUN}` = '{self.sweep_run_id}' and "
                          f"tags.`{names.TAG_TRIAL_ID}` = '{trial.trial_id}'",
            max_results=1,
        )
        if existing:  # a resumed or retried trial: continue its run
            run = existing[0]
            self._reopen(run.info.run_id)
            last = run.data.metrics.get(names.METRIC_STEP, -1)
            return run.info.run_id, int(last)
        tags = {
            names.PARENT_TAG: self.sweep_run_id, names.TAG_SWEEP_RUN: self.sweep_run_id,
            names.TAG_SWEEP: self.sweep_name, names.TAG_STAGE: self.stage, names.TAG_TRIAL_ID: trial.trial_id,
            names.TAG_TRIAL_KEY: meta["trial_key"], names.TAG_TRAINABLE: spec["trial"]["trainable"],
            names.TAG_POINT: json.dumps(meta["point"]), names.TAG_TRIAL_CONFIG: json.dumps(spec["trial"]),
            **provenance_tags(),
        }
        if meta.get("init_from_run"):
            tags[names.TAG_INIT_FROM] = meta["init_from_run"]
        name = f"{self.stage}-{trial.trial_id}-" + "-".join(str(v) for v in meta["point"].values())
        run = self.client.create_run(self.experiment_id, run_name=name[:250], tags=tags)
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in flatten(spec["trial"]).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        return run.info.run_id, -1

    # -- Tune events --------------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self._info(trial)
        self._publish_counts(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        if failures.RESULT_KEY in result:  # a failure report, not a step (on_trial_complete logs it)
            return
        rec = self._info(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        if result.get("checkpoint_path"):
            rec["last_path"] = result["checkpoint_path"]
            value = result.get(self.metric)
            if value is not None and (rec["best"] is None or (value > rec["best"] if self.mode == "max" else value < rec["best"])):
                rec["best"], rec["best_path"] = float(value), result["checkpoint_path"]
        ts = int(result.get("timestamp", 0) * 1000)
        if step <= rec["last_step"]:
            # Already logged before a restart. Where this attempt picked up is still news: a
            # retry that resumes behind the last logged step must not hide that it restarted.
            if names.METRIC_START_STEP in result:
                self.client.log_metric(rec["run_id"], names.METRIC_START_STEP, float(result[names.METRIC_START_STEP]),
                                       ts, step)
            return
        if result.get("checkpoint_path"):
            # before the metrics: a step whose metrics are logged has its records too (a callback
            # that restarts without its state resumes after the last logged `progress/step`)
            self._log_records(rec, step, result["checkpoint_path"])
        metrics = [Metric(k, float(v), ts, step) for k, v in result.items()
                   if k not in _TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)]
        metrics.append(Metric(names.METRIC_STEP, float(step), ts, step))
        for i in range(0, len(metrics), 500):
            self.client.log_batch(rec["run_id"], metrics=metrics[i:i + 500])
        rec["last_step"] = step

    def _log_records(self, rec: dict[str, Any], step: int, path: str) -> None:
        """Log what the loop left in the checkpoint reported at `step` (raygrid.spec.records):
        `scores.parquet` -> artifact scores/step_<step>.parquet, `samples/<id>.png` -> image
        `sr/<id>` at `step`, `evaluators.json` -> artifact evaluators.json (once per run). Reads
        those few files only, never the state. A checkpoint already pruned by Train is named in
        the run's tag raygrid.records_missing."""
        fs, _ = io.filesystem(self.storage_uri, self.endpoint_url)
        try:
            files = checkpoint_records(fs, path)
        except FileNotFoundError:
            rec.setdefault("records_missing", []).append(step)
            self.client.set_tag(rec["run_id"], records.TAG_RECORDS_MISSING,
                                ",".join(str(s) for s in rec["records_missing"])[:5000])
            return
        run_id = rec["run_id"]
        with tempfile.TemporaryDirectory(prefix="raygrid-rec-") as tmp:
            upload = Path(tmp)
            if records.CKPT_SCORES in files:
                target = upload / records.ARTIFACT_SCORES.format(step=step)
                target.parent.mkdir(parents=True)
                target.write_bytes(files[records.CKPT_SCORES])
            if records.CKPT_EVALUATORS in files and not rec.get("evaluators"):
                (upload / records.ARTIFACT_EVALUATORS).write_bytes(files[records.CKPT_EVALUATORS])
                rec["evaluators"] = True
            if any(upload.iterdir()):
                self.client.log_artifacts(run_id, str(upload))
        for rel, content in sorted(files.items()):
            if rel.startswith(records.CKPT_SAMPLES + "/"):
                crop_id = rel[len(records.CKPT_SAMPLES) + 1:-len(".png")]
                self.client.log_image(run_id, _decode_png(content), key=records.IMAGE_SR.format(id=crop_id), step=step)

    def on_trial_recover(self, iteration, trials, trial, **info):
        rec = self._info(trial)
        rec["retries"] += 1
        self.client.set_tag(rec["run_id"], names.TAG_RETRIES, str(rec["retries"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        from raygrid.stages.optimize.health import outcome_from_result

        rec = self._info(trial)
        failure = failures.from_result(getattr(trial, "last_result", None))
        if failure is not None:  # a permanent failure the driver reported instead of raising
            self._end_failed(trial, rec, failure)
            self._publish_counts(trials)
            return
        last = getattr(trial, "last_result", None) or {}
        # a loop that ended its run early says so in its last report (diverged / collapsed at step k)
        ended = outcome_from_result(last)
        if ended is None:
            finished = rec["last_step"] >= self.budget_steps
            ended = ("finished" if finished else "stopped", rec["last_step"],
                     "ran its whole budget" if finished else "stopped by the scheduler")
        outcome, step, reason = ended
        self.client.set_tag(rec["run_id"], names.TAG_OUTCOME_STEP, str(step))
        self.client.set_tag(rec["run_id"], names.TAG_OUTCOME_REASON, reason)
        if "runtime/bf16" in last:  # the numerics the run used (runtime.amp "auto" resolved)
            self.client.log_param(rec["run_id"], "runtime.precision", "bf16" if last["runtime/bf16"] else "fp32")
        self._finish(trial, rec, outcome, "FINISHED")
        self._publish_counts(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        rec = self._info(trial)
        failure = failures.from_trial(trial) or failures.Failure("crash", "Error", "unknown error", "")
        self._end_failed(trial, rec, failure)
        self._publish_counts(trials)

    # -- failures and interruption ------------------------------------------------------------

    def _end_failed(self, trial, rec: dict[str, Any], failure: failures.Failure) -> None:
        """Error tag: the original traceback's tail ending with the one line the summary shows
        (`Type: message (file:line in function)`), not Ray's wrapper."""
        self.client.set_tag(rec["run_id"], names.TAG_ERROR, failure.text())
        self.client.set_tag(rec["run_id"], names.TAG_OUTCOME_REASON, failure.line()[:5000])
        self.client.set_tag(rec["run_id"], names.TAG_OUTCOME_STEP, str(max(rec["last_step"], 0)))
        if failure.type == "NoNodeCameUp":
            self._abort = failure
        self._finish(trial, rec, "failed", "FAILED")

    def on_step_end(self, iteration, trials, **info):
        # What is live before Tune's clean-up: an interrupted fit marks its trials TERMINATED
        # before the experiment-end callback runs.
        self._live = {t.trial_id for t in trials if t.status in ("RUNNING", "PENDING", "PAUSED")}

    def on_experiment_end(self, trials, **info):
        """Trial runs the fit left unfinished: KILLED with outcome `interrupted` after Ctrl-C or
        SIGTERM (they resume with --resume), FAILED when a trial that found no node stopped
        the stage."""
        signum = interrupt.received()
        if signum is None and self._abort is None:
            return
        for t in trials:
            rec = self._trials.get(t.trial_id)
            if rec is None or rec.get("ended") or rec.get("run_id") is None or t.trial_id not in self._live:
                continue
            if signum is not None:
                outcome, status = "interrupted", "KILLED"
                reason = f"{interrupt.signal_name(signum)} at step {max(rec['last_step'], 0)}"
            else:
                outcome, status = "failed", "FAILED"
                reason = f"stopped with its stage: {self._abort.line()}"
            self.client.set_tag(rec["run_id"], names.TAG_OUTCOME, outcome)
            self.client.set_tag(rec["run_id"], names.TAG_OUTCOME_STEP, str(max(rec["last_step"], 0)))
            self.client.set_tag(rec["run_id"], names.TAG_OUTCOME_REASON, reason[:5000])
            self.client.set_terminated(rec["run_id"], status=status)
            rec["ended"] = outcome

    def _finish(self, trial, rec: dict[str, Any], outcome: str, status: str) -> None:
        self.client.set_tag(rec["run_id"], names.TAG_OUTCOME, outcome)
        if rec["best"] is not None:  # the value the best checkpoint was chosen by (transfer lineage)
            self.client.set_tag(rec["run_id"], f"{names.TAG_BEST_PREFIX}{self.metric}", repr(rec["best"]))
        for which, path in (("best", rec["best_path"]), ("final", rec["last_path"])):
            if path:
                self._attach_checkpoint(rec["run_id"], which, path)
        self.client.set_terminated(rec["run_id"], status=status)
        rec["ended"] = outcome

    def _attach_checkpoint(self, run_id: str, which: str, path: str) -> None:
        """Log the model weights (not optimiser state) of a checkpoint as artifacts, and tag the
        full checkpoint's storage location (needed to resume or to initialise transfer runs)."""
        import torch

        fs, _ = io.filesystem(self.storage_uri, self.endpoint_url)
        uri = f"s3://{path}" if io.is_s3(self.storage_uri) else path
        self.client.set_tag(run_id, names.TAG_CKPT_BEST if which == "best" else names.TAG_CKPT_FINAL, uri)
        try:
            with tempfile.TemporaryDirectory(prefix="raygrid-art-") as tmp:
                local = Path(io.fetch(path, tmp, fs=fs))
                state = torch.load(local / "state.pt", map_location="cpu", weights_only=False)
                model = {k: v for k, v in state.items() if not k.startswith("opt") and k != "rng"}
                out = Path(tmp) / "export"
                out.mkdir()
                torch.save(model, out / "model.pt")
                if (local / "meta.json").exists():
                    (out / "meta.json").write_text((local / "meta.json").read_text())
                self.client.log_artifacts(run_id, str(out), f"{names.ARTIFACT_CHECKPOINTS}/{which}")
        except FileNotFoundError as e:  # pruned by num_to_keep: the tag still says where it was
            self.client.set_tag(run_id, names.TAG_CKPT_MISSING.format(which=which), str(e)[:500])

    def _publish_counts(self, trials) -> None:
        if not self.telemetry:
            return
        if self._gauge is None:
            from raygrid.run.telemetry import SweepTelemetry

            self._gauge = SweepTelemetry(self.sweep_name)
        counts = {"running": 0, "finished": 0, "stopped": 0, "failed": 0}
        for t in trials:
            rec = self._trials.get(t.trial_id, {})
            if t.status == "RUNNING":
                counts["running"] += 1
            elif t.status == "ERROR":
                counts["failed"] += 1
            elif t.status == "TERMINATED":
                counts["finished" if rec.get("last_step", -1) >= self.budget_steps else "stopped"] += 1
        self._gauge.set_counts(self.stage, counts)


def checkpoint_records(fs, path: str) -> dict[str, bytes]:
    """The record files of a reported checkpoint directory ({relative path: bytes}): the score
    table, the evaluator record and the sample crops. FileNotFoundError if the directory is gone."""
    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        raise FileNotFoundError(f"checkpoint {path}: not found in storage")
    out = {}
    for f in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True)):
        rel = Path(f.path).relative_to(path).as_posix()
        wanted = rel in (records.CKPT_SCORES, records.CKPT_EVALUATORS) or (
            rel.startswith(records.CKPT_SAMPLES + "/") and rel.endswith(".png") and rel.count("/") == 1)
        if f.type == pyarrow.fs.FileType.File and wanted:
            with fs.open_input_stream(f.path) as stream:
                out[rel] = stream.read()
    return out


def _decode_png(content: bytes):
    import io as _io

    import numpy as np
    from PIL import Image

    with Image.open(_io.BytesIO(content)) as img:
        return np.asarray(img.convert("RGB"))
