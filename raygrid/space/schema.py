"""The search-space YAML schema: strict pydantic models of a sweep and its stages.

A search space names stages (assess, optimize, transfer). Each stage has a trainable, a `base`
trial config, grid `axes` (dotted keys into the trial config, each a list of values), `linked`
axes (a named choice that sets several keys together), `conditions` between axes, `seeds`, a
per-trial `budget`, a `scheduler` (none, or ASHA within groups of trials), what it `report`s (the
checkpoint and step the tables compare), an optional Optuna `search`, and `resources` per trial.
Nothing unknown is ignored. docs/protocol.md says why the protocol keys are as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from raygrid.spec.trainables import registry
from raygrid.stages.config import Budget, Strict

STAGE_ORDER = ("assess", "optimize", "transfer")


class Predicate(Strict):
    """A test on one axis value. Several fields in one predicate must all hold."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    eq: Any = None
    ne: Any = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _scalar_is_eq(cls, data: Any) -> Any:
        # `{fit_on: kadid10k}` is shorthand for `{fit_on: {eq: kadid10k}}`
        return data if isinstance(data, dict) else {"eq": data}

    def listed_values(self) -> list[Any]:
        """Values the predicate names explicitly (checked against the axis values)."""
        named = [getattr(self, k) for k in ("eq", "ne") if k in self.model_fields_set]
        return named + list(self.in_ or []) + list(self.not_in or [])

    def holds(self, value: Any) -> bool:
        s = self.model_fields_set
        if "eq" in s and value != self.eq:
            return False
        if "ne" in s and value == self.ne:
            return False
        for op, bound in (("gt", self.gt), ("ge", self.ge), ("lt", self.lt), ("le", self.le)):
            if bound is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            if not {"gt": value > bound, "ge": value >= bound, "lt": value < bound,
                    "le": value <= bound}[op]:
                return False
        if self.in_ is not None and value not in self.in_:
            return False
        if self.not_in is not None and value in self.not_in:
            return False
        return True


class Condition(Strict):
    """Keep a combination only if: when every `if` predicate holds, every `then` predicate holds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    if_: dict[str, Predicate] = Field(alias="if")
    then: dict[str, Predicate]

    def keeps(self, point: dict[str, Any]) -> bool:
        if all(p.holds(point[k]) for k, p in self.if_.items()):
            return all(p.holds(point[k]) for k, p in self.then.items())
        return True


class SchedulerSpec(Strict):
    """Early stopping. `kind: none` runs every trial to its budget (a loop may still end a run that
    collapsed or diverged). `kind: asha` runs one set of ASHA brackets per group of trials that
    share the `group_by` axes, so only trials that differ in a tuned setting (seeds, Optuna-sampled
    values) compete and every group gets the same budget. `group_by` must list every study axis
    (every axis and linked axis with more than one value): pruning across one would select cells
    by the very property the study compares. The metric of an ASHA is a `val/...` metric; no
    scheduler ever looks at a `test/...` one."""

    kind: Literal["asha", "none"] = "none"
    metric: str  # the Tune metric (ASHA's rungs; the progress display)
    mode: Literal["min", "max"]
    grace_period: Annotated[int, Field(gt=0)] | None = None  # in steps (ASHA)
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0
    group_by: list[str] = []  # axes (dotted keys) and linked-axis names; ASHA competes within a group

    @model_validator(mode="after")
    def _asha_needs_grace(self) -> SchedulerSpec:
        if self.kind == "asha" and self.grace_period is None:
            raise ValueError("ASHA needs grace_period (in steps)")
        if self.kind != "asha" and self.group_by:
            raise ValueError("group_by groups the brackets of an ASHA; with kind 'none' nothing is stopped")
        return self


class Selection(Strict):
    """The metric a "best" checkpoint is chosen by: a `val/...` metric of the stage."""

    metric: str
    mode: Literal["min", "max"]


class ReportSpec(Strict):
    """Which values of a trial the tables compare. Every trial is compared at one common `step`
    (null: the budget's last step); `checkpoint: final` takes the values at that step, `best` the
    values at the trial's best evaluation up to it by `selection` (never a test metric). A trial
    that did not reach the step is listed with its outcome, never pooled."""

    checkpoint: Literal["final", "best"] = "final"
    step: Annotated[int, Field(gt=0)] | None = None
    selection: Selection | None = None

    @model_validator(mode="after")
    def _best_needs_selection(self) -> ReportSpec:
        if self.checkpoint == "best" and self.selection is None:
            raise ValueError("checkpoint 'best' needs selection: {metric: val/..., mode: max|min}")
        return self


class Distribution(Strict):
    """One continuous (or categorical) parameter for Optuna; exactly one of the forms."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Any] | None = None
    when: dict[str, Predicate] = {}  # sample only when these axis predicates hold; else base value

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        forms = [f for f in ("uniform", "loguniform", "choice") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError("expected exactly one of uniform: [lo, hi], loguniform: [lo, hi], choice: [...]")
        for f in ("uniform", "loguniform"):
            lo_hi = getattr(self, f)
            if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{f}: expected [low, high] with low < high, got {list(lo_hi)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: the low end must be > 0")
        return self


class SearchSpec(Strict):
    """Optuna over the valid grid points (as one categorical) plus continuous parameters."""

    kind: Literal["optuna"] = "optuna"
    num_samples: Annotated[int, Field(gt=0)]
    params: dict[str, Distribution] = {}
    seed: int = 0


class Resources(Strict):
    workers: Annotated[int, Field(gt=0)] = 1
    gpus_per_worker: Annotated[float, Field(ge=0)] = 0
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker

    @property
    def cpus(self) -> float:
        return self.workers * self.cpus_per_worker


class StageSpec(Strict):
    trainable: Literal[tuple(registry())]  # type: ignore[valid-type]
    base: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    linked: dict[str, dict[str, dict[str, Any]]] = {}
    conditions: list[Condition] = []
    seeds: list[int] = [0]
    budget: Budget
    scheduler: SchedulerSpec
    report: ReportSpec = ReportSpec()
    search: SearchSpec | None = None
    resources: Resources = Resources()
    max_failures: Annotated[int, Field(ge=0)] = 2  # Tune-level retries of a failed trial

    @property
    def selection(self) -> Selection | None:
        """The metric checkpoints are kept and "best" is chosen by (report.selection), if any."""
        return self.report.selection

    @property
    def report_step(self) -> int:
        """The one step every trial of the stage is compared at."""
        return self.report.step if self.report.step is not None else self.budget.steps


class SweepSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    data_root: str | None = None  # local folder or s3:// prefix; default: the raygrid cache
    # pretrained weight files: "demo" (small weights the demo pre-trains on its own data, in the
    # cache, never in a user's weights dir), a folder, or None ($RAYGRID_WEIGHTS, else
    # ~/.cache/raygrid/weights). An explicit --weights-dir wins.
    weights_dir: str | None = None
    stages: dict[Literal[STAGE_ORDER], StageSpec]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _some_stage(self) -> SweepSpec:
        if not self.stages:
            raise ValueError("expected at least one stage (assess, optimize, transfer)")
        return self
