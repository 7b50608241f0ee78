"""Mirror of the judgements in MLflow: `judgements/judgements.parquet` on the sweep run.

`sync` merges both ways and never loses a row: the mirror already in MLflow (judgements synced
from other machines) is merged into the local SQLite file by id, then the union is uploaded,
replacing the previous parquet file. Running it twice changes nothing; two judges who judged on
different machines each sync and end with the same table. The sweep run also gets the tags
`raygrid.judge.judgements` (row count) and `raygrid.judge.synced_at`.

Parquet rather than MLflow's `log_table` JSON: `log_table` appends to an existing file, so a
second sync would duplicate every row.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from raygrid.spec import mlflow as names
from raygrid.judge.schema import COLUMNS, empty_frame
from raygrid.judge.source import JudgeInputError, experiment_id, quiet_downloads, sweep_runs
from raygrid.judge.store import JudgementStore, now_iso

ARTIFACT_DIR = "judgements"
ARTIFACT = f"{ARTIFACT_DIR}/judgements.parquet"
TAG_COUNT = "raygrid.judge.judgements"
TAG_SYNCED = "raygrid.judge.synced_at"


def target_sweep_run(client, experiment: str, tracking_uri: str) -> str:
    """The sweep run the mirror lives on: the newest run tagged raygrid.kind=sweep."""
    runs = sweep_runs(client, experiment_id(client, experiment, tracking_uri))
    if not runs:
        raise JudgeInputError(f"experiment {experiment!r} in {tracking_uri} has no sweep run "
                              "(tag raygrid.kind=sweep) to keep the judgements on")
    return runs[0].info.run_id


def read_mirror(client, run_id: str) -> pd.DataFrame:
    """The judgements mirrored on `run_id` (empty when none were synced yet)."""
    if not any(f.path == ARTIFACT for f in client.list_artifacts(run_id, ARTIFACT_DIR)):
        return empty_frame()
    with tempfile.TemporaryDirectory(prefix="raygrid-judge-") as tmp, quiet_downloads():
        df = pd.read_parquet(client.download_artifacts(run_id, ARTIFACT, tmp))
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    return df[list(COLUMNS)]


def sync(store: JudgementStore, tracking_uri: str, experiment: str, run_id: str | None = None) -> tuple[str, int, int]:
    """Merge the mirror into `store`, upload the union. Returns (run id, rows pulled in, rows in MLflow)."""
    client = names.client(tracking_uri)
    run_id = run_id or target_sweep_run(client, experiment, tracking_uri)
    pulled = store.merge(read_mirror(client, run_id))
    table = store.frame(experiment=experiment)
    with tempfile.TemporaryDirectory(prefix="raygrid-judge-") as tmp:
        path = Path(tmp) / "judgements.parquet"
        table.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    client.set_tag(run_id, TAG_COUNT, str(len(table)))
    client.set_tag(run_id, TAG_SYNCED, now_iso())
    return run_id, pulled, len(table)


def load_judgements(tracking_uri: str, experiment: str, local_files: list[str | Path] = ()) -> pd.DataFrame:
    """Every judgement of an experiment: the MLflow mirror on its sweep runs, plus local SQLite
    files when given (not yet synced), merged by id. Empty frame when there are none."""
    client = names.client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    frames = []
    if exp is not None:
        for run in sweep_runs(client, exp.experiment_id):
            frames.append(read_mirror(client, run.info.run_id))
    for path in local_files:
        if Path(path).is_file():
            frames.append(JudgementStore(path).frame(experiment=experiment))
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame()
    df = pd.concat(frames, ignore_index=True).drop_duplicates("id", keep="first").reset_index(drop=True)
    return df[df["experiment"] == experiment].reset_index(drop=True)
