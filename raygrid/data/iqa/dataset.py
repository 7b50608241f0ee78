"""The IQA Dataset over a benchmark table (`raygrid.data.iqa.table.load_benchmark`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from raygrid.data.images import DatasetRootError, ImageDecodeError, read_rgb, resize_rgb
from raygrid.data.tensors import to_tensor

log = logging.getLogger(__name__)



class IQADataset(Dataset):
    """Images (NR) or image pairs (FR) with their scores, from a `load_benchmark` table.

    Yields {"dist": float32 3xHxW in [0, 1], "ref": same (FR only), "score": float32 scalar,
    "index": row position in the split}. `size` resizes every image to size x size (bicubic),
    for batching; None keeps the native resolution (use batch_size=1). `crop` takes a random
    crop, at the same place in dist and ref, drawn from (seed, epoch, index) so workers and ranks
    agree; `set_epoch` changes it. `target` picks the score column ("score" or "score_norm").
    With `skip_unreadable`, an image that does not decode is replaced by the next readable row and
    counted in the log (for training; use `check_images` to clean an evaluation table).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        split: str | Sequence[str],
        size: int | None = None,
        crop: int | None = None,
        seed: int = 0,
        target: str = "score",
        skip_unreadable: bool = False,
    ):
        splits = [split] if isinstance(split, str) else list(split)
        rows = table[table["split"].isin(splits)].reset_index(drop=True)
        if rows.empty:
            have = sorted(table["split"].dropna().unique().tolist())
            raise ValueError(f"no rows in split {splits} of {table.attrs.get('benchmark', 'table')}; splits present: {have}")
        if target not in rows.columns:
            raise ValueError(f"target {target!r} is not a column of the table")
        self.rows = rows
        self.mode = table.attrs.get("mode") or ("FR" if rows["ref"].notna().all() else "NR")
        self.size, self.crop, self.seed, self.target = size, crop, seed, target
        self.skip_unreadable = skip_unreadable
        self.epoch = 0
        self.skipped = 0
        self._unreadable: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _images(self, i: int) -> list[np.ndarray]:
        row = self.rows.iloc[i]
        paths = [row["dist"]] + ([row["ref"]] if self.mode == "FR" else [])
        return [read_rgb(p, listed_at=row["origin"]) for p in paths]

    def __getitem__(self, index: int) -> dict:
        n = len(self.rows)
        for step in range(n):
            i = (index + step) % n
            if i in self._unreadable:
                continue
            try:
                images = self._images(i)
                break
            except ImageDecodeError as exc:
                if not self.skip_unreadable:
                    raise
                self._unreadable.add(i)
                self.skipped += 1
                log.warning("skipped unreadable image %s (%d skipped so far in this process)", exc.path, self.skipped)
        else:
            raise DatasetRootError("IQA dataset: no readable image left")
        if self.size is not None:
            images = [resize_rgb(im, (self.size, self.size)) for im in images]
        if self.crop is not None:
            h, w = images[0].shape[:2]
            c = self.crop
            if h < c or w < c:
                raise ValueError(f"image {self.rows.iloc[i]['dist']} is {h}x{w}, smaller than crop={c}")
            rng = np.random.default_rng([self.seed, self.epoch, index])
            top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            images = [im[top : top + c, left : left + c] for im in images]
        out = {
            "dist": to_tensor(images[0]),
            "score": torch.tensor(float(self.rows.iloc[i][self.target]), dtype=torch.float32),
            "index": i,
        }
        if self.mode == "FR":
            out["ref"] = to_tensor(images[1])
        return out
