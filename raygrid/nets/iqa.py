"""IQA models for the transfer stage: a backbone initialised from ImageNet, random weights, or
the trunk of a GAN discriminator trained by the optimize stage, plus a small regression head.

  NR: x -> backbone stage maps -> spatial mean of each -> concat -> MLP -> score (N,)
  FR: (dist, ref) -> |f(dist) - f(ref)| per stage -> spatial mean -> concat -> MLP -> score (N,)
Scores are trained towards MOS: higher = better quality.
Every stage is pooled (not only the last) so that the shallow layers a discriminator trunk has
shaped also reach the head - that transfer is what the stage measures.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from raygrid.nets.backbones import Backbone, create_backbone

INITS = ("imagenet", "random", "discriminator")


class RegressionHead(nn.Module):
    def __init__(self, n_in: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(1)


class NRIQAModel(nn.Module):
    mode = "NR"
    lower_better = False

    def __init__(self, backbone: Backbone, hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        self.head = RegressionHead(sum(backbone.channels), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([f.mean((2, 3)) for f in self.backbone(x)], 1))


class FRIQAModel(nn.Module):
    mode = "FR"
    lower_better = False

    def __init__(self, backbone: Backbone, hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        self.head = RegressionHead(sum(backbone.channels), hidden)

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if dist.shape != ref.shape:
            raise ValueError(f"dist and ref must have the same shape, got {tuple(dist.shape)} and {tuple(ref.shape)}")
        # One backbone pass over both images (batch concat): same BatchNorm statistics for both.
        feats = self.backbone(torch.cat([dist, ref], 0))
        n = dist.shape[0]
        return self.head(torch.cat([(f[:n] - f[n:]).abs().mean((2, 3)) for f in feats], 1))


def _load_checkpoint(path: Path):
    """torch.load(weights_only=True), also allowing the numpy globals a saved RNG state needs.

    The GAN trainer's checkpoint stores numpy's RNG state next to the weights; numpy arrays and
    dtypes are data, so they are allowlisted - anything else still refuses to unpickle.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if not names or not all(n.startswith("numpy.") for n in names):
            raise
        import numpy as np

        allowed = [getattr(importlib.import_module(mod), attr) for mod, attr in (n.rsplit(".", 1) for n in names)]
        # dtype classes are only reported once the outer globals are allowed: allow them all
        allowed += [getattr(np.dtypes, n) for n in np.dtypes.__all__]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def load_discriminator_trunk(backbone: Backbone, checkpoint: str | os.PathLike) -> None:
    """Copy `trunk.*` weights of a saved Discriminator into `backbone`, strictly.

    The file is torch.save of a Discriminator state dict, or of a dict whose "discriminator" key
    holds one (the SR GAN trainer's checkpoint).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"discriminator checkpoint {str(path)!r} does not exist")
    obj = _load_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get("discriminator"), dict):
        obj = obj["discriminator"]
    if not isinstance(obj, dict):
        raise TypeError(f"{path}: expected a Discriminator state dict, got {type(obj).__name__}")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    meta = obj.get("_extra_state") if isinstance(obj.get("_extra_state"), dict) else {}
    trunk = {k[len("trunk."):]: v for k, v in obj.items() if k.startswith("trunk.")}
    if not trunk:
        raise ValueError(
            f"{path}: no 'trunk.*' keys; expected a Discriminator state dict or {{'discriminator': state_dict}} "
            f"(top-level keys: {list(obj)[:8]})"
        )
    own = backbone.state_dict()
    missing = sorted(set(own) - set(trunk))
    unexpected = sorted(set(trunk) - set(own))
    shapes = [f"{k}: {tuple(trunk[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in trunk and trunk[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        held = f"discriminator {meta.get('name')!r} with trunk {meta.get('trunk')!r}" if meta else "a discriminator"
        raise ValueError(
            f"{path} holds {held}; its trunk does not fit the IQA backbone {backbone.name!r}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:3]}"
        )
    backbone.load_state_dict(trunk, strict=True)


def create_iqa_model(
    kind: Literal["nr", "fr"],
    backbone: str,
    init: Literal["imagenet", "random", "discriminator"] = "imagenet",
    discriminator_checkpoint: str | None = None,
    weights_dir: str | None = None,
    hidden: int = 512,
    weights: str = "imagenet",
) -> nn.Module:
    """NR model forward(x) -> (N,), or FR model forward(dist, ref) -> (N,); higher = better.

    init "imagenet" loads the backbone's pretrained `weights` (default: its standard pretrained
    weights; a named tag or "file:PATH" also work), "random" random init, "discriminator" the
    `trunk.*` weights of discriminator_checkpoint.
    """
    if kind not in ("nr", "fr"):
        raise ValueError(f"unknown IQA model kind {kind!r}; expected 'nr' or 'fr'")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
    if init == "discriminator":
        if discriminator_checkpoint is None:
            raise ValueError("init='discriminator' needs discriminator_checkpoint=<file saved by the GAN trainer>")
        net = create_backbone(backbone, "random", weights_dir)
        load_discriminator_trunk(net, discriminator_checkpoint)
    else:
        if discriminator_checkpoint is not None:
            raise ValueError(f"discriminator_checkpoint is only used with init='discriminator', got init={init!r}")
        net = create_backbone(backbone, weights if init == "imagenet" else "random", weights_dir)
    return NRIQAModel(net, hidden) if kind == "nr" else FRIQAModel(net, hidden)
