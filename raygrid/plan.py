"""The plan: what a sweep will run, stage by stage, before anything runs.

`make_plan(sweep)` turns a validated search space into per-stage trial lists, resources and a
GPU-hour estimate (each trial's FLOPs come from its trainable's record, raygrid.spec.trainables),
per stage and per value of every axis; `format_plan` prints it (the `--dry-run`), `plan_to_json`
writes it (`--plan-out`), with each stage's `report` (the checkpoint and the one step its trials
are compared at: the analysis reads it) and each lineage trial's source trial. No torch and no Ray
here: the dry run stays a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from raygrid import costs
from raygrid.space import Sweep


@dataclass
class StagePlan:
    name: str
    trainable: str
    trials: int
    grid_size: int  # combinations before conditions
    points: int  # valid grid points after conditions (what Optuna samples from)
    seeds: list[int]
    axes: dict[str, list[Any]]  # axis -> values (linked axes by choice name)
    conditions: int
    search: dict[str, Any] | None
    scheduler: dict[str, Any]
    report: dict[str, Any]  # {checkpoint: final|best, step: null|int, selection: null|{metric, mode}}
    report_step: int  # the step every trial is compared at (report.step, else the budget's last)
    study_axes: list[str]  # axes with more than one value: what the study compares
    groups: dict[str, int] | None  # ASHA: trials per group (key: the group_by values as JSON)
    budget: dict[str, int]
    resources: dict[str, float]
    gpu_hours_full: float  # every trial runs its whole budget
    gpu_hours_asha: float | None  # if ASHA stops trials as designed (within its groups)
    # axis -> value -> {"trials", "gpu_hours_full", "gpu_hours_asha"} (value as the plan text shows it)
    by_value: dict[str, dict[str, dict[str, float | None]]]


@dataclass
class Plan:
    sweep: str
    source: str
    stages: list[StagePlan]
    effective_tflops: float

    @property
    def total_trials(self) -> int:
        return sum(s.trials for s in self.stages)


def make_plan(sweep: Sweep, effective_tflops: float = costs.EFFECTIVE_TFLOPS) -> Plan:
    stages = []
    for name, stage in sweep.stages.items():
        spec = stage.spec
        steps = spec.budget.steps
        # every grid point's trials: 1 for a grid; samples per point for an Optuna search, which
        # visits the points in turn (raygrid.run.tune_stage)
        per_point = spec.search.num_samples // len(stage.trials) if spec.search is not None else 1
        full_h = [costs.gpu_hours(costs.trial_gflops(t.config, steps), effective_tflops) * per_point
                  for t in stage.trials]
        sched = spec.scheduler
        groups = stage.groups() if sched.kind == "asha" else None
        asha_h: list[float] | None = None
        if groups is not None:
            asha_h = [h * costs.asha_step_fraction(steps, sched.grace_period, sched.reduction_factor,
                                                   groups[stage.group_key(t.point)] if sched.group_by else None)
                      for t, h in zip(stage.trials, full_h)]
        axes = {k: list(v) for k, v in spec.axes.items()}
        axes.update({k: list(v) for k, v in spec.linked.items()})
        stages.append(StagePlan(
            name=name,
            trainable=spec.trainable,
            trials=stage.num_trials,
            grid_size=stage.grid_size,
            points=len(stage.trials),
            seeds=list(spec.seeds),
            axes=axes,
            conditions=len(spec.conditions),
            search=spec.search.model_dump(mode="json") if spec.search else None,
            scheduler=spec.scheduler.model_dump(mode="json"),
            report=spec.report.model_dump(mode="json"),
            report_step=spec.report_step,
            study_axes=stage.study_axes,
            groups={json.dumps(list(k), default=str): n for k, n in groups.items()} if groups else None,
            budget=spec.budget.model_dump(),
            resources={**spec.resources.model_dump(), "gpus_per_trial": spec.resources.gpus},
            gpu_hours_full=sum(full_h),
            gpu_hours_asha=sum(asha_h) if asha_h is not None else None,
            by_value=_by_value(stage, axes, per_point, full_h, asha_h),
        ))
    return Plan(sweep=sweep.name, source=sweep.source, stages=stages, effective_tflops=effective_tflops)


def _by_value(stage, axes: dict[str, list[Any]], per_point: int, full_h: list[float],
              asha_h: list[float] | None) -> dict[str, dict[str, dict[str, float | None]]]:
    """Trials and GPU-hours per value of every axis (what a generator, a backbone ... costs)."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for axis, values in axes.items():
        rows = {_short(v): {"trials": 0, "gpu_hours_full": 0.0, "gpu_hours_asha": 0.0 if asha_h else None}
                for v in values}
        for i, t in enumerate(stage.trials):
            row = rows[_short(t.point[axis])]
            row["trials"] += per_point
            row["gpu_hours_full"] += full_h[i]
            if asha_h is not None:
                row["gpu_hours_asha"] += asha_h[i]
        out[axis] = rows
    return out


