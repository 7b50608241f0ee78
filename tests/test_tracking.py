"""The MLflow side of a sweep, without Ray: one run per trial (also after a restore), metrics at
the trial's own step, outcome tags, checkpoint artifacts without optimiser state."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import torch
from mlflow_store import sweep_store

from raygrid.run import tracking
from raygrid.space import load_space
from raygrid.spec import mlflow as names


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    status: str = "RUNNING"
    error_file: str | None = None
    extra: dict = field(default_factory=dict)


def logger(uri, exp, parent, tmp_path, budget=120):
    return tracking.TrialRunLogger(uri, exp, parent, "demo", "optimize", "val/psnr_y", "max", budget,
                                   str(tmp_path / "ray"), telemetry=False)


def fake_trial(index=0, trial_id="t0"):
    t = load_space("demo").stages["optimize"].trials[index]
    return FakeTrial(trial_id, {"spec": t.to_json()})


def checkpoint(tmp_path, name, step):
    d = tmp_path / "ray" / name
    d.mkdir(parents=True)
    torch.save({"generator": {"w": torch.ones(2)}, "ema": {"w": torch.zeros(2)}, "opt_g": {"big": torch.ones(1000)},
                "rng": {"torch": torch.get_rng_state()}, "step": step}, d / "state.pt")
    (d / "meta.json").write_text(json.dumps({"step": step}))
    return str(d)


def test_one_run_per_trial_with_params_tags_and_step_metrics(tmp_path):
    uri, exp, parent = sweep_store(tmp_path)
    log = logger(uri, exp, parent, tmp_path)
    trial = fake_trial()
    log.on_trial_start(0, [trial], trial)
    c1 = checkpoint(tmp_path, "c30", 30)
    c2 = checkpoint(tmp_path, "c60", 60)
    log.on_trial_result(0, [trial], trial, {"step": 30, "val/psnr_y": 20.0, "training_iteration": 1, "checkpoint_path": c1})
    log.on_trial_result(0, [trial], trial, {"step": 60, "val/psnr_y": 19.0, "training_iteration": 2, "checkpoint_path": c2})
    log.on_trial_complete(0, [trial], trial)

    runs = names.search_trial_runs(uri, "demo")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.mlflow.parentRunId"] == parent
    assert run["tags.raygrid.stage"] == "optimize" and run["tags.raygrid.trial_id"] == "t0"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", run["tags.raygrid.git_commit"])
    assert run["tags.raygrid.version.torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert run["params.fidelity.backbone"] == "vgg16_r" and run["params.budget.steps"] == "60"
    assert json.loads(run["params.data.val"]) == ["demo_sr_select"]
    client = names.client(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val/psnr_y")] == [(30, 20.0), (60, 19.0)]
    assert "training_iteration" not in run.index.str.replace("metrics.", "").tolist()
    # stopped before its 60-step budget (the logger is told 120); the best checkpoint is the step-30 one
    assert run["tags.raygrid.outcome"] == "stopped" and run.status == "FINISHED"
    assert run["tags.raygrid.checkpoint.best"] == c1 and run["tags.raygrid.checkpoint.final"] == c2
    best = client.download_artifacts(run.run_id, "checkpoints/best/model.pt", str(tmp_path))
    model = torch.load(best, weights_only=False)
    assert set(model) == {"generator", "ema", "step"} and model["step"] == 30  # no optimiser / RNG state


def test_a_restored_trial_continues_its_run_without_relogging_steps(tmp_path):
    uri, exp, parent = sweep_store(tmp_path)
    trial = fake_trial()
    first = logger(uri, exp, parent, tmp_path)
    first.on_trial_start(0, [trial], trial)
    first.on_trial_result(0, [trial], trial, {"step": 30, "val/psnr_y": 20.0})
    # the driver process died; a new logger (as after Tuner.restore without saved state) sees the
    # trial again and re-reported steps 30 and 60
    second = logger(uri, exp, parent, tmp_path)
    second.on_trial_start(0, [trial], trial)
    second.on_trial_result(0, [trial], trial, {"step": 30, "val/psnr_y": 99.0})
    second.on_trial_result(0, [trial], trial, {"step": 60, "val/psnr_y": 21.0})
    second.on_trial_complete(0, [trial], trial)
    runs = names.search_trial_runs(uri, "demo")
    assert len(runs) == 1
    history = names.client(uri).get_metric_history(runs.run_id.iloc[0], "val/psnr_y")
    assert [(m.step, m.value) for m in history] == [(30, 20.0), (60, 21.0)]


def test_a_retry_that_restarts_behind_the_logged_steps_still_records_where_it_started(tmp_path):
    # The first attempt logged steps 2 and 4, but only step 2's checkpoint was registered when its
    # node went away: the retry restarts at 2 and re-reports step 4. Its values are not logged
    # twice, but its start step is, so the run's history shows the restart.
    uri, exp, parent = sweep_store(tmp_path)
    log = logger(uri, exp, parent, tmp_path)
    trial = fake_trial()
    log.on_trial_start(0, [trial], trial)
    log.on_trial_result(0, [trial], trial, {"step": 2, "val/psnr_y": 10.0, "progress/start_step": 0})
    log.on_trial_result(0, [trial], trial, {"step": 4, "val/psnr_y": 11.0})
    log.on_trial_recover(0, [trial], trial)
    log.on_trial_result(0, [trial], trial, {"step": 4, "val/psnr_y": 11.5, "progress/start_step": 2})
    log.on_trial_result(0, [trial], trial, {"step": 6, "val/psnr_y": 12.0})
    client = names.client(uri)
    run_id = names.search_trial_runs(uri, "demo").run_id.iloc[0]
    assert [m.value for m in client.get_metric_history(run_id, "progress/start_step")] == [0.0, 2.0]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/psnr_y")] == [(2, 10.0), (4, 11.0), (6, 12.0)]


def test_failed_trial_is_tagged_with_its_error(tmp_path):
    uri, exp, parent = sweep_store(tmp_path)
    log = logger(uri, exp, parent, tmp_path)
    err = tmp_path / "error.txt"
    err.write_text("TrainingDiverged: non-finite loss at step 7: loss/g_total=nan")
    trial = fake_trial(trial_id="t9")
    trial.error_file = str(err)
    log.on_trial_start(0, [trial], trial)
    log.on_trial_error(0, [trial], trial)
    run = names.search_trial_runs(uri, "demo").iloc[0]
    assert run.status == "FAILED" and run["tags.raygrid.outcome"] == "failed"
    assert "non-finite loss at step 7" in run["tags.raygrid.error"]


def test_resume_reuses_the_sweep_run_of_the_same_storage(tmp_path):
    uri, exp, parent = sweep_store(tmp_path)
    again, resumed = tracking.start_sweep_run(uri, exp, "demo", str(tmp_path / "ray"), resume=True)
    assert resumed and again == parent
    other, resumed = tracking.start_sweep_run(uri, exp, "demo", str(tmp_path / "elsewhere"), resume=True)
    assert not resumed and other != parent


def test_flatten_joins_keys_and_serialises_lists():
    assert names.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}
