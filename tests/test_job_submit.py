"""The README's cluster flow on a local `ray start --head` on loopback: sweeps submitted with
`ray job submit --working-dir .` (token authentication, the entrypoint on the head, `--address
auto`), one stopped with `ray job stop` (SIGTERM: its MLflow runs end KILLED) and resumed by
submitting the same command with `--resume`."""

from __future__ import annotations

import subprocess
import time

import pytest
import ray_procs as rp

pytestmark = pytest.mark.slow  # starts Ray


NO_AGENT = "No available agent to submit job"  # the head's job agent has not registered yet


def job(env, *args, timeout=900) -> subprocess.CompletedProcess:
    """`ray job ARGS`. A submission that a head just started refuses with "No available agent to
    submit job, please try again later" is tried again (for up to a minute), as the message asks:
    the submission was not created, so its id is still free."""
    deadline = time.time() + 60
    while True:
        proc = subprocess.run(["ray", "job", *args], capture_output=True, text=True, env=env, cwd=rp.REPO,
                              timeout=timeout)
        if args[0] != "submit" or NO_AGENT not in proc.stderr or time.time() > deadline:
            return proc
        time.sleep(2)


def test_job_submit_then_job_stop_ends_runs_killed_and_resume_finishes(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    # RAY_JOB_STOP_WAIT_TIME_S: how long `ray job stop` waits after SIGTERM before SIGKILL (Ray's
    # default is 3 s); cluster.yaml sets the same on its head.
    with rp.head(cache, num_cpus=2, resources={"TRAIN_DRIVER": 4},
                 extra_env={"RAY_JOB_STOP_WAIT_TIME_S": "120"}) as h:
        env = dict(h.env, RAY_ADDRESS=h.dashboard)
        tiny = rp.tiny_space("jobs", {"assess": {"axes": {"fidelity.backbone": ["vgg16_r"]},
                                                 "base": {"max_pairs": 16, "n_boot": 20}}}, tmp_path / "tiny.yaml")
        first = ["--space", str(tiny), "--address", "auto", "--output-dir", str(tmp_path / "runs-1"), "--no-report"]
        done = job(env, "submit", "--working-dir", ".", "--submission-id", "tiny-1", "--",
                   "python", "-m", "raygrid.sweep", *first)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "sweep 'jobs' done" in done.stdout
        assert {r["status"] for r in rp.trial_runs(tmp_path / "runs-1" / "mlflow.db")} == {"FINISHED"}

        slow = rp.tiny_space("stopped", {"optimize": rp.tiny_optimize(steps=12, eval_every=2)}, tmp_path / "slow.yaml")
        out = tmp_path / "runs-2"
        db = out / "mlflow.db"
        args = ["--space", str(slow), "--address", "auto", "--output-dir", str(out), "--no-report"]
        sub = job(env, "submit", "--working-dir", ".", "--submission-id", "slow-1", "--no-wait", "--",
                  "python", "-m", "raygrid.sweep", *args)
        assert sub.returncode == 0, sub.stderr
        rp.wait_for(lambda: [r for r in rp.trial_runs(db) if (r["step"] or 0) >= 4], 600, "a trial at step 4")
        stop = job(env, "stop", "slow-1", timeout=300)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "was stopped" in job(env, "status", "slow-1").stdout
        logs = job(env, "logs", "slow-1").stdout
        assert "SIGTERM: stopping the sweep" in logs and "interrupted (SIGTERM)" in logs, logs
        assert "resume with: python -m raygrid.sweep" in logs and "has timed out" not in logs
        trial = rp.trial_runs(db)
        assert [(r["status"], r["tags"].get("raygrid.outcome")) for r in trial] == [("KILLED", "interrupted")]
        assert [r["status"] for r in rp.sweep_runs(db)] == ["KILLED"]

        again = job(env, "submit", "--working-dir", ".", "--submission-id", "slow-2", "--",
                    "python", "-m", "raygrid.sweep", *args, "--resume")
        assert again.returncode == 0, again.stdout + again.stderr
        trial = rp.trial_runs(db)
        assert [(r["status"], r["tags"].get("raygrid.outcome")) for r in trial] == [("FINISHED", "finished")]
        assert [r["status"] for r in rp.sweep_runs(db)] == ["FINISHED"]
        from raygrid.spec import mlflow as names

        starts = [m.value for m in names.client(f"sqlite:///{db}").get_metric_history(trial[0]["run_id"],
                                                                                     "progress/start_step")]
        assert starts[0] == 0 and starts[-1] >= 4, starts  # went on from its checkpoint
