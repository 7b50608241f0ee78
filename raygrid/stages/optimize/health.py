"""Training health of an optimize run: the detectors that flag a GAN gone wrong, and how a run
that was stopped for it (or for a non-finite loss) is read back from its last report.

The signals are measured by the step (raygrid.stages.optimize.models) and reported at every
evaluation; docs/training.md lists every metric key. Here, on those reports' numbers only:

- `DiscriminatorWins`: the discriminator wins outright in an evaluation window when the window
  means of its accuracy on real and on fake images both reach `d_wins_accuracy`. A generator
  that can no longer fool the discriminator on any image gets a saturated adversarial signal.
- `Stalled`: every watched signal (`stall_signals`, by default the mean fake logit and the
  generator's adversarial loss) changed between two consecutive evaluations by no more than
  `stall_atol + stall_rtol * |previous|`: the fake logits / generator losses stopped moving.
- `HealthMonitor`: both detectors per evaluation; a flag held for `patience` consecutive
  evaluations is a collapse, and with `stop` on a run that collapses before its budget's last
  step ends there with `outcome/collapsed_at = <step>` (a run that reaches its last step is
  finished; its flags are still in its metrics).

Torch-free: the Tune driver's MLflow callback reads outcomes with `outcome_from_result`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field

from raygrid.stages.config import COLLAPSED_AT, DIVERGED_AT, NonNegFloat, PositiveInt, Strict

# Metric keys the monitor adds to every evaluation's report of an adversarial run.
D_WINS, D_WINS_STREAK = "health/d_wins", "health/d_wins_streak"
STALLED, STALLED_STREAK = "health/stalled", "health/stalled_streak"
COLLAPSE = "health/collapse"
REAL_ACC, FAKE_ACC = "d/real_acc", "d/fake_acc"


class HealthConfig(Strict):
    """When an optimize run counts as collapsed, and whether it is then stopped. These settings
    decide which runs end early, so they are part of the trial config (MLflow params health.*)."""

    # stop a run when a collapse flag has held for `patience` evaluations (false: flag only)
    stop: bool = True
    # the discriminator "wins outright" in a window when its real and fake accuracy both reach this
    d_wins_accuracy: Annotated[float, Field(gt=0.5, le=1.0)] = 0.99
    # reported metrics whose standstill means the GAN stopped moving (all of them must stand still)
    stall_signals: list[str] = ["d/fake_logit_mean", "loss/g_adversarial"]
    # a signal stands still when |now - previous| <= stall_atol + stall_rtol * |previous|
    stall_rtol: NonNegFloat = 1e-4
    stall_atol: NonNegFloat = 1e-6
    # consecutive evaluations a flag must hold before the run counts as collapsed
    patience: PositiveInt = 3


class DiscriminatorWins:
    """Consecutive evaluations in which D was right on (nearly) every real and every fake image."""

    def __init__(self, accuracy: float, patience: int):
        self.accuracy, self.patience = accuracy, patience
        self.streak = 0

    def update(self, metrics: dict[str, float]) -> bool | None:
        """This window's verdict (None: no discriminator in this run); moves the streak."""
        if REAL_ACC not in metrics or FAKE_ACC not in metrics:
            return None
        wins = metrics[REAL_ACC] >= self.accuracy and metrics[FAKE_ACC] >= self.accuracy
        self.streak = self.streak + 1 if wins else 0
        return wins

    @property
    def held(self) -> bool:
        return self.streak >= self.patience


class Stalled:
    """Consecutive evaluations in which none of the watched signals moved."""

    def __init__(self, signals: list[str], rtol: float, atol: float, patience: int):
        self.signals, self.rtol, self.atol, self.patience = list(signals), rtol, atol, patience
        self.previous: dict[str, float] = {}
        self.streak = 0

    def update(self, metrics: dict[str, float]) -> bool | None:
        """This evaluation's verdict (None: no watched signal is reported, or none before)."""
        now = {k: float(metrics[k]) for k in self.signals if k in metrics}
        before, self.previous = self.previous, now
        common = [k for k in now if k in before]
        if not common:
            return None
        still = all(abs(now[k] - before[k]) <= self.atol + self.rtol * abs(before[k]) for k in common)
        self.streak = self.streak + 1 if still else 0
        return still

    @property
    def held(self) -> bool:
        return self.streak >= self.patience


class HealthMonitor:
    """Both detectors over a run's evaluations. `monitor(step, metrics)` returns the flags to add
    to that report, with `outcome/collapsed_at` when the run is to end there.

    Every rank calls it with the same (all-reduced, broadcast) metrics, so every rank decides the
    same; its state travels in the checkpoint so a resumed run keeps its streaks.
    """

    def __init__(self, cfg: HealthConfig, final_step: int):
        self.cfg, self.final_step = cfg, final_step
        self.d_wins = DiscriminatorWins(cfg.d_wins_accuracy, cfg.patience)
        self.stalled = Stalled(cfg.stall_signals, cfg.stall_rtol, cfg.stall_atol, cfg.patience)

    def __call__(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        wins = self.d_wins.update(metrics)
        still = self.stalled.update(metrics)
        if wins is not None:
            out[D_WINS], out[D_WINS_STREAK] = float(wins), float(self.d_wins.streak)
        if still is not None:
            out[STALLED], out[STALLED_STREAK] = float(still), float(self.stalled.streak)
        if wins is None and still is None:
            return out  # no discriminator signal: nothing to judge (a fidelity-only run)
        collapsed = self.d_wins.held or self.stalled.held
        out[COLLAPSE] = float(collapsed)
        if collapsed and self.cfg.stop and step < self.final_step:
            out[COLLAPSED_AT] = float(step)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"d_wins_streak": self.d_wins.streak, "stalled_streak": self.stalled.streak,
                "stalled_previous": dict(self.stalled.previous)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.d_wins.streak = int(state["d_wins_streak"])
        self.stalled.streak = int(state["stalled_streak"])
        self.stalled.previous = dict(state["stalled_previous"])


def _non_finite(result: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in result.items() if k.startswith(("loss/", "grad_norm/"))
                  and isinstance(v, (int, float)) and not math.isfinite(v))


def outcome_from_result(result: dict[str, Any]) -> tuple[str, int, str] | None:
    """(outcome, step, reason) of a run its loop ended early, from its last report; None if the
    loop did not end it ("finished" or "stopped" are then for the caller to tell)."""
    if DIVERGED_AT in result:
        step = int(result[DIVERGED_AT])
        bad = _non_finite(result)
        return "diverged", step, (f"non-finite {', '.join(bad) if bad else 'loss'} first at step {step}; "
                                  "no checkpoint of its weights")
    if COLLAPSED_AT in result:
        step = int(result[COLLAPSED_AT])
        why = []
        if result.get(D_WINS_STREAK, 0) and result.get(D_WINS):
            why.append(f"the discriminator won outright for {int(result[D_WINS_STREAK])} evaluations in a row "
                       f"(real accuracy {result.get(REAL_ACC, math.nan):.3f}, "
                       f"fake accuracy {result.get(FAKE_ACC, math.nan):.3f})")
        if result.get(STALLED_STREAK, 0) and result.get(STALLED):
            why.append(f"the fake logits and generator losses stopped moving for "
                       f"{int(result[STALLED_STREAK])} evaluations")
        return "collapsed", step, "; ".join(why) or "collapse flag held"
    return None
