"""SR generators (SwinIR, RRDBNet, HAT) built from spandrel's architecture classes.

    create_generator("hat", "tiny")                       # random init
    create_generator("swinir", "m", checkpoint="official")  # SwinIR-M x4, official PSNR warm start

Input LR RGB in [0, 1], N x 3 x h x w (SwinIR and HAT reflect-pad to a multiple of their window
and crop the output); output N x 3 x (scale*h) x (scale*w), not clamped. The presets and the
checkpoint manifest are torch-free records in raygrid.spec.generators; this module adds only
what needs torch: which spandrel class builds an architecture, how its published files map onto
that class's state dict, and a strict load whose mismatch is one line naming file and key.

State dicts are spandrel's (= the official repositories' for SwinIR and HAT; spandrel's RRDBNet
uses ESRGAN's original "model.N" names and converts the other layouts), so a checkpoint raygrid
saves is readable by any tool that reads the official files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from spandrel import MAIN_REGISTRY
from spandrel.architectures.ESRGAN import ESRGAN, ESRGANArch
from spandrel.architectures.HAT import HAT
from spandrel.architectures.SwinIR import SwinIR
from torch import nn

from raygrid.errors import PermanentError
from raygrid.spec.generators import (
    check_scale,
    get_generator,
    get_preset,
    resolve_checkpoint,
)

StateDict = dict[str, torch.Tensor]


class CheckpointMismatchError(PermanentError, ValueError):
    """A checkpoint's keys or shapes do not fit the chosen generator."""


def _identity(sd: StateDict) -> StateDict:
    return sd


def _rrdb_to_spandrel_keys(sd: StateDict) -> StateDict:
    """ESRGAN-repository (RRDB_trunk.*) and BasicSR (body.*) names -> spandrel's "model.N" names.

    spandrel's ESRGAN loader does the renaming (and infers the network from the file); the
    state dict of the network it builds is the converted file.
    """
    esrgan = ESRGANArch()
    if "model.0.weight" in sd or not esrgan.detect(sd):
        return sd  # already spandrel's layout, or not an RRDBNet file (the key check reports it)
    return esrgan.load(sd).model.state_dict()


