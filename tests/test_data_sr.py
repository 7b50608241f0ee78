"""SR training/test sets: shapes, bicubic LR, reproducibility by (seed, stream position), layouts,
bad input. The stream across steps, workers and ranks: tests/test_sr_stream.py."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from raygrid import spec
from raygrid.data.images import DatasetRootError, ImageDecodeError
from raygrid.data.sr import SRTestSet, SRTrainSet, resolve_sr_root
from raygrid.data.tensors import bicubic_downscale, to_tensor


def _png(path, h, w, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # smooth random content: bicubic LR of it is informative, not noise
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    img.save(path)
    return np.asarray(img)


@pytest.fixture
def hr_folder(tmp_path):
    root = tmp_path / "train"
    for i, (h, w) in enumerate([(48, 64), (56, 40), (64, 64)]):
        _png(str(root / f"img{i}.png"), h, w, i)
    return str(root)


def test_train_sample_shapes_and_lr_is_bicubic_of_hr(hr_folder):
    ds = SRTrainSet(hr_folder, hr_crop=32, scale=4, seed=0)
    assert len(ds) == 3
    s = ds[1]
    assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 8, 8)
    assert s["hr"].dtype == s["lr"].dtype == torch.float32
    assert 0 <= float(s["hr"].min()) and float(s["hr"].max()) <= 1
    assert torch.equal(s["lr"], bicubic_downscale(s["hr"], 4))
    # LR is on the 8-bit grid, as if read from a PNG
    assert torch.equal(s["lr"], (s["lr"] * 255).round() / 255)


def test_crop_without_augment_is_a_patch_of_the_image(hr_folder):
    ds = SRTrainSet(hr_folder, hr_crop=24, seed=3, augment=False)
    for position in (3, 4):  # second pass of the stream
        path = ds.paths[ds.order.item(position)]
        img = np.asarray(Image.open(path))
        patch = (ds[position]["hr"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        hits = [(t, l) for t in range(img.shape[0] - 23) for l in range(img.shape[1] - 23)
                if np.array_equal(img[t : t + 24, l : l + 24], patch)]
        assert hits


def test_reproducible_by_seed_and_position(hr_folder):
    a = SRTrainSet(hr_folder, 32, seed=1)
    b = SRTrainSet(hr_folder, 32, seed=1)
    c = SRTrainSet(hr_folder, 32, seed=2)
    assert all(torch.equal(a[p]["hr"], b[p]["hr"]) for p in range(9))
    assert any(not torch.equal(a[p]["hr"], c[p]["hr"]) for p in range(9))
    # the same image at its next visit (a later pass) gets another crop
    for p in range(3):
        later = next(q for q in range(3, 9) if a.order.item(q) == a.order.item(p))
        assert not torch.equal(a[p]["hr"], a[later]["hr"])
    with pytest.raises(IndexError):
        a[-1]


def test_same_samples_with_and_without_workers(hr_folder):
    ds = SRTrainSet(hr_folder, 32, seed=4)
    plain = [b["hr"] for b in DataLoader(ds, batch_size=1)]
    workers = [b["hr"] for b in DataLoader(ds, batch_size=1, num_workers=2)]
    assert len(plain) == 3 and all(torch.equal(x, y) for x, y in zip(plain, workers))


def test_train_set_bad_input(tmp_path, hr_folder, caplog):
    with pytest.raises(DatasetRootError, match="does not exist: .*nowhere"):
        SRTrainSet(str(tmp_path / "nowhere"), 32)
    with pytest.raises(ValueError, match="multiple of scale"):
        SRTrainSet(hr_folder, 30)
    at_img1 = next(p for p in range(3) if SRTrainSet(hr_folder, 32).order.item(p) == 1)
    with pytest.raises(ValueError, match=r"img1.png is 56x40, smaller than hr_crop=48"):
        SRTrainSet(hr_folder, 48)[at_img1]
    bad = os.path.join(hr_folder, "img1.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageDecodeError, match="img1.png"):
        SRTrainSet(hr_folder, 32)[at_img1]
    ds = SRTrainSet(hr_folder, 32, skip_unreadable=True)
    with caplog.at_level(logging.WARNING, logger="raygrid.data.sr"):
        samples = [ds[i] for i in range(6)]
    assert all(s["hr"].shape == (3, 32, 32) for s in samples)
    assert ds.skipped == 1  # counted once per process, not once per sample
    assert "skipped unreadable image" in caplog.text and "img1.png" in caplog.text


def _paired_set(root, names, scale=4, layout="swinir"):
    hr_dir, lr_dir, pattern = {
        "swinir": ("HR", f"LR_bicubic/X{scale}", "{n}x{s}.png"),
        "div2k": ("DIV2K_valid_HR", f"DIV2K_valid_LR_bicubic/X{scale}", "{n}x{s}.png"),
        "basicsr": ("GTmod12", f"LRbicx{scale}", "{n}.png"),
    }[layout]
    (root / lr_dir).mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        hr = _png(str(root / hr_dir / f"{n}.png"), 50, 42, i)  # not a multiple of 4: cropped
        lr = bicubic_downscale(to_tensor(hr[:48, :40]), scale)
        lr_u8 = (lr.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(lr_u8).save(root / lr_dir / pattern.format(n=n, s=scale))


@pytest.mark.parametrize("layout", ["swinir", "div2k", "basicsr"])
def test_test_set_layouts(tmp_path, layout):
    _paired_set(tmp_path, ["baby", "bird"], layout=layout)
    ds = SRTestSet(str(tmp_path), scale=4)
    assert ds.lr_dir is not None and len(ds) == 2
    s = ds[0]
    assert s["name"] == "baby" and s["lr"].shape == (3, 12, 10) and s["hr"].shape == (3, 48, 40)


def test_test_set_div2k_hr_folder_itself_and_on_the_fly_lr(tmp_path):
    _paired_set(tmp_path, ["0801"], layout="div2k")
    ds = SRTestSet(str(tmp_path / "DIV2K_valid_HR"))
    assert ds.lr_dir.endswith(os.path.join("DIV2K_valid_LR_bicubic", "X4"))
    flat = tmp_path / "flat"
    _png(str(flat / "a.png"), 50, 42, 0)
    ds = SRTestSet(str(flat))
    s = ds[0]
    assert ds.lr_dir is None
    assert s["hr"].shape == (3, 48, 40) and torch.equal(s["lr"], bicubic_downscale(s["hr"], 4))


def test_test_set_bad_input(tmp_path, caplog):
    _paired_set(tmp_path, ["baby", "bird"])
    os.remove(tmp_path / "LR_bicubic" / "X4" / "birdx4.png")
    with pytest.raises(FileNotFoundError, match=r"no LR image for .*bird.png; expected .*birdx4.png"):
        SRTestSet(str(tmp_path))
    flat = tmp_path / "flat"
    _png(str(flat / "a.png"), 32, 32, 0)
    (flat / "b.png").write_bytes(b"garbage")
    with pytest.raises(ImageDecodeError, match="b.png"):
        SRTestSet(str(flat))[1]
    with caplog.at_level(logging.WARNING, logger="raygrid.data.sr"):
        ds = SRTestSet(str(flat), skip_unreadable=True)
    assert len(ds) == 1 and ds.skipped == 1 and "b.png" in caplog.text
    with pytest.raises(DatasetRootError, match="missing"):
        SRTestSet(str(tmp_path / "missing"))


def test_resolve_sr_root(tmp_path):
    for name, info in spec.SR_SETS.items():
        if not name.startswith("demo_"):
            assert resolve_sr_root(name, str(tmp_path)) == os.path.join(str(tmp_path), info.folder)
    assert resolve_sr_root("set5", "s3://bucket/data") == "s3://bucket/data/Set5"
    assert resolve_sr_root("s3://b/x", str(tmp_path)) == "s3://b/x"
    assert resolve_sr_root("/some/folder", str(tmp_path)) == "/some/folder"
