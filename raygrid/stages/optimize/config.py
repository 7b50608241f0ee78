"""The optimize stage's trial config: SwinIR ×4 trained with λ_fid·fidelity + λ_adv·adversarial
(+ λ_pix·L1) against a discriminator, judged by an evaluator panel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from raygrid.spec.backbones import BACKBONES
from raygrid.spec.datasets import shared_images
from raygrid.spec.discriminators import (
    CONV_TRUNK,
    GAN_LOSSES,
    NO_DISCRIMINATOR,
    trunk_of,
)
from raygrid.spec.generators import (
    GENERATORS,
    check_scale,
    checkpoint_entry,
    get_preset,
)
from raygrid.stages.config import (
    BackboneName,
    Budget,
    DiscriminatorName,
    FidelityConfig,
    KeyedValueError,
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


def default_trunk_trainable(discriminator: str) -> bool:
    """What `trunk_trainable: auto` means: fine-tune CNN trunks (and the from-scratch conv trunk),
    freeze transformer trunks (projected-GAN style, as ADD does with DINOv2). The paper does not
    say, so it is a setting; resolved here, in the config, so that validation sees it (a frozen
    trunk is its starting weights, and the transfer stage refuses such a source)."""
    trunk = trunk_of(discriminator)
    if trunk is None:
        return False
    info = BACKBONES.get(trunk)
    return info is None or info.family == "cnn"


class AdversarialConfig(Strict):
    """The discriminator and its training. Settings that cannot matter are normalised so that two
    grid points differing only in them are caught as the same trial: without a discriminator,
    `weights` is "random" and the trunk untrained; the conv trunk has no pretrained weights, so its
    "imagenet" is "random" (its from-scratch init)."""

    discriminator: DiscriminatorName = NO_DISCRIMINATOR
    gan_loss: Literal[GAN_LOSSES] = "vanilla"  # type: ignore[valid-type]
    # whether the GAN trains the trunk; "auto" (the default) is resolved when the config is
    # validated: CNN trunks train, transformer trunks are frozen (default_trunk_trainable)
    trunk_trainable: bool = True
    # the trunk's starting weights: "imagenet" (the backbone's standard pretrained weights) or
    # "random" (a discriminator trained from scratch by the GAN alone), a tag or file:PATH
    weights: WeightsSpec = "imagenet"
    lr: Annotated[float, Field(gt=0)] = 1e-4

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("discriminator", NO_DISCRIMINATOR)
        if not isinstance(name, str):
            return data
        try:
            trunk = trunk_of(name)
        except ValueError:
            return data  # the field validator names the unknown discriminator
        if trunk is None:
            data.update(weights="random", trunk_trainable=False)
            return data
        if data.get("trunk_trainable", "auto") == "auto":
            data["trunk_trainable"] = default_trunk_trainable(name)
        if trunk == CONV_TRUNK and data.get("weights", "imagenet") == "imagenet":
            data["weights"] = "random"
        return data

    @property
    def trunk_trained(self) -> bool:
        """True if the discriminator's trunk weights change during training (a transfer source)."""
        return self.discriminator != NO_DISCRIMINATOR and self.trunk_trainable


def resolve_trunk_trainable(cfg: SRGanConfig) -> bool:
    """Whether the trial's discriminator trunk trains (resolved when the config was validated)."""
    return cfg.adversarial.trunk_trainable


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
        # image level: slices of one folder (DIV2K-val 0801-0810 / 0811-0900) may be apart or not
        for i, name in enumerate(self.test):
            for j, other in enumerate(self.val):
                shared = shared_images(name, other)
                if shared is not None:
                    raise KeyedValueError(
                        f"test[{i}]", f"{name!r} is also a selection set: it shares {_images(shared)} with "
                        f"data.val[{j}] {other!r}; a set that selects checkpoints or prunes trials must not be "
                        "one the tables report")
        for role in ("val", "test"):
            for i, name in enumerate(getattr(self, role)):
                shared = shared_images(name, self.train)
                if shared is not None:
                    raise KeyedValueError(f"{role}[{i}]", f"{name!r} shares {_images(shared)} with the training "
                                          f"set data.train {self.train!r}")
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


def _images(shared: tuple[str, ...]) -> str:
    if not shared:
        return "its images"
    more = f", ... ({len(shared)} images)" if len(shared) > 3 else ""
    return "images " + ", ".join(shared[:3]) + more


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
