"""The optimize stage's trial config: SwinIR ×4 trained with λ_fid·fidelity + λ_adv·adversarial
(+ λ_pix·L1) against a discriminator, judged by an evaluator panel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from raygrid.spec.backbones import BACKBONES
from raygrid.spec.generators import GENERATORS, check_scale, checkpoint_entry, get_preset
from raygrid.spec.discriminators import GAN_LOSSES, NO_DISCRIMINATOR
from raygrid.stages.config import (
    BackboneName,
    Budget,
    DiscriminatorName,
    FidelityConfig,
    NonNegFloat,
    PositiveInt,
    Runtime,
    Strict,
    WeightsSpec,
    check_sr_set,
)
from raygrid.stages.optimize.health import HealthConfig


class GeneratorConfig(Strict):
    """The SR network, one record of raygrid.spec.generators (docs/generators.md)."""

    arch: Literal[tuple(GENERATORS)] = "swinir"  # type: ignore[valid-type]
    # one of the architecture's presets; None (the default) means its default preset (SwinIR-M,
    # RRDBNet 23x64, HAT), filled in so that the logged config names it
    preset: str | None = None
    scale: Literal[4] = 4
    # warm start: None (random init), "official" (the preset's PSNR-trained DF2K checkpoint), a
    # checkpoint name of raygrid.spec.generators.CHECKPOINTS (found in the weights dir), a file
    # path ("file:PATH" or plain) or an s3:// URI. Files hold params / params_ema or a bare state dict.
    checkpoint: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is None and data.get("arch", "swinir") in GENERATORS:
            data = {**data, "preset": GENERATORS[data.get("arch", "swinir")].default_preset}
        return data

    @model_validator(mode="after")
    def _known(self) -> GeneratorConfig:
        get_preset(self.arch, self.preset)  # raises with the known presets
        check_scale(self.arch, self.scale)
        if self.checkpoint is not None and not self.checkpoint.startswith("s3://"):
            checkpoint_entry(self.arch, self.preset, self.checkpoint, self.scale)  # names only, no file access
        return self


class AdversarialConfig(Strict):
    discriminator: DiscriminatorName = NO_DISCRIMINATOR
    gan_loss: Literal[GAN_LOSSES] = "vanilla"  # type: ignore[valid-type]
    # "auto": fine-tune CNN trunks, freeze transformer trunks (projected-GAN style, as ADD does
    # with DINOv2); the paper does not say, so it is a setting.
    trunk_trainable: bool | Literal["auto"] = "auto"
    weights: WeightsSpec = "imagenet"
    lr: Annotated[float, Field(gt=0)] = 1e-4


class SRLossConfig(Strict):
    fidelity_weight: NonNegFloat = 1.0
    adversarial_weight: NonNegFloat = 0.0
    pixel_weight: NonNegFloat = 0.0  # optional L1


class SROptimConfig(Strict):
    lr: Annotated[float, Field(gt=0)] = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0


class SRDataConfig(Strict):
    """Training data and the two roles of evaluation sets (docs/protocol.md): `val` sets SELECT
    (what a grouped scheduler or a "best" checkpoint looks at), `test` sets are REPORTED (what the
    tables compare). A set in both would select on what is reported: a validation error."""

    train: str = "df2k"
    # selection sets: metrics val/<set>/<evaluator> and the pooled val/<evaluator>; may be empty
    val: list[str] = []
    # reported sets: metrics test/<set>/<evaluator> and the pooled test/<evaluator>
    test: list[str] = ["set5", "set14", "bsd100", "urban100", "div2k_val"]
    hr_crop: PositiveInt = 256
    batch_size: PositiveInt = 16
    max_eval_images: PositiveInt | None = None  # cap per evaluation set (CPU demo); None = all
    # the prepared store of the training set (raygrid.data.sr_store; the same pixels as the PNGs):
    # None reads the PNGs; "auto" the store beside the set (<set>.srstore) when there is one;
    # a folder or s3:// URI names a store that must exist and match its sources
    store: str | None = None
    # a store that is missing (a named one), incomplete or stale: "refuse" stops the sweep in the
    # preflight with one line naming the file; "rebuild" prepares it there, before Ray starts
    store_on_mismatch: Literal["refuse", "rebuild"] = "refuse"

    @field_validator("train")
    @classmethod
    def _train(cls, v: str) -> str:
        return check_sr_set(v, "train")

    @field_validator("val", "test")
    @classmethod
    def _eval_sets(cls, v: list[str]) -> list[str]:
        return [check_sr_set(s, "test") for s in v]

    @model_validator(mode="after")
    def _select_apart_from_report(self) -> SRDataConfig:
        for i, name in enumerate(self.test):
            if name in self.val:
                raise ValueError(f"data.test[{i}]: {name!r} is also a selection set (data.val): a set that "
                                 "selects checkpoints or prunes trials must not be one the tables report")
        if not self.val and not self.test:
            raise ValueError("data: expected at least one evaluation set in val or test")
        return self

    @field_validator("store")
    @classmethod
    def _store(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("expected null, 'auto', a folder or an s3:// URI")
        return v

    @field_validator("hr_crop")
    @classmethod
    def _crop(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"hr_crop {v} must be a multiple of the scale (4)")
        return v


class SREvalConfig(Strict):
    """The evaluator panel. Evaluators are independent of the loss; those sharing its backbone
    are flagged in the analysis."""

    fidelity_backbones: list[BackboneName] = list(BACKBONES)
    weights: WeightsSpec = "imagenet"
    nr_metrics: list[str] = []  # pyiqa names, e.g. musiq, maniqa, clipiqa, topiq_nr, niqe


class SRGanConfig(Strict):
    """One optimize trial: SwinIR trained with λ_fid·fidelity + λ_adv·adversarial (+ λ_pix·L1)."""

    trainable: Literal["sr_gan"] = "sr_gan"
    seed: int = 0
    budget: Budget = Budget(steps=100_000, eval_every=5_000)
    generator: GeneratorConfig = GeneratorConfig()
    fidelity: FidelityConfig
    adversarial: AdversarialConfig = AdversarialConfig()
    loss: SRLossConfig = SRLossConfig()
    optim: SROptimConfig = SROptimConfig()
    data: SRDataConfig = SRDataConfig()
    eval: SREvalConfig = SREvalConfig()
    health: HealthConfig = HealthConfig()  # when a GAN run counts as collapsed (health.py)
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _adversarial_pairs(self) -> SRGanConfig:
        none = self.adversarial.discriminator == NO_DISCRIMINATOR
        w = self.loss.adversarial_weight
        if none and w > 0:
            raise ValueError(
                f"loss.adversarial_weight is {w} but adversarial.discriminator is 'none': "
                "an adversarial loss needs a discriminator"
            )
        if not none and w == 0:
            raise ValueError(
                f"adversarial.discriminator is {self.adversarial.discriminator!r} but "
                "loss.adversarial_weight is 0: the 'none' discriminator pairs with weight 0 only"
            )
        return self
