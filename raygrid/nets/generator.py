"""SwinIR generator from spandrel's vendored architecture (docs/models.md).

Input LR in [0,1], N x 3 x h x w with any h, w >= 16 (spandrel reflect-pads to a multiple of the
window and crops the output); output N x 3 x (scale*h) x (scale*w).
Presets: "m" = SwinIR-M classical SR (embed 180, depths/heads 6x6, window 8, mlp 2, pixelshuffle,
1conv, img_size 64 as in the DF2K s64w8 checkpoints), "tiny" = a CPU test configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from spandrel.architectures.SwinIR import SwinIR
from torch import nn

from raygrid.weights import FILE_PREFIX, MANIFEST, resolve_file

SWINIR_PRESETS: dict[str, dict] = {
    "m": {
        "img_size": 64, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 8,
        "mlp_ratio": 2.0, "upsampler": "pixelshuffle", "resi_connection": "1conv", "img_range": 1.0,
    },
    # 0.55 M params; a training step at 1x3x32x32 takes ~0.1 s on 2 CPU cores. No drop-path, so
    # a one-batch fit is deterministic given the seed.
    "tiny": {
        "img_size": 32, "embed_dim": 60, "depths": [2, 2], "num_heads": [6, 6], "window_size": 8,
        "mlp_ratio": 2.0, "upsampler": "pixelshuffle", "resi_connection": "1conv", "img_range": 1.0,
        "drop_path_rate": 0.0,
    },
}

# Buffers derived from img_size/window_size. Official checkpoints carry them, but a checkpoint
# trained at 48 px (s48) differs from one at 64 px only in these, so they are rebuilt, not loaded.
_DERIVED_BUFFERS = ("attn_mask", "relative_position_index")


def create_swinir(preset: str = "m", scale: int = 4, checkpoint: str | None = None,
                  weights_dir: str | None = None, param_key: str | None = None) -> SwinIR:
    """SwinIR x`scale` with a preset; optionally load a checkpoint.

    checkpoint: a path, "file:PATH", or a MANIFEST name (e.g. "swinir_m_x4.classical_df2k",
    looked up in the weights dir). Official files hold "params" or "params_ema"; param_key picks
    one (default: params_ema when present, else params), a bare state dict also works.
    """
    if preset not in SWINIR_PRESETS:
        raise ValueError(f"unknown SwinIR preset {preset!r}; expected one of {', '.join(SWINIR_PRESETS)}")
    if scale not in (2, 3, 4, 8):
        raise ValueError(f"SwinIR scale must be 2, 3, 4 or 8 (pixelshuffle upsampler), got {scale}")
    model = SwinIR(upscale=scale, **SWINIR_PRESETS[preset])
    if checkpoint is not None:
        load_swinir_checkpoint(model, _checkpoint_path(checkpoint, weights_dir), param_key=param_key)
    return model


def _checkpoint_path(checkpoint: str, weights_dir: str | None) -> Path:
    if checkpoint in MANIFEST:
        return resolve_file(checkpoint, weights_dir)
    path = Path(checkpoint.removeprefix(FILE_PREFIX)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"SwinIR checkpoint {str(path)!r} does not exist (give a file path, 'file:PATH' or one of "
            f"{[k for k in MANIFEST if k.startswith('swinir')]})"
        )
    return path


def read_swinir_state_dict(path: str | os.PathLike, param_key: str | None = None) -> dict[str, torch.Tensor]:
    """Official SwinIR/BasicSR/KAIR file ({"params"|"params_ema": sd}) or a bare state dict."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise TypeError(f"{path}: expected a state dict or a dict with 'params'/'params_ema', got {type(obj).__name__}")
    if param_key is not None:
        if param_key not in obj:
            raise KeyError(f"{path}: no key {param_key!r}; top-level keys: {list(obj)[:8]}")
        sd = obj[param_key]
    elif "params_ema" in obj:  # EMA weights are the better generator when both are present
        sd = obj["params_ema"]
    elif "params" in obj:
        sd = obj["params"]
    else:
        sd = obj
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        what = f"keys {list(sd)[:8]}" if isinstance(sd, dict) else type(sd).__name__
        raise ValueError(f"{path}: not a SwinIR state dict ({what})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_swinir_checkpoint(model: nn.Module, path: str | os.PathLike, param_key: str | None = None) -> None:
    """Strict load apart from the derived attention buffers; a mismatch names file and keys."""
    sd = {k: v for k, v in read_swinir_state_dict(path, param_key).items() if not k.endswith(_DERIVED_BUFFERS)}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith(_DERIVED_BUFFERS)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path}: does not match this SwinIR (embed {getattr(model, 'embed_dim', '?')}, "
            f"{len(getattr(model, 'layers', []))} layers, x{getattr(model, 'upscale', '?')}): "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:3]}"
        )
    model.load_state_dict(sd, strict=False)
