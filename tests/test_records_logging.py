"""The MLflow callback logs what the optimize evaluation leaves in its checkpoints: the per-image
table per step, the SR crops as MLflow images at that step, the evaluator record once; nothing
twice after a restore; from local and from S3 (moto) storage. Without Ray: Tune-like trial
objects drive TrialRunLogger, as in tests/test_tracking.py."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from mlflow_store import sweep_store
from test_tracking import FakeTrial  # the Tune trial the MLflow callback sees

from raygrid.run import samples, tracking
from raygrid.space import load_space
from raygrid.spec import mlflow as names
from raygrid.spec import records
from raygrid.stages.loop import META_FILE, STATE_FILE, RunEnv


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    """The files of three evaluations (steps 20, 40, 60) of one optimize run on the demo data."""
    from raygrid.data.demo import build_demo
    from raygrid.nets.generators import create_generator
    from raygrid.stages.optimize.evaluate import SREvaluation

    root = str(tmp_path_factory.mktemp("data"))
    build_demo(root)
    trial = load_space("demo").stages["optimize"].trials[0]
    cfg = trial.config.model_copy(update={"eval": trial.config.eval.model_copy(update={"fidelity_backbones": ["vgg16_r"]})})
    crops = [c.to_dict() for c in samples.choose_for_sweep(load_space("demo"), root)]
    evaluation = SREvaluation(cfg, RunEnv(data_root=root, samples=tuple(crops)), torch.device("cpu"))
    torch.manual_seed(0)
    g = create_generator("swinir", "tiny", scale=4).eval()
    out = {}
    for step in (20, 40, 60):
        out[step] = evaluation.run(g, step)
        g.conv_first.weight.data.mul_(0.9)  # the model moves between evaluations
    return trial, crops, out


def write_checkpoint(folder: Path, step: int, metrics: dict, files: dict[str, bytes]) -> str:
    """A checkpoint directory as raygrid.stages.loop.report lays it out."""
    folder.mkdir(parents=True)
    torch.save({"ema": {"w": torch.zeros(2)}, "opt_g": {"big": torch.ones(10)}, "step": step}, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps({"step": step, "metrics": metrics}))
    for rel, content in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    return str(folder)


def image_steps(client, run_id: str) -> dict[str, list[int]]:
    """{key: steps} of the images MLflow stores for `log_image(key=..., step=...)`."""
    out: dict[str, list[int]] = {}
    for f in client.list_artifacts(run_id, "images"):
        m = re.match(r"(.+)\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png$", Path(f.path).name)
        if m:
            out.setdefault(m[1].replace("~", "/"), []).append(int(m[2]))
    return {k: sorted(v) for k, v in out.items()}


def download(client, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def test_tables_images_and_record_are_logged_per_step_once_also_after_a_restore(tmp_path, evaluations):
    trial_spec, crops, evals = evaluations
    uri, exp, parent = sweep_store(tmp_path)
    trial = FakeTrial("t0", {"spec": trial_spec.to_json()})
    paths = {s: write_checkpoint(tmp_path / "ray" / f"ckpt{s}", s, m, f) for s, (m, f) in evals.items()}

    def logger():
        return tracking.TrialRunLogger(uri, exp, parent, "demo", "optimize", "val/psnr_y", "max", 60,
                                       str(tmp_path / "ray"), telemetry=False)

    def result(step):
        return {"step": step, **evals[step][0], "checkpoint_path": paths[step]}

    first = logger()
    first.on_trial_start(0, [trial], trial)
    first.on_trial_result(0, [trial], trial, result(20))
    first.on_trial_result(0, [trial], trial, result(40))
    # the driver died; a new callback without saved state sees steps 40 (again) and 60
    second = logger()
    second.on_trial_start(0, [trial], trial)
    second.on_trial_result(0, [trial], trial, result(40))
    second.on_trial_result(0, [trial], trial, result(60))
    # a checkpoint that Train pruned before the callback read it: named in a tag, metrics still logged
    second.on_trial_result(0, [trial], trial, {"step": 80, "val/psnr_y": 1.0, "checkpoint_path": str(tmp_path / "gone")})
    second.on_trial_complete(0, [trial], trial)

    client = names.client(uri)
    run_id = names.search_trial_runs(uri, "demo").run_id.iloc[0]
    tables = sorted(f.path for f in client.list_artifacts(run_id, records.ARTIFACT_SCORES_DIR))
    assert tables == ["scores/step_00000020.parquet", "scores/step_00000040.parquet", "scores/step_00000060.parquet"]
    for step in (20, 40, 60):
        logged = records.read_table(download(client, run_id, records.ARTIFACT_SCORES.format(step=step)), "optimize")
        assert logged.equals(records.read_table(evals[step][1][records.CKPT_SCORES]))
    assert json.loads(download(client, run_id, records.ARTIFACT_EVALUATORS)) == json.loads(
        evals[20][1][records.CKPT_EVALUATORS])
    assert image_steps(client, run_id) == {f"sr/{c['id']}": [20, 40, 60] for c in crops}
    assert client.get_run(run_id).data.tags[records.TAG_RECORDS_MISSING] == "80"
    assert [m.step for m in client.get_metric_history(run_id, "val/psnr_y")] == [20, 40, 60, 80]


def test_records_are_read_from_s3_checkpoints(tmp_path, evaluations, s3_env):
    import boto3
    import pyarrow.fs

    from raygrid import io

    trial_spec, crops, evals = evaluations
    bucket = "ckpt-records"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=bucket)
    local = write_checkpoint(tmp_path / "local" / "ckpt20", 20, *evals[20])
    fs, _ = io.filesystem(f"s3://{bucket}", s3_env)
    pyarrow.fs.copy_files(local, f"{bucket}/ray/trial/checkpoint_000000", destination_filesystem=fs)
    shutil.rmtree(local)
    uri, exp, parent = sweep_store(tmp_path)
    trial = FakeTrial("t0", {"spec": trial_spec.to_json()})
    log = tracking.TrialRunLogger(uri, exp, parent, "demo", "optimize", "val/psnr_y", "max", 60,
                                  f"s3://{bucket}/ray", endpoint_url=s3_env, telemetry=False)
    log.on_trial_start(0, [trial], trial)
    # Tune gives the checkpoint's path inside the storage filesystem (bucket/key, no scheme)
    log.on_trial_result(0, [trial], trial, {"step": 20, **evals[20][0],
                                            "checkpoint_path": f"{bucket}/ray/trial/checkpoint_000000"})
    client = names.client(uri)
    run_id = names.search_trial_runs(uri, "demo").run_id.iloc[0]
    assert [f.path for f in client.list_artifacts(run_id, "scores")] == ["scores/step_00000020.parquet"]
    assert image_steps(client, run_id) == {f"sr/{c['id']}": [20] for c in crops}
    assert records.TAG_RECORDS_MISSING not in client.get_run(run_id).data.tags