@torch.no_grad()
def _basicsr_rrdb_init(model: nn.Module) -> None:
    """BasicSR's and ESRGAN's from-scratch init: every residual-dense-block conv is Kaiming-normal
    (fan_in) scaled by 0.1 with zero bias ("smaller initialisation" of the ESRGAN paper keeps the
    23-block residual trunk stable). spandrel leaves PyTorch's default conv init."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and ".RDB" in name:
            nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            module.weight.mul_(0.1)
            if module.bias is not None:
                module.bias.zero_()


@dataclass(frozen=True)
class GeneratorNet:
    """The torch side of one GeneratorSpec."""

    build: Callable[[Mapping[str, Any], int], nn.Module]  # (preset kwargs, scale) -> network
    to_spandrel_keys: Callable[[StateDict], StateDict] = _identity  # published layout -> spandrel's
    init: Callable[[nn.Module], None] | None = None  # official from-scratch init where spandrel's differs


NETS: dict[str, GeneratorNet] = {
    "swinir": GeneratorNet(lambda kw, scale: SwinIR(upscale=scale, **kw)),
    "rrdbnet": GeneratorNet(
        lambda kw, scale: ESRGAN(scale=scale, **kw),
        to_spandrel_keys=_rrdb_to_spandrel_keys,
        init=_basicsr_rrdb_init,
    ),
    "hat": GeneratorNet(lambda kw, scale: HAT(upscale=scale, **kw)),
}


def create_generator(
    arch: str,
    preset: str | None = None,
    scale: int = 4,
    checkpoint: str | None = None,
    weights_dir: str | os.PathLike | None = None,
    *,
    param_key: str | None = None,
) -> nn.Module:
    """The generator `arch`/`preset` x`scale` (preset None: the architecture's default preset).

    checkpoint: None (random init), "official" (the preset's warm start), a key of
    raygrid.spec.generators.CHECKPOINTS (found in weights_dir or $RAYGRID_WEIGHTS), "file:PATH"
    or a path. param_key picks "params" / "params_ema" explicitly (default: params_ema if present).
    """
    p = get_preset(arch, preset)
    check_scale(arch, scale)
    path = None
    if checkpoint is not None:  # a bad name or a missing file fails before the network is built
        path = resolve_checkpoint(arch, p.name, checkpoint, weights_dir, scale=scale)
    net = NETS[arch]
    model = net.build(dict(p.kwargs), scale)
    if net.init is not None:
        net.init(model)
    if path is not None:
        load_checkpoint(model, arch, path, param_key=param_key, what=f"{arch}/{p.name} x{scale}")
    return model


def read_state_dict(path: str | os.PathLike, param_key: str | None = None) -> StateDict:
    """An official file's state dict: BasicSR/KAIR {"params_ema"|"params": sd} or a bare state
    dict; a DataParallel "module." prefix is dropped.

    EMA weights are the better generator when a file holds both (BasicSR tests with
    param_key_g: params_ema). spandrel.canonicalize_state_dict does similar unwrapping but also
    guesses at other container keys; raygrid accepts only the layouts it documents.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(
            f"{path}: expected a state dict or a dict with 'params'/'params_ema', got {type(obj).__name__}"
        )
    if param_key is not None:
        if param_key not in obj:
            raise CheckpointMismatchError(f"{path}: no key {param_key!r}; top-level keys: {list(obj)[:8]}")
        sd = obj[param_key]
    else:
        sd = obj.get("params_ema", obj.get("params", obj))
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        what = f"keys {list(sd)[:8]}" if isinstance(sd, dict) else type(sd).__name__
        raise CheckpointMismatchError(f"{path}: not a state dict of tensors ({what})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _detected_arch(sd: StateDict) -> str | None:
    """spandrel's name for the architecture a state dict belongs to (None: none it knows)."""
    for support in MAIN_REGISTRY.architectures("detection"):
        if support.detect(sd):
            return support.architecture.id
    return None


def load_checkpoint(
    model: nn.Module,
    arch: str,
    path: str | os.PathLike,
    param_key: str | None = None,
    what: str | None = None,
) -> None:
    """Load a file into model strictly, except for the derived buffers (rebuilt, not loaded).

    Any missing key, unexpected key or shape difference raises CheckpointMismatchError: one line
    with the file, the first mismatch (in the model's key order; unexpected keys after) and the
    counts of each kind.
    """
    spec = get_generator(arch)
    raw = read_state_dict(path, param_key)
    try:
        sd = NETS[arch].to_spandrel_keys(raw)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:  # spandrel could not convert it
        detail = " ".join(str(e).split())  # torch's load errors span lines
        raise CheckpointMismatchError(
            f"{path}: not a {what or spec.label} checkpoint (converting its keys to spandrel's failed: "
            f"{type(e).__name__} {detail})"
        ) from None
    derived = spec.derived_buffers
    sd = {k: v for k, v in sd.items() if not k.endswith(derived)}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(derived)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        first = next((k for k in own if k not in sd or sd[k].shape != own[k].shape), None)
        if first is None:
            reason = f"unexpected key {unexpected[0]!r}"
        elif first in shapes:
            reason = (f"key {first!r} has shape {tuple(sd[first].shape)} in the file, "
                      f"{tuple(own[first].shape)} in the model")
        else:
            reason = f"missing key {first!r}"
        detected = _detected_arch(raw)
        hint = "" if detected == spec.spandrel_id else (
            f"; spandrel reads the file as {detected}" if detected else "; spandrel recognises no architecture in it")
        raise CheckpointMismatchError(
            f"{path}: does not fit {what or spec.label}: {reason} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} shape mismatches{hint})"
        )
    model.load_state_dict(sd, strict=False)  # strict apart from the derived buffers checked above


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "NETS",
    "CheckpointMismatchError",
    "GeneratorNet",
    "create_generator",
    "load_checkpoint",
    "parameter_count",
    "read_state_dict",
]
