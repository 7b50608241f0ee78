"""End to end on a local Ray instance: few and tiny (every nested TorchTrainer costs 10-25 s).

- a trial that fails once is retried by Tune and continues from its last checkpoint at the same
  step; MLflow holds exactly one run per trial; transfer starts from the optimize run's
  discriminator (lineage tag); `--resume` of the finished sweep reruns nothing;
- Tune storage and MLflow artifacts on a real S3 API (moto_server) on loopback;
- after every sweep no placement group is left behind.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from raygrid.run.options import RunOptions
from raygrid.run.runner import execute
from raygrid.space import SPACES_DIR, parse_space
from raygrid.spec import mlflow as names

pytestmark = pytest.mark.slow  # starts Ray


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray instance for the module. Its workers inherit this environment, including the
    fault injection: the first train loop to reach step 5 crashes once (marker file)."""
    import os

    import ray

    marker = tmp_path_factory.mktemp("fault") / "failed-once"
    os.environ["RAYGRID_FAIL_ONCE"] = f"5:{marker}"
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.25"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=True, logging_level="WARNING")
    yield marker
    ray.shutdown()
    del os.environ["RAYGRID_FAIL_ONCE"]


def assert_no_placement_groups_left(timeout: float = 30.0) -> None:
    """Ray Train's placement-group cleaner needs a few seconds after a trainer ends."""
    import ray.util

    deadline = time.time() + timeout
    while True:
        alive = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
        if not alive or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not alive, f"placement groups left behind: {[(p['name'], p['state']) for p in alive]}"


def tiny_sweep(stages: dict) -> dict:
    raw = yaml.safe_load((SPACES_DIR / "demo.yaml").read_text())
    raw["name"] = "tiny"
    out = {}
    for name, changes in stages.items():
        stage = raw["stages"][name]
        for key, value in changes.items():
            stage[key] = value
        stage.setdefault("base", {})
        out[name] = stage
    raw["stages"] = out
    return raw


def optimize_and_transfer() -> dict:
    raw = tiny_sweep({
        "optimize": {
            "axes": {"fidelity.backbone": ["vgg16_r"], "loss.adversarial_weight": [0.05],
                     "adversarial.discriminator": ["patch_resnet50"]},
            "conditions": [], "linked": {},
            "budget": {"steps": 6, "eval_every": 2},
            "scheduler": {"kind": "asha", "metric": "val/psnr_y", "mode": "max", "grace_period": 2,
                          "reduction_factor": 2},
        },
        "transfer": {
            # the discriminator init from ImageNet, from the optimize cell the space's rule names
            # (patch head, VGG-16-R loss, weight 0.05, same seed, final checkpoint)
            "axes": {"model.backbone": ["resnet50"]},
            "linked": {"init": {"disc_imagenet": {"model.init": "discriminator", "model.discriminator.weights": "imagenet"}},
                       "protocol": {"nr_demo": {"model.kind": "nr", "data.train": "demo_nr", "data.test": ["demo_nr"]}}},
            "budget": {"steps": 4, "eval_every": 2},
            "scheduler": {"kind": "asha", "metric": "val/srcc", "mode": "max", "grace_period": 2,
                          "reduction_factor": 2},
        },
    })
    opt = raw["stages"]["optimize"]["base"]
    opt["data"]["batch_size"] = 2
    opt["eval"]["fidelity_backbones"] = ["vgg16_r"]
    raw["stages"]["optimize"]["max_failures"] = 1
    tr = raw["stages"]["transfer"]["base"]
    tr["data"].update(max_images=16, batch_size=4)
    tr["n_boot"] = 20
    return raw


