"""SR fidelity metrics with the SwinIR/BasicSR protocol (docs/models.md).

1. Both images are clamped to [0, 1] and rounded to uint8 levels (`(x * 255).round()`), as
   BasicSR's `tensor2img` does before it computes any metric.
2. `crop_border` pixels are removed from every edge (SR papers use crop_border = scale).
3. Y channel (BT.601, MATLAB `rgb2ycbcr`): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on
   [0, 255] RGB, giving Y in [16, 235]; not rounded again, as in BasicSR's `to_y_channel`.
4. PSNR = 10 log10(255^2 / MSE) in float64; identical images give inf.
5. SSIM: 11x11 Gaussian window (sigma 1.5), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, statistics
   over the window with population (not sample) variances, mean over the "valid" region (the
   5-pixel margin where the window leaves the image is dropped).
Everything is float64 (BasicSR computes Y in float32; that changes PSNR by ~1e-5 dB at most).

Inputs: a torch tensor is CHW (or 1xCxHxW); a numpy array is HWC. Pass `layout="CHW"` or "HWC" to
override. Floats are taken as [0, 1]; uint8 arrays as already rounded [0, 255].
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.ndimage import correlate

Layout = Literal["CHW", "HWC"] | None

# BT.601 luma weights for R, G, B on [0, 255] input, output offset 16 (MATLAB rgb2ycbcr)
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_OFFSET = 16.0


def to_uint8_levels(img, layout: Layout = None) -> np.ndarray:
    """Any supported input -> float64 HWC array holding integers 0..255 (the uint8 rounding)."""
    if isinstance(img, torch.Tensor):
        arr = img.detach().cpu()
        if arr.dim() == 4:
            if arr.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of {arr.shape[0]}; use the *_batch helpers")
            arr = arr[0]
        is_uint8 = arr.dtype == torch.uint8
        arr = arr.numpy()
        layout = layout or "CHW"
    else:
        arr = np.asarray(img)
        is_uint8 = arr.dtype == np.uint8
        layout = layout or "HWC"
    if arr.ndim == 2:
        arr = arr[..., None] if layout == "HWC" else arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected a {layout} image, got shape {arr.shape}")
    if layout == "CHW":
        arr = arr.transpose(1, 2, 0)
    if is_uint8:
        return arr.astype(np.float64)
    return np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0)


def rgb_to_y(img255: np.ndarray) -> np.ndarray:
    """BT.601 Y on [16, 235] from an HWC RGB array on [0, 255] (float64)."""
    if img255.shape[-1] == 1:
        return img255[..., 0]
    if img255.shape[-1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {img255.shape[-1]}")
    return img255 @ _Y_WEIGHTS + _Y_OFFSET


def _prepare(sr, hr, crop_border: int, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_uint8_levels(sr, layout), to_uint8_levels(hr, layout)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if 2 * crop_border >= min(a.shape[:2]):
            raise ValueError(f"crop_border={crop_border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


_WINDOW = _gaussian_window()
_MARGIN = (_WINDOW.shape[0] - 1) // 2


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape) <= 2 * _MARGIN:
        raise ValueError(f"image {a.shape[0]}x{a.shape[1]} is too small for an 11x11 SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(x: np.ndarray) -> np.ndarray:
        # Filtering the whole image then dropping the margin = BasicSR's "valid" filter2D.
        return correlate(x, _WINDOW, mode="reflect")[_MARGIN:-_MARGIN, _MARGIN:-_MARGIN]

    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def psnr_y(sr, hr, crop_border: int, layout: Layout = None) -> float:
    """PSNR (dB) on the BT.601 Y channel, after uint8 rounding and cropping `crop_border` px."""
    a, b = _prepare(sr, hr, crop_border, layout)
    return _psnr(rgb_to_y(a), rgb_to_y(b))


def ssim_y(sr, hr, crop_border: int, layout: Layout = None) -> float:
    """SSIM on the BT.601 Y channel, after uint8 rounding and cropping `crop_border` px."""
    a, b = _prepare(sr, hr, crop_border, layout)
    return _ssim_channel(rgb_to_y(a), rgb_to_y(b))


def psnr_rgb(sr, hr, crop_border: int, layout: Layout = None) -> float:
    """PSNR (dB) over all RGB channels, after uint8 rounding and cropping `crop_border` px."""
    a, b = _prepare(sr, hr, crop_border, layout)
    return _psnr(a, b)


def ssim_rgb(sr, hr, crop_border: int, layout: Layout = None) -> float:
    """SSIM averaged over the RGB channels (BasicSR's test_y_channel=False)."""
    a, b = _prepare(sr, hr, crop_border, layout)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def _batch(fn, sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    if sr.shape != hr.shape or sr.dim() != 4:
        raise ValueError(f"expected two NxCxHxW batches of one shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    sr, hr = sr.detach().float().cpu(), hr.detach().float().cpu()
    return torch.tensor([fn(s, h, crop_border, "CHW") for s, h in zip(sr, hr)], dtype=torch.float64)


def psnr_y_batch(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    """Per-image PSNR-Y of NxCxHxW batches in [0, 1] -> float64 tensor [N]."""
    return _batch(psnr_y, sr, hr, crop_border)


def ssim_y_batch(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    """Per-image SSIM-Y of NxCxHxW batches in [0, 1] -> float64 tensor [N]."""
    return _batch(ssim_y, sr, hr, crop_border)
