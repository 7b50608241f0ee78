"""The metrics raygrid exports through Ray's metrics system (Prometheus, Grafana).

Exported names get Ray's `ray_` prefix: `raygrid_step_seconds` appears as
`ray_raygrid_step_seconds{stage=..., trial_id=...}`. Labels stay low-cardinality (stage, trial
id, state). `dashboards/raygrid.json` queries exactly the names in `EXPORTED`.
"""

from __future__ import annotations

from typing import Any

# name -> (kind, description, tag keys)
EXPORTED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "raygrid_step_seconds": ("gauge", "Wall time of one training step, averaged since the last report", ("stage", "trial_id")),
    "raygrid_images_per_second": ("gauge", "Training images per second of a trial (rank 0)", ("stage", "trial_id")),
    "raygrid_gpu_memory_bytes": ("gauge", "Peak GPU memory allocated by rank 0 of a trial", ("stage", "trial_id")),
    "raygrid_trial_step": ("gauge", "Last reported step of a trial", ("stage", "trial_id")),
    "raygrid_trials": ("gauge", "Trials of the running sweep by state (running, finished, stopped, failed)", ("sweep", "stage", "state")),
}


def _metric(name: str):
    from ray.util import metrics

    kind, description, tags = EXPORTED[name]
    assert kind == "gauge"
    return metrics.Gauge(name, description=description, tag_keys=tags)


class TrialTelemetry:
    """Per-trial gauges, set from rank 0 of the train loop at every report."""

    def __init__(self, stage: str, trial_id: str) -> None:
        self.tags = {"stage": stage or "unknown", "trial_id": trial_id or "unknown"}
        self._gauges: dict[str, Any] | None = None

    def _ensure(self) -> dict[str, Any] | None:
        if self._gauges is None:
            try:
                self._gauges = {n: _metric(n) for n in ("raygrid_step_seconds", "raygrid_images_per_second",
                                                          "raygrid_gpu_memory_bytes", "raygrid_trial_step")}
            except Exception:  # metrics need a running Ray worker; outside Ray (unit tests) skip
                self._gauges = {}
        return self._gauges

    def record(self, step: int, step_seconds: float, images_per_second: float, gpu_memory: int | None) -> None:
        gauges = self._ensure()
        if not gauges:
            return
        gauges["raygrid_step_seconds"].set(step_seconds, tags=self.tags)
        gauges["raygrid_images_per_second"].set(images_per_second, tags=self.tags)
        gauges["raygrid_trial_step"].set(step, tags=self.tags)
        if gpu_memory is not None:
            gauges["raygrid_gpu_memory_bytes"].set(gpu_memory, tags=self.tags)


class SweepTelemetry:
    """Trial counts by state, set by the Tune driver's callback."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep
        try:
            self._gauge = _metric("raygrid_trials")
        except Exception:
            self._gauge = None

    def set_counts(self, stage: str, counts: dict[str, int]) -> None:
        if self._gauge is None:
            return
        for state in ("running", "finished", "stopped", "failed"):
            self._gauge.set(counts.get(state, 0), tags={"sweep": self.sweep, "stage": stage, "state": state})
