"""What a sweep did, per stage (trials finished / stopped early / failed / interrupted / skipped,
the best trial, wall time), and the lines the CLI prints at its end."""

from __future__ import annotations

from dataclasses import dataclass, field

from raygrid.run import failures
from raygrid.space import Stage


@dataclass
class StageSummary:
    name: str
    trials: int = 0
    finished: int = 0
    stopped: int = 0
    failed: int = 0
    interrupted: int = 0
    skipped: int = 0
    best: str = "-"
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # "<trial id>: <Failure.line()>"


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
    interrupted: str | None = None  # the signal's name (SIGINT, SIGTERM) when one stopped the sweep
    not_started: list[str] = field(default_factory=list)  # stages an interruption kept from starting
    log_file: str | None = None


def summarise(grid, stage: Stage, summary: StageSummary, progress=None, interrupted: bool = False,
              aborted: failures.Failure | None = None) -> None:
    """Count the stage's trials. `progress` (progress.StageProgress) knows how the trials of this
    invocation ended; a trial neither finished nor failed when a signal stopped the fit was
    interrupted, and one the stage was stopped under (`aborted`: no node came up) failed."""
    sched = stage.spec.scheduler
    ended = progress.ended if progress is not None else {}
    best_value, best_name = None, "-"
    for r in grid:
        summary.trials += 1
        m = r.metrics or {}
        trial_id = m.get("trial_id") or (r.config or {}).get("trial_id")
        failure = failures.from_result(m) or (failures.describe(r.error) if r.error is not None else None)
        if failure is not None:
            summary.failed += 1
            summary.failures.append(f"{trial_id or '?'}: {failure.line()}")
            continue
        unfinished = ended.get(trial_id) is None and m.get("step", 0) < stage.spec.budget.steps and not m.get("done")
        if aborted is not None and unfinished:
            summary.failed += 1
            summary.failures.append(f"{trial_id or '?'}: stopped with its stage ({aborted.type})")
        elif interrupted and unfinished:
            summary.interrupted += 1
        elif m.get("step", 0) >= stage.spec.budget.steps:
            summary.finished += 1
        else:
            summary.stopped += 1
        v = m.get(sched.metric)
        if v is not None and (best_value is None or (v > best_value if sched.mode == "max" else v < best_value)):
            point = (r.config.get("spec") or {}).get("meta", {}).get("point", r.config.get("search", {}))
            best_value, best_name = v, f"{sched.metric}={v:.4g} " + ", ".join(f"{k}={p}" for k, p in point.items())
    summary.best = best_name


def format_summary(result: SweepResult, resume_command: str | None = None) -> str:
    rows = [("stage", "trials", "finished", "stopped early", "failed", "interrupted", "skipped", "wall", "best trial")]
    for s in result.stages:
        rows.append((s.name, str(s.trials), str(s.finished), str(s.stopped), str(s.failed), str(s.interrupted),
                     str(s.skipped), f"{s.seconds:.0f} s", s.best))
    for name in result.not_started:
        rows.append((name, "-", "-", "-", "-", "-", "-", "-", "not started"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    state = f"interrupted ({result.interrupted})" if result.interrupted else "done"
    lines = ["", f"sweep {result.experiment!r} {state} after {result.seconds / 60:.1f} min"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    shown = [f"  {s.name} {line}" for s in result.stages for line in s.failures[:5]]
    more = sum(max(len(s.failures) - 5, 0) for s in result.stages)
    if shown:
        lines.append("failed trials:")
        lines.extend(shown)
        if more:
            lines.append(f"  ... and {more} more (MLflow tag raygrid.error of each run)")
    lines.append("")
    lines.append(f"MLflow: {result.tracking_uri} (experiment {result.experiment!r}, sweep run {result.sweep_run_id})")
    if result.tracking_uri.startswith("sqlite:"):
        lines.append(f"  open it with: mlflow ui --backend-store-uri {result.tracking_uri}")
    lines.append(f"trial state and checkpoints: {result.storage_uri}")
    if result.log_file:
        lines.append(f"full log (Ray and Tune output): {result.log_file}")
    if result.report:
        lines.append(f"report: {result.report}")
    if result.interrupted:
        lines.append("resume with: " + (resume_command or "the same command plus --resume"))
    return "\n".join(lines)
