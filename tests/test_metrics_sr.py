"""SR PSNR/SSIM against an independent computation: scikit-image's metrics on a Y channel made by
the BT.601 formula from uint8-rounded images, as BasicSR does."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from raygrid.metrics.sr import psnr_rgb, psnr_y, psnr_y_batch, ssim_rgb, ssim_y, ssim_y_batch


def _reference_y(img01: np.ndarray) -> np.ndarray:
    """BasicSR: tensor2img rounding, then to_y_channel (Y on [16, 235], float)."""
    u8 = (np.clip(img01, 0, 1) * 255.0).round().astype(np.uint8)
    x = u8.astype(np.float64) / 255.0
    return (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) + 16.0


def _pair(seed: int, h: int = 41, w: int = 53, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    hr = rng.random((h, w, 3))
    sr = hr + rng.normal(0, noise, hr.shape)  # some values leave [0, 1]: clamping is part of it
    return sr, hr


@pytest.mark.parametrize("seed,crop", [(0, 4), (1, 0), (2, 3)])
def test_psnr_ssim_y_match_skimage_on_bt601_y(seed, crop):
    sr, hr = _pair(seed)
    ys, yh = _reference_y(sr), _reference_y(hr)
    if crop:
        ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
    want_psnr = peak_signal_noise_ratio(yh, ys, data_range=255)
    want_ssim = structural_similarity(yh, ys, data_range=255, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert abs(psnr_y(sr, hr, crop) - want_psnr) < 1e-6
    assert abs(ssim_y(sr, hr, crop) - want_ssim) < 1e-6


def test_rgb_metrics_match_skimage():
    sr, hr = _pair(3)
    def u(x):
        return (np.clip(x, 0, 1) * 255).round()[4:-4, 4:-4]

    assert abs(psnr_rgb(sr, hr, 4) - peak_signal_noise_ratio(u(hr), u(sr), data_range=255)) < 1e-6
    want = structural_similarity(u(hr), u(sr), data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=2)
    assert abs(ssim_rgb(sr, hr, 4) - want) < 1e-6


def test_tensor_chw_equals_array_hwc_and_uint8():
    sr, hr = _pair(4)
    def t(x):
        return torch.from_numpy(x.transpose(2, 0, 1)).float()

    def u8(x):
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)

    # float32 tensors round the same way except for values within float32 error of a .5 step
    assert psnr_y(t(sr), t(hr), 4) == pytest.approx(psnr_y(sr, hr, 4), abs=1e-3)
    assert psnr_y(t(sr)[None], t(hr)[None], 4) == psnr_y(t(sr), t(hr), 4)
    assert psnr_y(u8(sr), u8(hr), 4) == psnr_y(sr, hr, 4)
    assert ssim_y(u8(sr), u8(hr), 4) == ssim_y(sr, hr, 4)


def test_uint8_rounding_and_border_crop():
    hr = np.random.default_rng(5).random((32, 32, 3))
    assert psnr_y(hr, hr, 4) == float("inf")
    # Differences below half a grey level vanish in the uint8 rounding...
    nudged = np.clip(np.round(hr * 255) / 255 + 0.4 / 255, 0, 1)
    assert psnr_y(nudged, hr, 0) == float("inf")
    # ...and differences confined to the border vanish with the crop, not without it.
    framed = hr.copy()
    framed[:4] = 1 - framed[:4]
    assert psnr_y(framed, hr, 4) == float("inf")
    assert psnr_y(framed, hr, 3) < 30
    assert ssim_y(framed, hr, 4) == pytest.approx(1.0)


def test_batch_helpers_and_errors():
    sr, hr = _pair(6, 24, 24)
    s = torch.from_numpy(sr.transpose(2, 0, 1)).double()[None].repeat(3, 1, 1, 1)
    h = torch.from_numpy(hr.transpose(2, 0, 1)).double()[None].repeat(3, 1, 1, 1)
    out = psnr_y_batch(s, h, 2)
    assert out.shape == (3,) and torch.allclose(out, torch.full((3,), psnr_y(sr, hr, 2), dtype=torch.float64))
    assert ssim_y_batch(s, h, 2).shape == (3,)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(sr, hr[:-1], 0)
    with pytest.raises(ValueError, match="crop_border"):
        psnr_y(sr, hr, 12)
    with pytest.raises(ValueError, match="batch"):
        psnr_y(s, h, 0)
