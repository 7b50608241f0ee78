"""GAN discriminators ("<head>_<trunk>", raygrid.spec.discriminators) and GAN losses.

Heads (docs/models.md):
  vanilla  image-level: one logit per image, N x 1 (ESRGAN's VGG-style D is of this kind)
  patch    patch-level: one logit per patch, N x 1 x h x w (PatchGAN / U-Net D are of this kind)
Trunks:
  conv                       a plain spectral-norm conv trunk trained from scratch
  vgg16, resnet50, dinov2_vits14   raygrid backbones (create_backbone), trainable or frozen
                             ("projected" discriminators: frozen pretrained encoder + trained head)
The head reads the trunk's last stage map. The trunk is a Backbone, so its state dict keys
(`trunk.*`) are exactly an IQA model's backbone keys: raygrid.nets.iqa initialises from them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from raygrid.nets.backbones import MIN_SIZE, Backbone, create_backbone
from raygrid.spec.backbones import SYMMETRIC_NORM
from raygrid.spec.discriminators import (
    CONV_TRUNK,
    DISCRIMINATOR_TRUNKS,
    GAN_LOSSES,
    NO_DISCRIMINATOR,
    split_discriminator,
)
from raygrid.weights import FILE_PREFIX


class ConvTrunk(Backbone):
    """Plain conv trunk: per stage conv3x3 + conv4x4/2, spectral norm, LeakyReLU(0.2).

    The layout of ESRGAN's VGG-style discriminator without BatchNorm: spectral norm keeps the
    trunk 1-Lipschitz per layer, which is what stabilises from-scratch GAN training here.
    """

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__(CONV_TRUNK, list(channels), [2**(i + 1) for i in range(len(channels))], SYMMETRIC_NORM)
        stages, c_in = [], 3
        for c in channels:
            stages.append(nn.Sequential(
                spectral_norm(nn.Conv2d(c_in, c, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                spectral_norm(nn.Conv2d(c, c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
            ))
            c_in = c
        self.stages = nn.ModuleList(stages)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class VanillaHead(nn.Module):
    """Image-level head: trunk map -> 4 x 4 grid (average pooling) -> flatten -> MLP -> N x 1.

    ESRGAN's VGG-style discriminator flattens a 4 x 4 map: the coarse layout is kept while the
    linear layer stays small (16 C inputs) at any crop size.
    """

    GRID = 4

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__()
        self.fc1 = spectral_norm(nn.Linear(channels * self.GRID**2, hidden))
        self.fc2 = spectral_norm(nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = F.adaptive_avg_pool2d(f, self.GRID).flatten(1)
        return self.fc2(F.leaky_relu(self.fc1(f), 0.2))


class PatchHead(nn.Module):
    """Patch-level head: conv3x3 -> LeakyReLU -> conv1x1 -> one logit per position, N x 1 x h x w."""

    def __init__(self, channels: int, hidden: int = 256):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(channels, hidden, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(hidden, 1, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.leaky_relu(self.conv1(f), 0.2))


class Discriminator(nn.Module):
    """trunk (Backbone) -> last stage map -> head. Input: images in [0,1]."""

    def __init__(self, name: str, trunk: Backbone, head: nn.Module, trunk_trainable: bool = True):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.head = head
        self.trunk_trainable = trunk_trainable
        if not trunk_trainable:
            for p in self.trunk.parameters():
                p.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trunk_trainable:  # a frozen trunk keeps its BatchNorm statistics
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)[-1])

    # The architecture travels with the weights, so loading a checkpoint of another
    # discriminator (or initialising an IQA model from it) can say what it holds.
    def get_extra_state(self) -> dict:
        return {"name": self.name, "trunk": self.trunk.name}

    def set_extra_state(self, state: dict) -> None:
        if isinstance(state, dict) and state.get("name") not in (None, self.name):
            raise ValueError(f"checkpoint holds discriminator {state.get('name')!r}, this one is {self.name!r}")


def _conv_trunk(name: str, weights: str) -> ConvTrunk:
    # The conv trunk has no pretrained weights: "imagenet" (the trunk's standard weights, what a
    # sweep passes to every discriminator) means its from-scratch init, as "random" does.
    trunk = ConvTrunk()
    if weights in ("random", "imagenet"):
        return trunk
    if not weights.startswith(FILE_PREFIX):
        raise ValueError(f"the conv trunk of {name!r} has no pretrained tag {weights!r}; use 'random' or 'file:PATH'")
    path = weights.removeprefix(FILE_PREFIX)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    try:
        trunk.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a conv discriminator trunk state dict: {e}") from e
    return trunk


def create_discriminator(
    name: str,
    weights: str = "random",
    trunk_trainable: bool = True,
    weights_dir: str | None = None,
    input_size: int | None = None,
) -> Discriminator:
    """Build "<head>_<trunk>" (raygrid.spec.discriminators.discriminator_names()).

    weights: the trunk's weights spec (raygrid.weights). The conv trunk has no pretrained weights:
    "random" and "imagenet" both give its from-scratch init; "file:PATH" loads a saved trunk.
    trunk_trainable=False freezes the trunk (gradients still reach the input image).
    input_size: the training crop size, checked here (>= 32, the smallest input a trunk takes);
    both heads work at any size (the vanilla head pools to a fixed 4 x 4 grid).
    """
    if name == NO_DISCRIMINATOR:
        raise ValueError("discriminator 'none' means no adversarial loss: do not build one")
    head_kind, trunk_name = split_discriminator(name)
    if trunk_name == CONV_TRUNK:
        trunk: Backbone = _conv_trunk(name, weights)
    else:
        assert trunk_name in DISCRIMINATOR_TRUNKS
        trunk = create_backbone(trunk_name, weights, weights_dir)
    if input_size is not None and input_size < MIN_SIZE:  # fail here, not at the first batch
        raise ValueError(f"discriminator {name!r}: input_size must be >= {MIN_SIZE}, got {input_size}")
    c = trunk.channels[-1]
    head: nn.Module = PatchHead(c) if head_kind == "patch" else VanillaHead(c)
    return Discriminator(name, trunk, head, trunk_trainable=trunk_trainable)


# ---------------------------------------------------------------------------------------------
# GAN losses
# ---------------------------------------------------------------------------------------------


class GANLoss(nn.Module):
    """Adversarial losses on raw logits (any shape: N x 1 or N x 1 x h x w, averaged).

    kind: vanilla (BCE), hinge, relativistic (relativistic average, ESRGAN), lsgan (least squares).
    `weight` scales the generator term only; the discriminator loss is never weighted (BasicSR).
    Relativistic average compares each logit with the mean logit of the other set, so the
    generator loss needs the real logits too; they are detached there (D is fixed in G's step).
    """

    def __init__(self, kind: str = "vanilla", weight: float = 1.0):
        super().__init__()
        if kind not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss {kind!r}; expected one of {', '.join(GAN_LOSSES)}")
        self.kind = kind
        self.weight = float(weight)

    @staticmethod
    def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Discriminator loss (fake logits from a detached generator output)."""
        if self.kind == "vanilla":
            return self._bce(real_logits, 1.0) + self._bce(fake_logits, 0.0)
        if self.kind == "hinge":
            return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        if self.kind == "lsgan":
            return ((real_logits - 1) ** 2).mean() + (fake_logits**2).mean()
        # relativistic average (BasicSR ESRGANModel): each half against the other's detached mean
        return 0.5 * (
            self._bce(real_logits - fake_logits.detach().mean(), 1.0)
            + self._bce(fake_logits - real_logits.detach().mean(), 0.0)
        )

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Generator loss, multiplied by `weight`."""
        if self.kind == "vanilla":
            loss = self._bce(fake_logits, 1.0)
        elif self.kind == "hinge":
            loss = -fake_logits.mean()
        elif self.kind == "lsgan":
            loss = ((fake_logits - 1) ** 2).mean()
        else:
            if real_logits is None:
                raise ValueError("the relativistic GAN loss needs real_logits for the generator term")
            real = real_logits.detach()
            loss = 0.5 * (self._bce(real - fake_logits.mean(), 0.0) + self._bce(fake_logits - real.mean(), 1.0))
        return self.weight * loss

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, weight={self.weight}"
