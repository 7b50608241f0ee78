"""The transfer stage's trial config: an IQA model fine-tuned from ImageNet weights, a GAN
discriminator's trunk (an optimize run's), or random weights."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from raygrid.spec.datasets import BENCHMARKS
from raygrid.spec.discriminators import (
    CONV_TRUNK,
    DISCRIMINATOR_HEADS,
    DISCRIMINATOR_TRUNKS,
)
from raygrid.stages.config import (
    BackboneName,
    BenchmarkName,
    Budget,
    KeyedValueError,
    NonNegFloat,
    PositiveInt,
    Runtime,
    Strict,
    WeightsSpec,
)


class DiscriminatorSource(Strict):
    """The rule that names the optimize run whose discriminator trunk initialises the IQA backbone
    (init "discriminator"): one cell of the optimize grid, never a metric-based pick across cells.

    The cell: discriminator `<head>_<IQA backbone>`, fidelity backbone, adversarial weight and the
    trunk's starting weights (`weights`: "imagenet" = a discriminator fine-tuned from ImageNet,
    "random" = trained from scratch by the GAN alone); the run of that cell with the transfer
    trial's own seed (`seed: same`) or a fixed seed; its final checkpoint (or its best by the
    optimize stage's `report.selection`, a val metric). Validation checks that exactly one optimize
    trial fits and that its trunk was trained (a frozen trunk is its starting weights: the
    "imagenet" init by construction).
    """

    head: Literal[DISCRIMINATOR_HEADS] = "patch"  # type: ignore[valid-type]
    fidelity_backbone: BackboneName = "vgg16"
    adversarial_weight: Annotated[float, Field(gt=0)] | None = None  # required for init "discriminator"
    weights: WeightsSpec = "imagenet"  # the source run's adversarial.weights
    seed: Literal["same"] | int = "same"
    checkpoint: Literal["final", "best"] = "final"

class IQAModelConfig(Strict):
    kind: Literal["nr", "fr"] = "nr"
    backbone: BackboneName
    init: Literal["imagenet", "discriminator", "random"] = "imagenet"
    weights: WeightsSpec = "imagenet"  # what init "imagenet" loads (the backbone's standard pretrained weights)
    discriminator: DiscriminatorSource = DiscriminatorSource()
    # The checkpoint whose discriminator trunk initialises the backbone (init "discriminator").
    # Filled in by the sweep from `discriminator` (lineage via MLflow); set it to use a file directly.
    discriminator_checkpoint: str | None = None

    @model_validator(mode="after")
    def _disc_trunk_exists(self) -> IQAModelConfig:
        if self.init == "discriminator" and self.backbone not in DISCRIMINATOR_TRUNKS:
            raise ValueError(
                f"init 'discriminator' needs a backbone that is also a discriminator trunk "
                f"({', '.join(t for t in DISCRIMINATOR_TRUNKS if t != CONV_TRUNK)}), "
                f"not {self.backbone!r}"
            )
        if (self.init == "discriminator" and not self.discriminator_checkpoint
                and self.discriminator.adversarial_weight is None):
            raise KeyedValueError("discriminator.adversarial_weight",
                                  "init 'discriminator' needs the source cell's adversarial weight (the rule "
                                  "names one optimize cell)")
        return self


class IQADataConfig(Strict):
    """Training, selection and report sets. Selection (the val split: what a grouped scheduler or a
    "best" checkpoint looks at) is carved from the training benchmark: its official val split when
    it has one (KonIQ-10k), else `val_fraction` of its training references (FR: by reference, so
    no content is in two splits; NR: by image). A test set never selects."""

    train: BenchmarkName
    test: list[BenchmarkName]
    val_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.1
    image_size: PositiveInt = 224
    batch_size: PositiveInt = 32
    max_images: PositiveInt | None = None  # cap per split (CPU demo)

    @field_validator("test")
    @classmethod
    def _test(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one test benchmark")
        return v


class IQAOptimConfig(Strict):
    lr: Annotated[float, Field(gt=0)] = 1e-4
    backbone_lr_mult: NonNegFloat = 0.1
    weight_decay: NonNegFloat = 1e-4
    loss: Literal["l1", "mse", "plcc"] = "l1"


class IQAFinetuneConfig(Strict):
    trainable: Literal["iqa_finetune"] = "iqa_finetune"
    seed: int = 0
    budget: Budget = Budget(steps=10_000, eval_every=1_000)
    model: IQAModelConfig
    data: IQADataConfig
    optim: IQAOptimConfig = IQAOptimConfig()
    n_boot: Annotated[int, Field(ge=0)] = 1000
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _mode_matches_sets(self) -> IQAFinetuneConfig:
        want = self.model.kind.upper()
        for name in [self.data.train, *self.data.test]:
            info = BENCHMARKS.get(name)
            if info is not None and want == "FR" and info.mode != "FR":
                raise ValueError(
                    f"model.kind is 'fr' but {name!r} is a no-reference set (no reference images)"
                )
        return self
