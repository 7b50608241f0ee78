"""The sample crops: their record, choosing them, and rendering them from a checkpoint.

A crop is a square region of one test image in HR pixels (`top`, `left`, `size`, all multiples
of the scale, so the LR region is exact). The sweep's crops are the sweep run's
`samples/crops.json` when it has one; otherwise `choose_crops` picks them here, deterministically:
per test image (in the order of the run's `data.val` sets, images by name), the window with the
most gradient energy ("detail"), then, in a second pass, the window with the most Laplacian
energy not overlapping the first ("texture"); round robin over images until `max_crops`.
raygrid's test sets have no text or face annotations, so those kinds are only ever read, never
chosen, here.

Rendering runs the EMA generator on the crop's LR region plus a margin of `MARGIN` LR pixels
(clipped at the image border) and cuts the crop out of the output, so the window attention sees
the same context as in a full-image pass and the crop has no border artefacts of its own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("detail", "texture", "text", "face")
MARGIN = 8  # LR pixels of context around a crop when rendering
DEFAULT_SIZE = 96  # HR pixels
DEFAULT_MAX_CROPS = 6


@dataclass(frozen=True)
class Crop:
    id: str
    set: str
    image: str
    top: int
    left: int
    size: int
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_crops(text: str, where: str, scale: int | None = None) -> list[Crop]:
    """`{"crops": [{"id", "set", "image", "top", "left", "size", "kind"}, ...]}`, strictly."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("crops"), list) or not doc["crops"]:
        raise ValueError(f'{where}: expected {{"crops": [ ... ]}} with at least one crop')
    crops, seen = [], set()
    fields = {"id": str, "set": str, "image": str, "top": int, "left": int, "size": int, "kind": str}
    for n, entry in enumerate(doc["crops"]):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: crops[{n}] is not an object")
        unknown = sorted(set(entry) - set(fields))
        missing = sorted(set(fields) - set(entry))
        if unknown or missing:
            raise ValueError(f"{where}: crops[{n}] " + (f"has unknown key(s) {unknown}" if unknown else f"lacks {missing}")
                             + f"; expected keys {list(fields)}")
        for key, typ in fields.items():
            if not isinstance(entry[key], typ) or isinstance(entry[key], bool):
                raise ValueError(f"{where}: crops[{n}].{key} = {entry[key]!r}, expected {typ.__name__}")
        if entry["kind"] not in KINDS:
            raise ValueError(f"{where}: crops[{n}].kind = {entry['kind']!r}, expected one of {', '.join(KINDS)}")
        if entry["size"] <= 0 or entry["top"] < 0 or entry["left"] < 0:
            raise ValueError(f"{where}: crops[{n}] needs size > 0 and top, left >= 0")
        if scale and any(entry[k] % scale for k in ("top", "left", "size")):
            raise ValueError(f"{where}: crops[{n}] top/left/size must be multiples of the scale {scale}")
        if entry["id"] in seen:
            raise ValueError(f"{where}: crop id {entry['id']!r} appears twice")
        seen.add(entry["id"])
        crops.append(Crop(**entry))
    return crops


def dump_crops(crops: list[Crop]) -> str:
    return json.dumps({"crops": [c.to_dict() for c in crops]}, indent=1)


# ---------------------------------------------------------------------------------------------
# Choosing
# ---------------------------------------------------------------------------------------------


