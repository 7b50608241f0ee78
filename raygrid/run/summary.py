"""What a sweep did, per stage (trials finished / stopped early / failed / skipped, the best trial,
wall time), and the lines the CLI prints at its end."""

from __future__ import annotations

from dataclasses import dataclass, field

from raygrid.space import Stage


@dataclass
class StageSummary:
    name: str
    trials: int = 0
    finished: int = 0
    stopped: int = 0
    failed: int = 0
    skipped: int = 0
    best: str = "-"
    seconds: float = 0.0


@dataclass
class SweepResult:
    experiment: str
    sweep_run_id: str
    tracking_uri: str
    output_dir: str
    storage_uri: str
    stages: list[StageSummary] = field(default_factory=list)
    report: str | None = None
    seconds: float = 0.0


def summarise(grid, stage: Stage, summary: StageSummary) -> None:
    sched = stage.spec.scheduler
    best_value, best_name = None, "-"
    for r in grid:
        summary.trials += 1
        if r.error is not None:
            summary.failed += 1
            continue
        m = r.metrics or {}
        if m.get("step", 0) >= stage.spec.budget.steps:
            summary.finished += 1
        else:
            summary.stopped += 1
        v = m.get(sched.metric)
        if v is not None and (best_value is None or (v > best_value if sched.mode == "max" else v < best_value)):
            point = (r.config.get("spec") or {}).get("meta", {}).get("point", r.config.get("search", {}))
            best_value, best_name = v, f"{sched.metric}={v:.4g} " + ", ".join(f"{k}={p}" for k, p in point.items())
    summary.best = best_name


def format_summary(result: SweepResult) -> str:
    rows = [("stage", "trials", "finished", "stopped early", "failed", "skipped", "wall", "best trial")]
    for s in result.stages:
        rows.append((s.name, str(s.trials), str(s.finished), str(s.stopped), str(s.failed), str(s.skipped),
                     f"{s.seconds:.0f} s", s.best))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["", f"sweep {result.experiment!r} done in {result.seconds / 60:.1f} min"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    lines.append("")
    lines.append(f"MLflow: {result.tracking_uri} (experiment {result.experiment!r}, sweep run {result.sweep_run_id})")
    if result.tracking_uri.startswith("sqlite:"):
        lines.append(f"  open it with: mlflow ui --backend-store-uri {result.tracking_uri}")
    lines.append(f"trial state and checkpoints: {result.storage_uri}")
    if result.report:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)
