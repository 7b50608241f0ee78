"""Images as tensors: float32 CHW (or NCHW) in [0, 1], as they leave a Dataset, and the bicubic
downscaling that makes LR images from HR ones (on the loader's CPU or on the device)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 CHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float CHW in [0, 1] -> uint8 HWC, rounded as BasicSR's tensor2img does."""
    arr = tensor.detach().float().clamp(0, 1).mul(255.0).round().byte().cpu().numpy()
    return arr.transpose(1, 2, 0)


def quantize(tensor: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as if the image had been written to PNG and read back."""
    return tensor.clamp(0, 1).mul(255.0).round().div(255.0)


def bicubic_downscale(hr: torch.Tensor, scale: int, quantize_output: bool = True) -> torch.Tensor:
    """Bicubic downscaling by an integer factor with antialiasing (CHW or NCHW float in [0, 1]).

    torch's `antialias=True` bicubic widens the kernel by `scale`, as MATLAB's `imresize` does; it
    is close to, but not bit-identical with, the MATLAB-made LR images published with the SR
    benchmarks. The output is rounded to 8-bit levels by default so on-the-fly LR matches LR
    read from PNG files.
    """
    batched = hr.dim() == 4
    x = hr if batched else hr.unsqueeze(0)
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not a multiple of the scale {scale}")
    lr = F.interpolate(
        x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True
    ).clamp_(0, 1)
    if quantize_output:
        lr = quantize(lr)
    return lr if batched else lr.squeeze(0)
