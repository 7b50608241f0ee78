"""The MLflow contract: the names the writer (raygrid.run.tracking, the Tune driver's callback) and
the readers (transfer lineage, raygrid.analysis) share, and how a trial config becomes params.

Layout of a sweep in MLflow: one experiment per sweep name; one parent run per sweep invocation
(tag `raygrid.kind` = "sweep", artifacts `plan.json` and `space.yaml`, the report under `report/`);
one child run per trial (params = the flattened resolved trial config, metrics at the trial's own
`step`, tags below, the model weights of its best and final checkpoints under `checkpoints/`).
docs/ray-mlflow.md explains why it is laid out so.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Tags of a sweep run
TAG_KIND = "raygrid.kind"  # "sweep" on the parent run of an invocation
KIND_SWEEP = "sweep"
TAG_SWEEP = "raygrid.sweep"  # the sweep (= experiment) name
TAG_STORAGE = "raygrid.storage"  # the Tune storage the invocation ran in (resume finds it by this)
TAG_SPACE = "raygrid.space"  # where the space came from (a path, for people; the content is space.yaml)
TAG_GIT_COMMIT = "raygrid.git_commit"
TAG_VERSION_PREFIX = "raygrid.version."  # + package name
PARENT_TAG = "mlflow.parentRunId"

# Tags of a trial run
TAG_SWEEP_RUN = "raygrid.sweep_run"
TAG_STAGE = "raygrid.stage"
TAG_TRAINABLE = "raygrid.trainable"
TAG_TRIAL_ID = "raygrid.trial_id"
TAG_TRIAL_KEY = "raygrid.trial_key"
TAG_TRIAL_CONFIG = "raygrid.trial_config"  # the resolved trial config as JSON (typed lineage reads it)
TAG_POINT = "raygrid.point"  # the grid point (axis values) as JSON
TAG_OUTCOME = "raygrid.outcome"  # finished | stopped | collapsed | diverged | failed | interrupted
TAG_OUTCOME_STEP = "raygrid.outcome_step"  # the last step the trial reported
TAG_OUTCOME_REASON = "raygrid.outcome_reason"  # one line: why it ended so (failed, interrupted)
TAG_INIT_FROM = "raygrid.init_from_run"
TAG_CKPT_BEST = "raygrid.checkpoint.best"
TAG_CKPT_FINAL = "raygrid.checkpoint.final"
TAG_CKPT_MISSING = "raygrid.checkpoint.{which}_missing"  # which = best | final
TAG_BEST_PREFIX = "raygrid.best."  # + the stage metric: the value the best checkpoint was chosen by
TAG_RETRIES = "raygrid.retries"
TAG_ERROR = "raygrid.error"

# Metrics every trial run has besides its trainable's own
METRIC_STEP = "progress/step"
METRIC_START_STEP = "progress/start_step"  # where each (re)start of the trial picked up

# Artifacts
ARTIFACT_PLAN = "plan.json"
ARTIFACT_SPACE = "space.yaml"
ARTIFACT_REPORT = "report"
ARTIFACT_CHECKPOINTS = "checkpoints"  # + /best or /final: model.pt (weights only) and meta.json


def metric_name(name: str) -> str:
    """A name MLflow accepts as a metric key ("clipiqa+" -> "clipiqa_plus", "timm:x" -> "timm_x")."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name.replace("+", "_plus"))


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {"fidelity.backbone": "vgg16", ...} with string values for MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


def default_tracking_uri(output_dir: str) -> str:
    """A local sweep's store: a SQLite file in its output dir (artifacts next to it)."""
    from pathlib import Path

    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def search_trial_runs(tracking_uri: str, experiment_name: str, stage: str | None = None,
                      sweep_run_id: str | None = None, extra_filter: str = ""):
    """Trial runs of an experiment as a pandas DataFrame (params come back as strings)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    parts = [f"tags.`{TAG_TRIAL_ID}` != ''"]
    if stage:
        parts.append(f"tags.`{TAG_STAGE}` = '{stage}'")
    if sweep_run_id:
        parts.append(f"tags.`{TAG_SWEEP_RUN}` = '{sweep_run_id}'")
    if extra_filter:
        parts.append(extra_filter)
    return mlflow.search_runs(experiment_names=[experiment_name], filter_string=" and ".join(parts),
                              max_results=100000, output_format="pandas")
