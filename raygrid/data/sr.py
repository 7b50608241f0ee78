"""Super-resolution data: an on-the-fly training stream and paired test sets.

Training (`SRTrainSet`): a folder (or s3:// prefix) of HR images. Each sample is a random HR crop,
optionally flipped/rotated (BasicSR's `augment`: hflip, vflip, transpose), with the LR made from
it by antialiased bicubic downscaling and rounded to 8-bit levels.

The set is indexed by *stream position* (raygrid.data.stream): position p shows the image that a
per-pass permutation of the image list puts at p, cropped and flipped by a generator seeded from
(seed, p). Every sample of a run therefore gets its own crop, and a sample depends on nothing but
(seed, p): no epoch counter, worker id or rank. `raygrid.data.stream.train_batches` hands the
positions out by step, rank and world.

Crops are read from decoded PNGs or, when a store is given or prepared beside the set
(raygrid.data.sr_store), from its memory-mapped arrays: the same pixels, without decoding a whole
image per crop.

Testing (`SRTestSet`): the standard layouts,
  <root>/HR/baby.png            + <root>/LR_bicubic/X4/babyx4.png     (SwinIR / KAIR)
  <root>/GTmod12/baby.png       + <root>/LRbicx4/baby.png             (BasicSR val copies)
  <root>/DIV2K_valid_HR/0801.png + <root>/DIV2K_valid_LR_bicubic/X4/0801x4.png   (DIV2K)
  <root> = .../DIV2K_valid_HR itself, LR in the sibling DIV2K_valid_LR_bicubic/X4
  <root>/*.png                  (HR only)
A set may be a slice of its folder (`SRSetSpec.stems`, e.g. DIV2K-val 0801-0810 for selection and
0811-0900 for the tables): `open_sr_test_set` opens a named set with its slice applied.
If no LR folder exists, LR is made on the fly from the HR image (mod-cropped to a multiple of the
scale) with the same bicubic as training; published numbers use MATLAB-made LR, so such scores are
close to, not equal to, the literature's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from raygrid import spec as catalog
from raygrid.data.images import (
    DatasetRootError,
    ImageDecodeError,
    ImageSizeError,
    list_images,
    read_rgb,
)
from raygrid.data.sr_store import SRStore, find_store, open_store
from raygrid.data.stream import PassOrder, sample_rng
from raygrid.data.tensors import bicubic_downscale, to_tensor
from raygrid.io import ensure_local, local_root
from raygrid.io import is_s3 as is_s3_uri

log = logging.getLogger(__name__)

# Decoded training images are kept in memory when the whole set is smaller than this: the demo
# and small sets then decode each file once per worker instead of once per sample.
CACHE_LIMIT_BYTES = 256 * 2**20


def _check_root(root: str, what: str) -> None:
    if not os.path.isdir(root):
        raise DatasetRootError(f"{what}: dataset root does not exist: {root}")


def resolve_sr_root(name_or_path: str, data_root: str) -> str:
    """Folder (or s3:// URI) of an SR set: a catalog name (`set5`, `demo_sr_train`, ...) is looked up
    under `data_root`; anything else is taken as a path. Demo sets are built on first use, in
    raygrid's cache.
    """
    if name_or_path in catalog.SR_SETS:
        folder = catalog.SR_SETS[name_or_path].folder
        if name_or_path.startswith("demo_"):
            from raygrid.data.demo import build_demo

            # Demo sets live in raygrid's cache, never inside a user's data root.
            build_demo()
            return os.path.join(local_root(None), folder)  # the slice records share a demo folder
        if is_s3_uri(data_root):
            return f"{data_root.rstrip('/')}/{folder}"
        return os.path.join(os.path.expanduser(data_root), folder)
    if is_s3_uri(name_or_path):
        return name_or_path
    return os.path.expanduser(name_or_path)


def _skip_message(path: str, skipped: int) -> str:
    return f"skipped unreadable image {path} ({skipped} skipped so far in this process)"


class SRTrainSet(Dataset):
    """Random HR crops with on-the-fly bicubic LR, one per stream position.

    `dataset[p]` for any position p >= 0 is {"lr": float32 3x(c/s)x(c/s), "hr": float32 3xcxc},
    values in [0, 1], c = hr_crop; len() is the number of images (one pass of the stream).
    Images smaller than the crop raise ImageSizeError (a ValueError) naming the file. With `skip_unreadable`, a file
    that does not decode is replaced by the next readable one and counted in the log.

    store: None reads the PNGs; "auto" uses the store prepared at the default location
    (`<root>.srstore`) if there is one, else the PNGs; a path or s3:// URI names a store that must
    exist (or is built, with on_mismatch="rebuild"). on_mismatch: what a store that does not
    match its sources (or is incomplete) gets: "refuse" (StoreError) or "rebuild".
    cache: keep decoded PNGs in memory (None: when the set is small, see CACHE_LIMIT_BYTES).
    make_lr: False leaves "lr" out (the train loop makes it on its device, with bicubic_downscale).
    """

    def __init__(
        self,
        root: str,
        hr_crop: int,
        scale: int = 4,
        seed: int = 0,
        augment: bool = True,
        skip_unreadable: bool = False,
        endpoint_url: str | None = None,
        store: str | None = None,
        on_mismatch: Literal["refuse", "rebuild"] = "refuse",
        cache: bool | None = None,
        make_lr: bool = True,
    ):
        if hr_crop <= 0 or hr_crop % scale:
            raise ValueError(f"hr_crop={hr_crop} must be a positive multiple of scale={scale}")
        self.source = root
        self.root = ensure_local(root, endpoint_url)
        _check_root(self.root, "SR training set")
        self.paths = list_images(self.root, recursive=True)
        if not self.paths:
            raise DatasetRootError(f"SR training set: no images in {self.root}")
        self.hr_crop, self.scale, self.seed, self.augment = hr_crop, scale, seed, augment
        self.make_lr = make_lr
        self.order = PassOrder(seed, len(self.paths))
        self.skip_unreadable = skip_unreadable
        self.skipped = 0
        self._unreadable: set[int] = set()  # per process: each broken file is logged once
        self.store: SRStore | None = None
        if store == "auto":
            self.store = find_store(root, self.root, on_mismatch, endpoint_url)
        elif store is not None:
            self.store = open_store(self.root, store, on_mismatch, skip_unreadable=skip_unreadable,
                                    endpoint_url=endpoint_url, source=root)
        if self.store is not None:
            log.info("SR training set %s: crops from the store %s", root, self.store.location)
        if cache is None:
            # Compressed size underestimates decoded size by ~3-10x; the limit allows for that.
            cache = self.store is None and sum(os.path.getsize(p) for p in self.paths) * 8 < CACHE_LIMIT_BYTES
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, idx: int) -> np.ndarray:
        """Image idx, whole: a memmap when read from the store (slicing it reads only the crop)."""
        if self.store is not None:
            return self.store.array(idx)
        if self._cache is not None and idx in self._cache:
            return self._cache[idx]
        arr = read_rgb(self.paths[idx])
        if self._cache is not None:
            self._cache[idx] = arr
        return arr

    def _readable_image(self, i: int) -> tuple[int, np.ndarray]:
        n = len(self.paths)
        for step in range(n):
            idx = (i + step) % n
            if idx in self._unreadable:
                continue
            try:
                return idx, self._image(idx)
            except ImageDecodeError:
                if not self.skip_unreadable:
                    raise
                self._unreadable.add(idx)
                self.skipped += 1
                log.warning(_skip_message(self.paths[idx], self.skipped))
        raise DatasetRootError(f"SR training set: no readable image in {self.root}")

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        idx, img = self._readable_image(self.order.item(position))  # IndexError for p < 0
        h, w = img.shape[:2]
        c = self.hr_crop
        if h < c or w < c:
            raise ImageSizeError(f"HR image {self.paths[idx]} is {h}x{w}, smaller than hr_crop={c}")
        rng = sample_rng(self.seed, position)
        top = int(rng.integers(0, h - c + 1))
        left = int(rng.integers(0, w - c + 1))
        patch = img[top : top + c, left : left + c]
        if self.augment:
            hflip, vflip, transpose = rng.random(3) < 0.5
            if hflip:
                patch = patch[:, ::-1]
            if vflip:
                patch = patch[::-1]
            if transpose:
                patch = patch.transpose(1, 0, 2)
        hr = to_tensor(patch)
        return {"lr": bicubic_downscale(hr, self.scale), "hr": hr} if self.make_lr else {"hr": hr}


@dataclass(frozen=True)
class SRPair:
    name: str
    hr: str
    lr: str | None  # None: made on the fly


def _find_lr(lr_dir: Path, hr_path: str, scale: int) -> str | None:
    stem, ext = os.path.splitext(os.path.basename(hr_path))
    for candidate in (f"{stem}x{scale}{ext}", f"{stem}x{scale}.png", f"{stem}{ext}", f"{stem}.png"):
        if (lr_dir / candidate).is_file():
            return str(lr_dir / candidate)
    return None


def _layout(root: Path, scale: int) -> tuple[Path, Path | None]:
    """(HR folder, LR folder or None) for the layouts in the module docstring."""
    pairs = [
        ("HR", f"LR_bicubic/X{scale}"),
        ("GTmod12", f"LRbicx{scale}"),
        ("DIV2K_valid_HR", f"DIV2K_valid_LR_bicubic/X{scale}"),
    ]
    for hr_name, lr_name in pairs:
        if (root / hr_name).is_dir():
            lr = root / lr_name
            return root / hr_name, lr if lr.is_dir() else None
    if root.name.endswith("_HR"):
        lr = root.parent / f"{root.name[: -len('_HR')]}_LR_bicubic" / f"X{scale}"
        return root, lr if lr.is_dir() else None
    return root, None


class SRTestSet(Dataset):
    """Paired (LR, HR) test images at native size; yields {"lr", "hr", "name"}.

    HR is cropped to LR size x scale (top-left), as in SwinIR's evaluation. If no LR folder
    exists, LR is made on the fly by antialiased bicubic downscaling of the HR image mod-cropped to
    a multiple of `scale` (see the module docstring). Use batch_size=1: sizes differ per image.
    With `skip_unreadable`, every image is decoded once at construction and pairs that do not
    decode are dropped (counted in `skipped` and the log).
    """

    def __init__(
        self,
        root: str,
        scale: int = 4,
        skip_unreadable: bool = False,
        endpoint_url: str | None = None,
        stems: Sequence[str] | None = None,
    ):
        self.root = ensure_local(root, endpoint_url)
        _check_root(self.root, "SR test set")
        self.scale = scale
        self.skip_unreadable = skip_unreadable
        self.skipped = 0
        hr_dir, lr_dir = _layout(Path(self.root), scale)
        self.hr_dir, self.lr_dir = str(hr_dir), (str(lr_dir) if lr_dir else None)
        hr_paths = list_images(hr_dir)
        if not hr_paths:
            raise DatasetRootError(f"SR test set: no images in {hr_dir}")
        if stems is not None:  # a slice of the folder, in the slice's order
            by_stem = {os.path.splitext(os.path.basename(p))[0]: p for p in hr_paths}
            absent = [s for s in stems if s not in by_stem]
            if absent:
                raise FileNotFoundError(f"SR test set: the slice names {len(absent)} image(s) that are not in "
                                        f"{hr_dir}, e.g. {absent[0]!r}")
            hr_paths = [by_stem[s] for s in stems]
        self.pairs: list[SRPair] = []
        for hr in hr_paths:
            lr = None
            if lr_dir is not None:
                lr = _find_lr(lr_dir, hr, scale)
                if lr is None:
                    stem, ext = os.path.splitext(os.path.basename(hr))
                    raise FileNotFoundError(
                        f"SR test set: no LR image for {hr}; expected {lr_dir / f'{stem}x{scale}{ext}'}"
                    )
            self.pairs.append(SRPair(os.path.splitext(os.path.basename(hr))[0], hr, lr))
        if lr_dir is None:
            log.info("SR test set %s has no LR folder; making x%d bicubic LR on the fly", self.root, scale)
        if skip_unreadable:
            # Decode everything once now: an evaluation set must not silently repeat an image in
            # place of a broken one, so broken pairs are dropped up front.
            readable = []
            for pair in self.pairs:
                try:
                    for path in (pair.hr, pair.lr):
                        if path is not None:
                            read_rgb(path)
                    readable.append(pair)
                except ImageDecodeError as exc:
                    self.skipped += 1
                    log.warning(_skip_message(exc.path, self.skipped))
            self.pairs = readable
            if not self.pairs:
                raise DatasetRootError(f"SR test set: no readable image in {self.root}")

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, pair: SRPair) -> dict:
        s = self.scale
        hr = read_rgb(pair.hr)
        if pair.lr is not None:
            lr = to_tensor(read_rgb(pair.lr))
            h, w = lr.shape[1] * s, lr.shape[2] * s
            if hr.shape[0] < h or hr.shape[1] < w:
                raise ValueError(
                    f"LR {pair.lr} ({lr.shape[1]}x{lr.shape[2]}) x{s} is larger than HR {pair.hr} "
                    f"({hr.shape[0]}x{hr.shape[1]})"
                )
            hr_t = to_tensor(hr[:h, :w])
        else:
            h, w = hr.shape[0] - hr.shape[0] % s, hr.shape[1] - hr.shape[1] % s
            hr_t = to_tensor(hr[:h, :w])
            lr = bicubic_downscale(hr_t, s)
        return {"lr": lr, "hr": hr_t, "name": pair.name}

    def __getitem__(self, index: int) -> dict:
        return self._load(self.pairs[index])


def open_sr_test_set(name_or_path: str, data_root: str, scale: int = 4, skip_unreadable: bool = False,
                     endpoint_url: str | None = None) -> SRTestSet:
    """The evaluation set a trial config names (a record of raygrid.spec.datasets or a path), with
    the record's slice applied: what every reader of an SR evaluation set should open."""
    record = catalog.SR_SETS.get(name_or_path)
    return SRTestSet(resolve_sr_root(name_or_path, data_root), scale=scale, skip_unreadable=skip_unreadable,
                     endpoint_url=endpoint_url, stems=record.stems if record is not None else None)