def test_failed_trial_resumes_at_its_checkpoint_and_lineage_reaches_transfer(ray_local, tmp_path):
    marker = ray_local  # the optimize trial crashes at step 5, after its step-4 checkpoint
    sweep = parse_space(optimize_and_transfer(), source="tiny.yaml")
    opts = RunOptions(output_dir=str(tmp_path / "out"), report=False)
    result = execute(sweep, opts)
    assert_no_placement_groups_left()

    assert marker.read_text() == "5"
    by_stage = {s.name: s for s in result.stages}
    assert (by_stage["optimize"].trials, by_stage["optimize"].failed) == (1, 0)
    assert (by_stage["transfer"].trials, by_stage["transfer"].failed) == (1, 0)

    client = names.client(result.tracking_uri)
    runs = names.search_trial_runs(result.tracking_uri, "tiny", sweep_run_id=result.sweep_run_id)
    assert sorted(runs["tags.raygrid.stage"]) == ["optimize", "transfer"]  # one run per trial, no duplicates
    opt = runs[runs["tags.raygrid.stage"] == "optimize"].iloc[0]
    assert opt["tags.raygrid.retries"] == "1"
    assert opt["tags.mlflow.parentRunId"] == result.sweep_run_id
    assert opt["params.fidelity.backbone"] == "vgg16_r" and opt["params.adversarial.discriminator"] == "patch_resnet50"
    # the retry restarted from the step-4 checkpoint, not from zero, and every step is logged once
    starts = [m.value for m in client.get_metric_history(opt.run_id, "progress/start_step")]
    assert starts == [0.0, 4.0]
    steps = [m.step for m in client.get_metric_history(opt.run_id, "val/psnr_y")]
    assert steps == [2, 4, 6]
    # the space reports the final checkpoint and selects on nothing: no "best" checkpoint is kept
    assert {a.path for a in client.list_artifacts(opt.run_id, "checkpoints")} == {"checkpoints/final"}
    assert opt["tags.raygrid.outcome"] == "finished"

    tr = runs[runs["tags.raygrid.stage"] == "transfer"].iloc[0]
    assert tr["tags.raygrid.init_from_run"] == opt.run_id
    assert tr["params.model.discriminator_checkpoint"].startswith(opt["tags.raygrid.checkpoint.final"])
    assert [m.step for m in client.get_metric_history(tr.run_id, "val/srcc")] == [2, 4]

    # --resume of a finished sweep: nothing reruns, no new runs, the same parent run
    again = execute(sweep, RunOptions(output_dir=str(tmp_path / "out"), report=False, resume=True))
    assert again.sweep_run_id == result.sweep_run_id
    assert len(names.search_trial_runs(result.tracking_uri, "tiny")) == 2
    assert_no_placement_groups_left()


def test_optuna_stage_with_tune_storage_and_mlflow_artifacts_on_s3(ray_local, tmp_path, s3_env):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="raygrid-test")
    # Optuna picks the grid point and samples the α/β fitting learning rate
    raw = tiny_sweep({"assess": {"axes": {"fidelity.backbone": ["vgg16_r"], "fit_on": ["demo_fr"]},
                                 "search": {"num_samples": 1, "params": {"lr": {"loguniform": [1e-4, 1e-2]}}}}})
    raw["stages"]["assess"]["base"].update(max_pairs=16, n_boot=20)
    sweep = parse_space(raw, source="tiny-s3.yaml")
    opts = RunOptions(output_dir=str(tmp_path / "out"), storage="s3://raygrid-test/ray",
                      artifact_root="s3://raygrid-test/mlflow", s3_endpoint_url=s3_env, report=False)
    result = execute(sweep, opts)
    assert_no_placement_groups_left()
    assert result.stages[0].finished == 1

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="raygrid-test").get("Contents", [])]
    assert any(k.startswith("ray/tiny/train/assess-") and k.endswith("/state.pt") for k in keys), keys
    assert any(k.startswith("ray/tiny-assess/") for k in keys), keys  # Tune's experiment state
    run = names.search_trial_runs(result.tracking_uri, "tiny", stage="assess").iloc[0]
    assert run["artifact_uri"].startswith("s3://raygrid-test/mlflow/")
    assert any(k.startswith("mlflow/") and k.endswith("checkpoints/best/model.pt") for k in keys), keys
    assert run["tags.raygrid.checkpoint.best"].startswith("s3://raygrid-test/ray/tiny/train/assess-")
    # the sampled value is the trial's logged param, inside its range, and part of its point
    assert 1e-4 <= float(run["params.lr"]) <= 1e-2 and run["params.fit_on"] == "demo_fr"
    assert float(json.loads(run["tags.raygrid.point"])["lr"]) == float(run["params.lr"])
