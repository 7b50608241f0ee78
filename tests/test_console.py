"""The console: Ray's and Tune's output into the log file, raygrid's few lines on the terminal; the
progress line of a stage; the summary of an interrupted sweep; the MLflow runs an interruption
leaves (KILLED, outcome interrupted, reopened on resume). No Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_store import sweep_store

from raygrid.run import console as console_mod
from raygrid.run import failures, interrupt, tracking
from raygrid.run import progress as progress_mod
from raygrid.run.summary import StageSummary, SweepResult, format_summary
from raygrid.space import load_space
from raygrid.spec import mlflow as names

REPO = Path(__file__).resolve().parents[1]

REDIRECTED = textwrap.dedent("""
    import os, sys
    from raygrid.run.console import Console
    with Console(sys.argv[1], verbose=False) as c:
        print("python print goes to the log")
        os.write(2, b"C-level stderr goes to the log\\n")
        c.say("raygrid line for the person")
        log = c.log_file
    print("after: back on the terminal")
    print("LOG", log)
""")


def test_ray_output_goes_to_the_log_file_and_raygrid_lines_to_the_terminal(tmp_path):
    proc = subprocess.run([sys.executable, "-c", REDIRECTED, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["raygrid line for the person", "after: back on the terminal"]
    assert proc.stderr == ""
    log = Path(proc.stdout.split("LOG ")[1].strip()).read_text()
    assert "python print goes to the log" in log and "C-level stderr goes to the log" in log
    assert "raygrid line for the person" in log  # the log file is complete


@dataclass
class Trial:
    trial_id: str
    status: str = "RUNNING"
    last_result: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


class Lines(console_mod.Console):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)


def test_progress_line_counts_best_eta_and_each_failure_once(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress_mod.time, "time", lambda: clock[0])
    out = Lines()
    p = progress_mod.StageProgress(out, "optimize", total=4, budget_steps=100, metric="val/psnr_y", mode="max")
    trials = [Trial("a"), Trial("b"), Trial("c", "PENDING"), Trial("d", "PENDING")]
    clock[0] += 10
    p.on_trial_result(0, trials, trials[0], {"step": 50, "val/psnr_y": 20.0})
    p.on_trial_result(0, trials, trials[1], {"step": 50, "val/psnr_y": 22.5})
    # 100 steps in 10 s; 50 + 50 + 100 + 100 left -> 30 s
    assert p.eta_seconds() == 30.0
    assert p.line() == "[optimize] 0/4 done, 0 running, best val/psnr_y=22.5, 10 s elapsed, ETA 30 s"
    failure = failures.Failure("permanent", "ImageDecodeError", "cannot decode image /d/x.png: truncated",
                               "raygrid/data/images.py:81 in read_rgb")
    trials[0].last_result = {failures.RESULT_KEY: failure.to_json()}
    trials[0].status = "TERMINATED"
    p.on_trial_complete(0, trials, trials[0])
    p.on_trial_complete(0, trials, trials[0])  # the message reaches the console once
    said = [ln for ln in out.lines if "failed:" in ln]
    assert said == ["[optimize] trial a failed: ImageDecodeError: cannot decode image /d/x.png: truncated "
                    "(raygrid/data/images.py:81 in read_rgb)"]
    assert p.counts() == {"done": 0, "running": 1, "stopped": 0, "failed": 1}


def test_a_pipe_gets_a_line_per_change_at_most_every_interval(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_mod.time, "time", lambda: clock[0])
    out = Lines()
    p = progress_mod.StageProgress(out, "assess", total=30, budget_steps=1, metric="abs_srcc", mode="max")
    trials = [Trial(str(i)) for i in range(30)]
    for i in range(30):  # 30 trials end within 60 s
        clock[0] += 2
        p.on_trial_result(0, trials, trials[i], {"step": 1, "abs_srcc": 0.1})
        trials[i].status = "TERMINATED"
        p.on_trial_complete(0, trials, trials[i])
        p.on_step_end(0, trials)
    p.on_experiment_end(trials)
    assert 2 <= len(out.lines) <= 4, out.lines
    assert out.lines[-1].startswith("[assess] 30/30 done, 0 running")


def test_the_summary_of_an_interrupted_sweep_says_how_to_resume():
    result = SweepResult("demo", "run1", "sqlite:///x/mlflow.db", "/x", "/x/ray", interrupted="SIGINT",
                         not_started=["transfer"], log_file="/x/logs/sweep.log")
    result.stages = [StageSummary("assess", trials=6, finished=6), StageSummary("optimize", trials=9, finished=3,
                                                                               interrupted=6)]
    text = format_summary(result, "python -m raygrid.sweep --resume")
    assert "sweep 'demo' interrupted (SIGINT)" in text
    assert any(ln.split()[:6] == ["optimize", "9", "3", "0", "0", "6"] for ln in text.splitlines())
    assert any(ln.startswith("transfer") and ln.endswith("not started") for ln in text.splitlines())
    assert text.splitlines()[-1] == "resume with: python -m raygrid.sweep --resume"
    assert "full log (Ray and Tune output): /x/logs/sweep.log" in text


# ---------------------------------------------------------------------------------------------
# MLflow runs of an interrupted / failed trial (the tracking callback, driven as Tune does)
# ---------------------------------------------------------------------------------------------


def trial_logger(uri, exp, parent, tmp_path):
    return tracking.TrialRunLogger(uri, exp, parent, "demo", "optimize", "val/psnr_y", "max", 60,
                                   str(tmp_path / "ray"), telemetry=False)


def test_interrupted_trials_end_killed_and_reopen_on_resume(tmp_path, monkeypatch):
    uri, exp, parent = sweep_store(tmp_path)
    spec = load_space("demo").stages["optimize"].trials
    trials = [Trial("t0", config={"spec": spec[0].to_json()}), Trial("t1", config={"spec": spec[1].to_json()})]
    log = trial_logger(uri, exp, parent, tmp_path)
    for t in trials:
        log.on_trial_start(0, trials, t)
    log.on_trial_result(0, trials, trials[0], {"step": 20, "val/psnr_y": 20.0, "training_iteration": 1})
    log.on_step_end(0, trials)
    monkeypatch.setattr(interrupt, "_received", [2])  # SIGINT arrived; Tune's clean-up then ends the fit
    for t in trials:
        t.status = "TERMINATED"
    log.on_experiment_end(trials)
    runs = names.search_trial_runs(uri, "demo").set_index("tags.raygrid.trial_id")
    assert set(runs.status) == {"KILLED"} and set(runs["tags.raygrid.outcome"]) == {"interrupted"}
    assert runs.loc["t0", "tags.raygrid.outcome_reason"] == "SIGINT at step 20"
    assert runs.loc["t0", "tags.raygrid.outcome_step"] == "20"

    # --resume: Tune restores the callback's state into a new logger; the runs continue
    monkeypatch.setattr(interrupt, "_received", [])
    again = trial_logger(uri, exp, parent, tmp_path)
    again.set_state(log.get_state())
    for t in trials:
        t.status = "RUNNING"
        again.on_trial_start(0, trials, t)
    runs = names.search_trial_runs(uri, "demo").set_index("tags.raygrid.trial_id")
    assert set(runs.status) == {"RUNNING"}
    assert runs.get("tags.raygrid.outcome", runs.status.map(lambda _: None)).isna().all()
    again.on_trial_result(0, trials, trials[0], {"step": 60, "val/psnr_y": 21.0, "training_iteration": 1})
    again.on_trial_complete(0, trials, trials[0])
    run = names.search_trial_runs(uri, "demo").set_index("tags.raygrid.trial_id").loc["t0"]
    assert run.status == "FINISHED" and run["tags.raygrid.outcome"] == "finished"
    assert len(names.search_trial_runs(uri, "demo")) == 2  # no duplicate runs


def test_a_permanent_failure_reported_by_the_driver_fails_the_run_with_the_file_and_line(tmp_path):
    uri, exp, parent = sweep_store(tmp_path)
    spec = load_space("demo").stages["optimize"].trials[0]
    trial = Trial("t0", config={"spec": spec.to_json()})
    log = trial_logger(uri, exp, parent, tmp_path)
    log.on_trial_start(0, [trial], trial)
    failure = failures.Failure("permanent", "BenchmarkFormatError", "/d/labels.csv, line 3: column 'mos' is 'abc'",
                               "raygrid/data/iqa/parsing.py:70 in _number", "Traceback ...\n  File ...\n")
    trial.last_result = {failures.RESULT_KEY: failure.to_json()}
    log.on_trial_result(0, [trial], trial, dict(trial.last_result, training_iteration=1))  # not a step
    log.on_trial_complete(0, [trial], trial)
    run = names.search_trial_runs(uri, "demo").iloc[0]
    assert run.status == "FAILED" and run["tags.raygrid.outcome"] == "failed"
    assert run["tags.raygrid.error"].splitlines()[-1] == (
        "BenchmarkFormatError: /d/labels.csv, line 3: column 'mos' is 'abc' (raygrid/data/iqa/parsing.py:70 in _number)")
    assert names.client(uri).get_metric_history(run.run_id, names.METRIC_STEP) == []  # no step was logged
