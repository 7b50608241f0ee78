"""The search-space YAML schema: strict pydantic models of a sweep and its stages.

A search space names stages (assess, optimize, transfer). Each stage has a trainable, a `base`
trial config, grid `axes` (dotted keys into the trial config, each a list of values), `linked`
axes (a named choice that sets several keys together), `conditions` between axes, `seeds`, a
per-trial `budget`, a `scheduler`, an optional Optuna `search`, and `resources` per trial.
Nothing unknown is ignored.
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
    kind: Literal["asha", "none"] = "none"
    metric: str
    mode: Literal["min", "max"]
    grace_period: Annotated[int, Field(gt=0)] | None = None  # in steps (ASHA)
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0

    @model_validator(mode="after")
    def _asha_needs_grace(self) -> SchedulerSpec:
        if self.kind == "asha" and self.grace_period is None:
            raise ValueError("ASHA needs grace_period (in steps)")
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
    search: SearchSpec | None = None
    resources: Resources = Resources()
    max_failures: Annotated[int, Field(ge=0)] = 2  # Tune-level retries of a failed trial


class SweepSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    data_root: str | None = None  # local folder or s3:// prefix; default: the raygrid cache
    stages: dict[Literal[STAGE_ORDER], StageSpec]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _some_stage(self) -> SweepSpec:
        if not self.stages:
            raise ValueError("expected at least one stage (assess, optimize, transfer)")
        return self
