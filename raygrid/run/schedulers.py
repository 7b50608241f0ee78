"""Early stopping that does not bias the study: ASHA within groups of trials.

`GroupedASHA` is a Tune `TrialScheduler` that holds one Ray `AsyncHyperBandScheduler` per group
of trials sharing the values of the `group_by` axes (the study's axes: raygrid.space checks that
every one is listed). A trial only ever meets the rung cutoffs of its own group, so trials that
differ in a tuned setting (seeds, Optuna-sampled values) compete and cells the study compares do
not; every group has identical brackets (grace period, reduction factor, max_t), so every group
gets the same budget. The ASHA logic is Ray's own; this class only routes each trial's events to
its group's scheduler. (Tune does not save a scheduler's state: after `--resume` the rungs fill
again from the restored trials' new results, as with a plain ASHA.)
"""

from __future__ import annotations

import json
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler


def point_of(config: dict[str, Any], points: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A trial's grid point from its Tune config ({"spec": Trial.to_json} for a grid, or
    {"search": {"point": index, ...}} for an Optuna sample over `points`)."""
    search = config.get("search")
    if search is not None:
        return points[search["point"]]
    return config["spec"]["meta"]["point"]


class GroupedASHA(FIFOScheduler):
    """One set of ASHA brackets per group; pending trials start in submission order (FIFO)."""

    def __init__(self, group_by: list[str], time_attr: str, max_t: int, grace_period: int,
                 reduction_factor: float, points: list[dict[str, Any]] | None = None):
        super().__init__()
        self.group_by = list(group_by)
        self.asha_args = dict(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                              reduction_factor=reduction_factor)
        self.points = points  # grid points of an Optuna stage
        self._metric: str | None = None
        self._mode: str | None = None
        self._groups: dict[str, AsyncHyperBandScheduler] = {}
        self._group_of: dict[str, str] = {}  # trial id -> group key

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        for asha in self._groups.values():
            asha.set_search_properties(metric, mode, **spec)
        return True

    def group_key(self, trial) -> str:
        point = point_of(trial.config, self.points)
        return json.dumps({a: point[a] for a in self.group_by}, sort_keys=True, default=str)

    def group(self, trial) -> AsyncHyperBandScheduler:
        """The ASHA of the trial's group (made on first use, every group with the same brackets)."""
        key = self._group_of.get(trial.trial_id)
        if key is None:
            key = self._group_of[trial.trial_id] = self.group_key(trial)
        if key not in self._groups:
            self._groups[key] = AsyncHyperBandScheduler(metric=self._metric, mode=self._mode, **self.asha_args)
        return self._groups[key]

    # -- Tune's hooks: each goes to the trial's group --------------------------------------------

    def on_trial_add(self, tune_controller, trial) -> None:
        self.group(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.group(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.group(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.group(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.group(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        stopped = sum(a._num_stopped for a in self._groups.values())
        return f"Using ASHA within {len(self._groups)} groups of {self.group_by}: num_stopped={stopped}"

