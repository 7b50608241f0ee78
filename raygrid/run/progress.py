"""One stage's progress line on the sweep's console (raygrid.run.console), kept by a Tune callback.

On a terminal the line is redrawn in place; elsewhere (a pipe, `ray job logs`) a new line is
printed when a trial ends, at most every `NON_TTY_INTERVAL_S`, plus a heartbeat when nothing
ends for `HEARTBEAT_S`, so a log of the whole demo stays short. A module of its own because the
callback's base class is Ray Tune's: the console is in use (and a bad space reported) before
Ray is imported.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from raygrid.run import failures
from raygrid.run.console import Console

NON_TTY_INTERVAL_S = 30.0
HEARTBEAT_S = 300.0
TTY_INTERVAL_S = 1.0


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StageProgress(Callback):
    """One stage's progress line: trials done / running / stopped / failed of the total, the
    best value of the stage metric so far, elapsed time and an ETA from the trials' own
    throughput (steps per second of wall time, over the steps left). It also prints each failed
    trial's one-line message, once, and keeps what the summary needs (`failures`)."""

    def __init__(self, console: Console, stage: str, total: int, budget_steps: int, metric: str, mode: str):
        self.console, self.stage, self.total = console, stage, total
        self.budget, self.metric, self.mode = budget_steps, metric, mode
        self.steps: dict[str, int] = {}  # trial -> last step (this invocation and restored ones)
        self.first_step: dict[str, int] = {}  # trial -> the step it had when this invocation first saw it
        self.ended: dict[str, str] = {}  # trial -> finished | stopped | failed
        self.failures: dict[str, failures.Failure] = {}
        self.running = 0
        self.best: float | None = None
        self.t0 = time.time()
        self._shown_at = 0.0
        self._shown_counts: tuple = ()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "console": None}

    # -- Tune events --------------------------------------------------------------------------

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if failures.RESULT_KEY in result:
            return
        step = int(result.get("step", 0))
        self.first_step.setdefault(trial.trial_id, self.steps.get(trial.trial_id, 0))
        self.steps[trial.trial_id] = step
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and value == value:
            if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                self.best = float(value)

    def on_trial_complete(self, iteration, trials, trial, **info):
        failure = failures.from_result(getattr(trial, "last_result", None))
        if failure is not None:
            self._failed(trial.trial_id, failure)
        else:
            self.ended[trial.trial_id] = "finished" if self.steps.get(trial.trial_id, 0) >= self.budget else "stopped"
        self._show(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._failed(trial.trial_id, failures.from_trial(trial)
                     or failures.Failure("crash", "Error", "unknown error", ""))
        self._show(trials, force=True)

    def on_step_end(self, iteration, trials, **info):
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        self._show(trials, force=True, final=True)

    # -- the line -------------------------------------------------------------------------------

    def _failed(self, trial_id: str, failure: failures.Failure) -> None:
        self.ended[trial_id] = "failed"
        if trial_id not in self.failures and self.console is not None:
            self.console.say(f"[{self.stage}] trial {trial_id} failed: {failure.line()}")
        self.failures[trial_id] = failure

    def counts(self) -> dict[str, int]:
        ended = list(self.ended.values())
        return {"done": ended.count("finished"), "running": self.running, "stopped": ended.count("stopped"),
                "failed": ended.count("failed")}

    def eta_seconds(self) -> float | None:
        """Steps left over the steps per second this invocation has achieved."""
        elapsed = time.time() - self.t0
        done_steps = sum(s - self.first_step.get(t, 0) for t, s in self.steps.items())
        if done_steps <= 0 or elapsed <= 0:
            return None
        left = sum(0 if t in self.ended else max(self.budget - s, 0) for t, s in self.steps.items())
        left += max(self.total - len(set(self.steps) | set(self.ended)), 0) * self.budget
        return left / (done_steps / elapsed)

    def line(self) -> str:
        c = self.counts()
        parts = [f"[{self.stage}] {c['done']}/{self.total} done", f"{c['running']} running"]
        if c["stopped"]:
            parts.append(f"{c['stopped']} stopped early")
        if c["failed"]:
            parts.append(f"{c['failed']} failed")
        if self.best is not None:
            parts.append(f"best {self.metric}={self.best:.4g}")
        parts.append(f"{_minutes(time.time() - self.t0)} elapsed")
        eta = self.eta_seconds()
        if eta is not None and len(self.ended) < self.total:
            parts.append(f"ETA {_minutes(eta)}")
        return ", ".join(parts)

    def _show(self, trials, force: bool = False, final: bool = False) -> None:
        if self.console is None:
            return
        self.running = sum(1 for t in trials if t.status == "RUNNING")
        now = time.time()
        counts = tuple(self.counts().items())
        if self.console.tty:
            due = force or now - self._shown_at >= TTY_INTERVAL_S
        else:
            changed = counts != self._shown_counts
            due = final or (changed and now - self._shown_at >= NON_TTY_INTERVAL_S) or now - self._shown_at >= HEARTBEAT_S
        if not due:
            return
        self._shown_at, self._shown_counts = now, counts
        self.console.live(self.line())
        if final:
            self.console.end_live()
