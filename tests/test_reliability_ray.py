"""Reliability end to end on a local Ray instance, each sweep a separate `python -m raygrid.sweep`
process as a user runs it (Ctrl-C is sent to its whole process group, as a terminal does):

- Ctrl-C mid-stage: no next stage, exit 130, trial and sweep runs KILLED, and the printed
  --resume command finishes the sweep from the trials' checkpoints; the console of that
  demo-like sweep (every stage) stays under 60 lines, Ray's output is in the log file;
- SIGKILL of the driver leaves no Ray process behind, and the next run takes over the lock;
- a corrupt PNG in an SR training folder and a `csv:` benchmark listing a corrupt image fail their
  trials once (no retry), with the file (and label line) in MLflow's error tag and the summary;
- raygrid's exceptions cross a Ray task boundary intact.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import ray_procs as rp
from test_reliability import instances, truncated_png

from raygrid.data.images import write_rgb

pytestmark = pytest.mark.slow  # starts Ray


@pytest.fixture
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(rp.sweep_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=rp.REPO, start_new_session=True)


def test_ctrl_c_mid_stage_stops_cleanly_and_resume_finishes(tmp_path, cache):
    space = rp.tiny_space("ctrlc", {"optimize": rp.tiny_optimize(steps=12, eval_every=2, trials=2),
                                    "transfer": {"axes": {"model.backbone": ["resnet50"], "model.init": ["random"]},
                                                 "budget": {"steps": 4, "eval_every": 2},
                                                 "scheduler": {"kind": "none", "metric": "val/srcc", "mode": "max"},
                                                 "linked": {
                                                     "protocol": {"nr": {"model.kind": "nr", "data.train": "demo_nr",
                                                                         "data.test": ["demo_nr"]}}},
                                                 "base": {"data": {"max_images": 16, "batch_size": 4}, "n_boot": 20}}},
                          tmp_path / "ctrlc.yaml")
    out, db = tmp_path / "out", tmp_path / "out" / "mlflow.db"
    env = rp.base_env(cache)
    proc = start(["--space", str(space), "--output-dir", str(out), "--no-report", "--num-cpus", "2"], env)

    def optimize_checkpointed():
        return [r for r in rp.trial_runs(db) if r["tags"].get("raygrid.stage") == "optimize" and (r["step"] or 0) >= 4]

    rp.wait_for(optimize_checkpointed, 600, "an optimize trial at step 4", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
    first, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, first
    assert "SIGINT: stopping the sweep" in first and "interrupted (SIGINT)" in first
    lines = first.strip().splitlines()
    assert lines[-1].startswith("resume with: python -m raygrid.sweep --space") and lines[-1].endswith("--resume")
    assert any(ln.startswith("transfer") and ln.endswith("not started") for ln in lines), first
    trials = rp.trial_runs(db)
    assert not [r for r in trials if r["tags"]["raygrid.stage"] == "transfer"]  # no next stage
    killed = [r for r in trials if r["tags"]["raygrid.stage"] == "optimize" and r["status"] != "FINISHED"]
    assert killed and all(r["status"] == "KILLED" and r["tags"]["raygrid.outcome"] == "interrupted" for r in killed)
    assert not [r for r in trials if r["status"] == "RUNNING"]
    assert [r["status"] for r in rp.sweep_runs(db)] == ["KILLED"]

    # the printed command resumes it
    resume = shlex.split(lines[-1].removeprefix("resume with: "))
    assert resume[:3] == ["python", "-m", "raygrid.sweep"]
    again = subprocess.run(rp.sweep_cmd(*resume[3:]), capture_output=True, text=True, env=env, cwd=rp.REPO,
                           timeout=900)
    console = again.stdout + again.stderr
    assert again.returncode == 0, console
    trials = rp.trial_runs(db)
    assert sorted(r["tags"]["raygrid.stage"] for r in trials) == ["optimize", "optimize", "transfer"]  # one run per trial
    assert {r["status"] for r in trials} == {"FINISHED"} and {r["tags"]["raygrid.outcome"] for r in trials} == {"finished"}
    assert [r["status"] for r in rp.sweep_runs(db)] == ["FINISHED"]
    from raygrid.spec import mlflow as names

    client = names.client(f"sqlite:///{db}")
    for r in killed:  # it went on from its checkpoint, not from step 0
        starts = [m.value for m in client.get_metric_history(r["run_id"], "progress/start_step")]
        assert starts[0] == 0 and starts[-1] >= 2, starts

    # the console of a sweep through every stage is short, with the summary at the end; the log
    # file has Ray's and Tune's output
    assert len(console.splitlines()) < 60, console
    assert "sweep 'ctrlc' done" in console and console.rstrip().splitlines()[-1].startswith("full log")
    assert "== Status ==" not in console and "TrainController" not in console
    log = Path(console.rstrip().splitlines()[-1].split(": ", 1)[1]).read_text()
    assert "== Status ==" in log and "(TrainController" in log


def test_sigkill_leaves_no_ray_process_and_the_lock_is_taken_over(tmp_path, cache):
    import psutil

    one_trial = {"axes": {"fidelity.backbone": ["vgg16_r"]}, "base": {"max_pairs": 16, "n_boot": 20}}
    space = rp.tiny_space("killed", {"assess": one_trial}, tmp_path / "killed.yaml")
    out, db = tmp_path / "out", tmp_path / "out" / "mlflow.db"
    env = rp.base_env(cache)
    args = ["--space", str(space), "--output-dir", str(out), "--no-report", "--num-cpus", "2"]
    proc = start(args, env)
    rp.wait_for(lambda: [r for r in rp.trial_runs(db) if r["status"] == "RUNNING"], 300, "a running trial", proc)
    family = psutil.Process(proc.pid).children(recursive=True)
    ray_family = [p for p in family if "reaper" not in " ".join(p.cmdline())]
    assert any("raylet" in " ".join(p.cmdline()) for p in ray_family)
    proc.kill()  # SIGKILL to the driver only, as the OOM killer would
    proc.wait()
    _, alive = psutil.wait_procs(ray_family, timeout=30)
    assert not alive, [(p.pid, " ".join(p.cmdline())[:80]) for p in alive]

    again = subprocess.run(rp.sweep_cmd(*args, "--resume"), capture_output=True, text=True, env=env, cwd=rp.REPO,
                           timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {r["status"] for r in rp.trial_runs(db)} == {"FINISHED"} and len(rp.trial_runs(db)) == 1


def test_corrupt_png_and_csv_image_fail_once_with_the_file_and_line(tmp_path, cache):
    train = tmp_path / "train"
    for i in range(3):
        write_rgb(train / f"{i}.png", np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    bad_png = truncated_png(train / "3.png")
    bench = tmp_path / "bench"
    for name in ("ref", "d0", "d1"):
        write_rgb(bench / f"{name}.png", np.random.default_rng(7).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    bad_csv_image = truncated_png(bench / "d2.png")
    labels = bench / "labels.csv"
    labels.write_text("ref_name,dist_name,mos\n" + "".join(f"ref.png,d{i}.png,{i + 1}.0\n" for i in range(3)))
    space = rp.tiny_space("broken", {
        "assess": {"axes": {"fidelity.backbone": ["vgg16_r"]}, "max_failures": 2,
                   "base": {"benchmark": f"csv:{labels}", "max_pairs": 16, "n_boot": 20}},
        "optimize": {**rp.tiny_optimize(steps=4), "max_failures": 2, "base": {
            "data": {"train": str(train), "batch_size": 2}, "eval": {"fidelity_backbones": ["vgg16_r"]}}},
    }, tmp_path / "broken.yaml")
    out, db = tmp_path / "out", tmp_path / "out" / "mlflow.db"
    proc = subprocess.run(rp.sweep_cmd("--space", str(space), "--output-dir", str(out), "--no-report",
                                       "--num-cpus", "2"), capture_output=True, text=True, env=rp.base_env(cache),
                          cwd=rp.REPO, timeout=900)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1, console  # every trial failed
    trials = {r["tags"]["raygrid.stage"]: r for r in rp.trial_runs(db)}
    assert set(trials) == {"assess", "optimize"}
    for stage, path, line in (("assess", bad_csv_image, f"{labels}:4"), ("optimize", bad_png, None)):
        run = trials[stage]
        assert run["status"] == "FAILED" and run["tags"]["raygrid.outcome"] == "failed"
        last = run["tags"]["raygrid.error"].splitlines()[-1]
        assert last.startswith("ImageDecodeError: cannot decode image ") and str(path) in last, last
        assert "raygrid/data/images.py:" in last and "in read_rgb" in last
        if line:
            assert f"(listed at {line})" in last
        assert "raygrid.retries" not in run["tags"]  # not retried, although max_failures is 2
        shown = [ln for ln in console.splitlines() if "ImageDecodeError: cannot decode" in ln and str(path) in ln]
        assert len(shown) == 2, console  # once when it fails, once in the summary
    assert "failed trials:" in console and "Traceback" not in console


def test_raygrid_exceptions_cross_a_ray_task_boundary_intact():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        @ray.remote
        def raise_it(exc):
            raise exc

        for exc in instances():
            with pytest.raises(type(exc)) as caught:
                ray.get(raise_it.remote(exc))
            cause = caught.value.cause if hasattr(caught.value, "cause") else caught.value
            carried = {k: v for k, v in cause.__dict__.items() if k != "raised_at"}
            assert type(cause) is type(exc) and str(cause) == str(exc) and carried == exc.__dict__
            assert "in raise_it" in cause.raised_at  # where it was raised travels with it
    finally:
        ray.shutdown()