def plan_to_json(plan: Plan, sweep: Sweep) -> dict[str, Any]:
    """The whole expanded plan, every trial's resolved config included."""
    out = asdict(plan)
    for sp in out["stages"]:
        stage = sweep.stages[sp["name"]]
        sp["trial_list"] = []
        for t in stage.trials:
            row = {"index": t.index, "key": t.key, "point": t.point, "config": t.config.model_dump(mode="json")}
            src = stage.sources.get(t.index)
            if src is not None:  # the trial of another stage this one starts from (lineage)
                row["source"] = {"stage": src.stage, "index": src.index, "key": src.key, "point": src.point}
            sp["trial_list"].append(row)
    return out


def format_plan(plan: Plan) -> str:
    lines = [f"sweep {plan.sweep!r} from {plan.source}"]
    for s in plan.stages:
        per_seed = s.trials // len(s.seeds) if s.search is None and s.trials % len(s.seeds) == 0 else None
        count = f"{s.trials} trials"
        if s.search is not None:
            count += f" (Optuna samples over {s.points} grid points)"
        elif per_seed is not None and len(s.seeds) > 1:
            count += f" = {per_seed} per seed × {len(s.seeds)} seeds"
        elif per_seed is not None:
            count += " (1 seed)"
        lines.append("")
        lines.append(f"[{s.name}] trainable {s.trainable}: {count}")
        lines.append(f"  grid: {s.grid_size} combinations, {s.conditions} conditions")
        for axis, values in s.axes.items():
            shown = ", ".join(_short(v) for v in values)
            lines.append(f"  axis {axis} ({len(values)}): {shown}")
        lines.append(f"  seeds: {s.seeds}")
        if s.search:
            params = ", ".join(s.search["params"]) or "grid points only"
            lines.append(f"  optuna: {s.search['num_samples']} samples; continuous: {params}")
        sch = s.scheduler
        if sch["kind"] == "asha" and sch["group_by"]:
            sizes = sorted(set(s.groups.values()))
            size = f"{sizes[0]} trials each" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]} trials each"
            lines.append(f"  scheduler: ASHA on {sch['metric']} ({sch['mode']}) within {len(s.groups)} groups "
                         f"of {', '.join(sch['group_by'])} ({size}), grace {sch['grace_period']} steps, "
                         f"reduction {sch['reduction_factor']:g}")
        elif sch["kind"] == "asha":
            lines.append(f"  scheduler: ASHA on {sch['metric']} ({sch['mode']}), grace {sch['grace_period']} "
                         f"steps, reduction {sch['reduction_factor']:g} (no study axis: one group)")
        else:
            lines.append(f"  scheduler: none, every trial runs its whole budget (metric {sch['metric']}, "
                         f"{sch['mode']})")
        rep = s.report
        chosen = (f"best by {rep['selection']['metric']} ({rep['selection']['mode']}) up to"
                  if rep["checkpoint"] == "best" else "final values at")
        lines.append(f"  report: {chosen} step {s.report_step}; a trial that did not reach it is listed, "
                     "not pooled")
        r = s.resources
        lines.append(f"  budget: {s.budget['steps']} steps, eval every {s.budget['eval_every']}")
        lines.append(f"  resources per trial: {r['workers']} worker(s) × ({r['gpus_per_worker']:g} GPU, "
                     f"{r['cpus_per_worker']:g} CPU) = {r['gpus_per_trial']:g} GPU")
        est = f"  estimate: {_hours(s.gpu_hours_full)} GPU-hours at full budget"
        if s.gpu_hours_asha is not None:
            where = " within its groups" if sch["group_by"] else ""
            est += f", {_hours(s.gpu_hours_asha)} if ASHA stops as designed{where}"
        lines.append(est)
        for axis, rows in s.by_value.items():
            if len(rows) < 2:
                continue
            parts = []
            for value, row in rows.items():
                part = f"{value} {row['trials']} trials, {_hours(row['gpu_hours_full'])} GPU-h"
                if row["gpu_hours_asha"] is not None:
                    part += f" ({_hours(row['gpu_hours_asha'])} with ASHA)"
                parts.append(part)
            lines.append(f"  per {axis}: " + "; ".join(parts))
    lines.append("")
    lines.append(f"total: {plan.total_trials} trials; "
                 f"{_hours(sum(s.gpu_hours_full for s in plan.stages))} GPU-hours at full budget "
                 f"(assuming {plan.effective_tflops:g} effective TFLOP/s; see raygrid/costs.py)")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return "none" if v is None else str(v)


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}"


def dump_json(obj: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
