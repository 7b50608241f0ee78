"""The assess stage's trial config: one fidelity measure scored as an FR-IQA model on one benchmark."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from raygrid.spec.datasets import BENCHMARKS
from raygrid.stages.config import BenchmarkName, Budget, FidelityConfig, PositiveInt, Runtime, Strict


class AlphaBetaFit(Strict):
    """How α/β are fitted when `fit_on` is set: DISTS's objective, MOS agreement on the fitting
    benchmark's pairs plus the texture-resampling-invariance term (two non-overlapping crops of
    one image should score ~0), the crops cut from that benchmark's reference images
    (raygrid.nets.fidelity.fit_alpha_beta; docs/records.md)."""

    # weight of DISTS's texture-resampling-invariance term against the MOS term; 0 fits the MOS
    # term alone, which is not DISTS's fit
    texture_weight: Annotated[float, Field(ge=0)] = 1.0
    # side of the texture crops in pixels; None: half the shorter side of the smallest reference
    # image, at most 256 (two non-overlapping crops must fit in one image)
    texture_crop: PositiveInt | None = None
    # crop pairs drawn per reference image
    texture_pairs_per_image: PositiveInt = 4


class AssessConfig(Strict):
    """Score one fidelity measure on one FR benchmark (SRCC/PLCC/KRCC).

    With `fit_on`, α/β are first fitted on that set (the DISTS/pyiqa protocol: fit on KADID-10k,
    test on the others); fitted on the benchmark itself, they use its train split and are scored
    on its test split (split by reference image)."""

    trainable: Literal["assess"] = "assess"
    seed: int = 0
    budget: Budget = Budget(steps=1, eval_every=1)  # steps = α/β fitting steps when fit_on is set
    fidelity: FidelityConfig
    benchmark: BenchmarkName
    fit_on: BenchmarkName | None = None
    fit: AlphaBetaFit = AlphaBetaFit()  # the α/β fit's objective (used only with fit_on)
    image_size: PositiveInt | None = None  # resize shorter side (None = native)
    batch_size: PositiveInt = 8
    lr: Annotated[float, Field(gt=0)] = 1e-3
    max_pairs: PositiveInt | None = None  # cap pairs per split (CPU demo)
    n_boot: Annotated[int, Field(ge=0)] = 1000
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _fr_only(self) -> AssessConfig:
        for key, name in (("benchmark", self.benchmark), ("fit_on", self.fit_on)):
            info = BENCHMARKS.get(name or "")
            if info is not None and info.mode != "FR":
                raise ValueError(f"{key} {name!r} is a no-reference set; fidelity measures need FR")
        return self

    @property
    def eval_split(self) -> str:
        """Where SRCC is measured: the test split when α/β are fitted on the same set's train
        split, otherwise every pair of the benchmark (nothing was fitted on it)."""
        return "test" if self.fit_on == self.benchmark else "all"