def _window_sums(energy: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = energy.shape
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tops = np.arange(0, h - size + 1, stride)
    lefts = np.arange(0, w - size + 1, stride)
    t, l = np.meshgrid(tops, lefts, indexing="ij")
    s = integral[t + size, l + size] - integral[t, l + size] - integral[t + size, l] + integral[t, l]
    return s, t, l


def _best_window(energy, size, stride, avoid: tuple[int, int] | None) -> tuple[int, int] | None:
    s, t, l = _window_sums(energy, size, stride)
    if avoid is not None:  # no overlap with the first crop of this image
        overlap = (np.abs(t - avoid[0]) < size) & (np.abs(l - avoid[1]) < size)
        s = np.where(overlap, -np.inf, s)
    if not np.isfinite(s).any():
        return None
    i = int(np.argmax(s))  # first maximum in row-major order: deterministic
    return int(t.flat[i]), int(l.flat[i])


def _energies(hr: np.ndarray) -> dict[str, np.ndarray]:
    from scipy import ndimage

    y = hr.astype(float) @ np.array([0.299, 0.587, 0.114])
    gy, gx = np.gradient(y)
    return {"detail": np.hypot(gx, gy), "texture": np.abs(ndimage.laplace(y))}


def choose_crops(images: list[tuple[str, str, np.ndarray]], scale: int, size: int = DEFAULT_SIZE,
                 max_crops: int = DEFAULT_MAX_CROPS) -> list[Crop]:
    """images: (set name, image stem, HR H×W×3 array) in order. Ids c00, c01, ..."""
    plans = []
    for set_name, stem, hr in images:
        side = min(size, (min(hr.shape[:2]) // scale) * scale)
        if side < 4 * scale:
            continue
        plans.append((set_name, stem, hr, side, max(scale, (side // 4) // scale * scale)))
    chosen: list[Crop] = []
    first: dict[int, tuple[int, int]] = {}
    for kind in ("detail", "texture"):
        for n, (set_name, stem, hr, side, stride) in enumerate(plans):
            if len(chosen) >= max_crops:
                return chosen
            pos = _best_window(_energies(hr)[kind], side, stride, first.get(n) if kind == "texture" else None)
            if pos is None:
                continue
            if kind == "detail":
                first[n] = pos
            chosen.append(Crop(f"c{len(chosen):02d}", set_name, stem, pos[0], pos[1], side, kind))
    return chosen


# ---------------------------------------------------------------------------------------------
# Reference and rendered crops
# ---------------------------------------------------------------------------------------------


class TestImages:
    """LR/HR tensors of the test images the crops name, read once per set."""

    def __init__(self, data_root: str, scale: int):
        self.data_root, self.scale = data_root, scale
        self._sets: dict[str, dict[str, int]] = {}
        self._data: dict[str, Any] = {}

    def _dataset(self, set_name: str):
        from raygrid.data.sr import open_sr_test_set

        if set_name not in self._data:
            ds = open_sr_test_set(set_name, self.data_root, scale=self.scale)  # with its slice
            self._data[set_name] = ds
            self._sets[set_name] = {p.name: i for i, p in enumerate(ds.pairs)}
        return self._data[set_name]

    def names(self, set_name: str) -> list[str]:
        self._dataset(set_name)
        return list(self._sets[set_name])

    def pair(self, set_name: str, image: str):
        ds = self._dataset(set_name)
        if image not in self._sets[set_name]:
            raise KeyError(f"test set {set_name!r} under {self.data_root} has no image {image!r}")
        item = ds[self._sets[set_name][image]]
        return item["lr"], item["hr"]


def check_fits(crop: Crop, hr_shape: tuple[int, ...]) -> None:
    h, w = hr_shape[-2:]
    if crop.top + crop.size > h or crop.left + crop.size > w:
        raise ValueError(f"crop {crop.id} ({crop.top}+{crop.size}, {crop.left}+{crop.size}) does not fit "
                         f"{crop.set}/{crop.image} ({h}x{w} HR)")


def reference(images: TestImages, crop: Crop) -> tuple[np.ndarray, np.ndarray]:
    """(HR crop, bicubic upscaling of the LR crop) as H×W×3 uint8."""
    import torch.nn.functional as F

    from raygrid.data.tensors import to_uint8

    lr, hr = images.pair(crop.set, crop.image)
    check_fits(crop, hr.shape)
    s = images.scale
    hr_crop = hr[:, crop.top:crop.top + crop.size, crop.left:crop.left + crop.size]
    lr_crop = lr[:, crop.top // s:(crop.top + crop.size) // s, crop.left // s:(crop.left + crop.size) // s]
    bic = F.interpolate(lr_crop[None], scale_factor=s, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return to_uint8(hr_crop), to_uint8(bic)


def load_generator(model_path: str | Path, arch: str, preset: str | None, scale: int):
    """The EMA generator of a `checkpoints/<which>/model.pt` artifact (the "ema" weights; the
    raw generator only when a file has no EMA)."""
    import torch

    from raygrid.nets.generators import create_generator

    state = torch.load(model_path, map_location="cpu", weights_only=True)
    weights = state.get("ema", state.get("generator")) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{model_path}: no generator weights (expected the key 'ema' or 'generator')")
    model = create_generator(arch, preset, scale=scale)
    model.load_state_dict(weights)
    return model.eval()


def render(model, images: TestImages, crops: list[Crop]) -> dict[str, np.ndarray]:
    """SR of every crop (H×W×3 uint8), one torch thread (fastest for small inputs on shared cores)."""
    import torch

    from raygrid.data.tensors import to_uint8

    s, m = images.scale, MARGIN
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for crop in crops:
                lr, hr = images.pair(crop.set, crop.image)
                check_fits(crop, hr.shape)
                t0, l0, n = crop.top // s, crop.left // s, crop.size // s
                top, left = max(0, t0 - m), max(0, l0 - m)
                bottom, right = min(lr.shape[-2], t0 + n + m), min(lr.shape[-1], l0 + n + m)
                sr = model(lr[None, :, top:bottom, left:right])[0].clamp(0, 1)
                dy, dx = (t0 - top) * s, (l0 - left) * s
                out[crop.id] = to_uint8(sr[:, dy:dy + crop.size, dx:dx + crop.size])
    finally:
        torch.set_num_threads(threads)
    return out
