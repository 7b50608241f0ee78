"""Demo data, built offline on first use from the colour images scikit-image ships.

`build_demo()` writes four sets under `<raygrid cache>/demo` (the folders of their records,
raygrid.spec.datasets); sweeps always find them there, never inside a user's data root:

  demo/sr/train   demo_sr_train: 10 HR crops of 288x288 px (astronaut, coffee, chelsea, rocket,
                  hubble_deep_field, immunohistochemistry), for SRTrainSet.
  demo/sr/val     demo_sr_val: 4 HR images of 192x192 px (retina, stereo_motorcycle, colorwheel,
                  logo on white) in the SwinIR layout HR/<name>.png + LR_bicubic/X4/<name>x4.png.
  demo/iqa_fr     demo_fr: a synthetic FR-IQA benchmark in KADID-10k's format: images/I01.png ...
                  (8 references, 128x128) and images/I01_TT_LL.png for 5 distortion types x 4
                  levels (160 distorted images), rated in dmos.csv (dist_img,ref_img,dmos,var).
  demo/iqa_nr     demo_nr: the same 168 images as an NR set in KonIQ-10k's format:
                  512x384/<name>.png (the folder name KonIQ uses; the images are 128x128) and
                  koniq10k_distributions_sets.csv with the official-split column `set`.

Distortion types (TT) and levels (LL = 1 mildest .. 4 strongest):
  01 blur      Gaussian blur, sigma 0.6 / 1.2 / 2.0 / 3.2 px
  02 noise     additive white Gaussian noise, sd 0.02 / 0.04 / 0.08 / 0.14 (of full range)
  03 jpeg      JPEG quality 60 / 30 / 15 / 6
  04 contrast  pull towards the mean grey: x' = m + f (x - m), f = 0.75 / 0.55 / 0.38 / 0.22
  05 colour    desaturation (PIL ImageEnhance.Color) 0.65 / 0.40 / 0.20 / 0.0

Pseudo-MOS, on KADID-10k's 1-5 scale, higher = better (the `dmos` column, as in KADID):
  mos(t, l) = 5 - 4 * w_t * (l / 4) ** g_t + e,   e ~ N(0, 0.05) clipped to [-0.1, 0.1]
with type weights w = blur 0.85, noise 0.90, jpeg 0.80, contrast 0.60, colour 0.45 and exponents
g = 1.0, 1.2, 1.3, 1.0, 0.8; e is seeded per (reference, type, level). Without e, consecutive
levels of one type differ by at least 0.37, so even with e the MOS falls strictly with the level
of every type and reference. References are rated 4.8 in the NR set, above every distorted image.
NR MOS on KonIQ's 0-100 scale = (mos - 1) / 4 * 100; the vote fractions c1..c5 are a normal
(mean mos, sd 0.7) binned to the five rating levels. NR split (`set`): references I01-I05 and
their distortions "training", I06 "validation", I07-I08 "test" (by content, as FR splits are).

Concurrency: the whole tree is built in a temporary folder next to the target and renamed into
place, so two processes building at once both end with one complete tree; a version marker
(DEMO_VERSION.json) makes later calls return at once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from scipy.ndimage import gaussian_filter
from scipy.stats import norm

from raygrid.data.images import write_rgb
from raygrid.data.tensors import bicubic_downscale, to_tensor, to_uint8
from raygrid.io import local_root
from raygrid.spec.datasets import BENCHMARKS, SR_SETS

log = logging.getLogger(__name__)

DEMO_VERSION = 1
MARKER = "DEMO_VERSION.json"
SEED = 2509

# (skimage image, top, left, side, pre-scale): crops taken after resizing the image by pre-scale
SR_TRAIN_CROPS = [
    ("astronaut", 0, 100, 288, 1.0),
    ("coffee", 56, 0, 288, 1.0),
    ("coffee", 56, 300, 288, 1.0),
    ("chelsea", 6, 80, 288, 1.0),
    ("rocket", 0, 40, 288, 1.0),
    ("rocket", 100, 340, 288, 1.0),
    ("hubble_deep_field", 0, 0, 288, 0.5),
    ("hubble_deep_field", 148, 212, 288, 0.5),
    ("immunohistochemistry", 0, 0, 288, 1.0),
    ("immunohistochemistry", 224, 224, 288, 1.0),
]
SR_VAL_CROPS = [
    ("retina", 140, 140, 192, 1 / 3),
    ("stereo_motorcycle", 50, 120, 192, 0.5),
    ("colorwheel", 89, 89, 192, 1.0),
    ("logo", 154, 154, 192, 1.0),
]
# FR references: whole scenes (centre square) resized to REF_SIDE
FR_SOURCES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
              "immunohistochemistry", "stereo_motorcycle", "retina"]
REF_SIDE = 128
SCALE = 4


@dataclass(frozen=True)
class Distortion:
    code: int
    name: str
    levels: tuple[float, ...]  # parameter per level, mildest first
    weight: float  # w_t in the pseudo-MOS
    exponent: float  # g_t in the pseudo-MOS


DISTORTIONS = [
    Distortion(1, "blur", (0.6, 1.2, 2.0, 3.2), 0.85, 1.0),
    Distortion(2, "noise", (0.02, 0.04, 0.08, 0.14), 0.90, 1.2),
    Distortion(3, "jpeg", (60, 30, 15, 6), 0.80, 1.3),
    Distortion(4, "contrast", (0.75, 0.55, 0.38, 0.22), 0.60, 1.0),
    Distortion(5, "colour", (0.65, 0.40, 0.20, 0.0), 0.45, 0.8),
]
N_LEVELS = 4
REF_MOS = 4.8
NOISE_SD, NOISE_CLIP = 0.05, 0.1
VOTE_SD = 0.7
NR_SETS = {1: "training", 2: "training", 3: "training", 4: "training", 5: "training",
           6: "validation", 7: "test", 8: "test"}


def pseudo_mos(distortion: Distortion, level: int) -> float:
    """Noise-free pseudo-MOS (1-5, higher = better) of a distortion type at level 1..N_LEVELS."""
    return 5.0 - 4.0 * distortion.weight * (level / N_LEVELS) ** distortion.exponent


def _mos_noise(ref: int, code: int, level: int) -> float:
    rng = np.random.default_rng([SEED, ref, code, level])
    return float(np.clip(rng.normal(0.0, NOISE_SD), -NOISE_CLIP, NOISE_CLIP))


def distort(img: np.ndarray, distortion: Distortion, level: int, ref: int) -> np.ndarray:
    """Apply one distortion at level 1..N_LEVELS to a uint8 HWC image."""
    p = distortion.levels[level - 1]
    x = img.astype(np.float64) / 255.0
    if distortion.name == "blur":
        x = gaussian_filter(x, sigma=(p, p, 0), mode="reflect")
    elif distortion.name == "noise":
        rng = np.random.default_rng([SEED, ref, distortion.code, level, 1])
        x = x + rng.normal(0.0, p, size=x.shape)
    elif distortion.name == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(p))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    elif distortion.name == "contrast":
        m = x.mean()
        x = m + p * (x - m)
    elif distortion.name == "colour":
        return np.asarray(ImageEnhance.Color(Image.fromarray(img)).enhance(p))
    else:
        raise ValueError(f"unknown distortion {distortion.name}")
    return (np.clip(x, 0, 1) * 255.0).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def _skimage_rgb(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.shape[-1] == 4:  # logo: composite onto white
        rgba = Image.fromarray(img, "RGBA")
        img = np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba).convert("RGB"))
    return np.ascontiguousarray(img[..., :3])


def _scaled(img: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def _crop(img: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    if top + side > img.shape[0] or left + side > img.shape[1]:
        raise ValueError(f"crop {top},{left},{side} outside image {img.shape}")
    return img[top : top + side, left : left + side]


def _centre_square(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(img[top : top + s, left : left + s]).resize((side, side), Image.Resampling.LANCZOS))


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _write_sr(root: Path, sources: dict[str, np.ndarray]) -> dict:
    train = root / "sr" / "train"
    for i, (name, top, left, side, factor) in enumerate(SR_TRAIN_CROPS, 1):
        write_rgb(train / f"{i:02d}_{name}.png", _crop(_scaled(sources[name], factor), top, left, side))
    val = root / "sr" / "val"
    for name, top, left, side, factor in SR_VAL_CROPS:
        hr = _crop(_scaled(sources[name], factor), top, left, side)
        write_rgb(val / "HR" / f"{name}.png", hr)
        lr = to_uint8(bicubic_downscale(to_tensor(hr), SCALE))
        write_rgb(val / "LR_bicubic" / f"X{SCALE}" / f"{name}x{SCALE}.png", lr)
    return {"sr_train_images": len(SR_TRAIN_CROPS), "sr_val_images": len(SR_VAL_CROPS)}


def _votes(mos: float) -> list[float]:
    """Fractions of votes on the 1..5 levels: a normal (mos, VOTE_SD) binned at the half-points."""
    edges = norm.cdf([1.5, 2.5, 3.5, 4.5], loc=mos, scale=VOTE_SD)
    return list(np.diff(np.concatenate([[0.0], edges, [1.0]])))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_iqa(root: Path, sources: dict[str, np.ndarray]) -> dict:
    fr, nr = root / "iqa_fr", root / "iqa_nr"
    images = fr / "images"
    fr_rows, nr_rows = [], []
    for r, source in enumerate(FR_SOURCES, 1):
        ref = _centre_square(sources[source], REF_SIDE)
        ref_name = f"I{r:02d}.png"
        write_rgb(images / ref_name, ref)
        nr_rows.append((ref_name, REF_MOS, r))
        for d in DISTORTIONS:
            for level in range(1, N_LEVELS + 1):
                name = f"I{r:02d}_{d.code:02d}_{level:02d}.png"
                write_rgb(images / name, distort(ref, d, level, r))
                mos = pseudo_mos(d, level) + _mos_noise(r, d.code, level)
                severity = (5.0 - mos) / 4.0
                fr_rows.append((name, ref_name, round(mos, 4), round(0.2 + 0.6 * severity * (1 - severity), 4)))
                nr_rows.append((name, mos, r))
    with open(fr / "dmos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        w.writerows(fr_rows)

    folder = nr / "512x384"
    folder.mkdir(parents=True, exist_ok=True)
    sets_rows, score_rows = [], []
    for name, mos, r in nr_rows:
        _link_or_copy(images / name, folder / name)
        votes = _votes(mos)
        levels = np.arange(1, 6)
        vote_mean = float(np.dot(votes, levels))
        sd = float(np.sqrt(np.dot(votes, (levels - vote_mean) ** 2)))
        mos100 = (mos - 1.0) / 4.0 * 100.0
        c = [round(v, 6) for v in votes]
        sets_rows.append([name, *c, 100, round(mos100, 4), round(sd, 6), NR_SETS[r]])
        score_rows.append([name, *c, 100, round(mos, 4), round(sd, 6), round(mos100, 4)])
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total"]
    with open(nr / "koniq10k_distributions_sets.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header + ["MOS", "SD", "set"])
        w.writerows(sets_rows)
    with open(nr / "koniq10k_scores_and_distributions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header + ["MOS", "SD", "MOS_zscore"])
        w.writerows(score_rows)
    return {"fr_references": len(FR_SOURCES), "fr_distorted": len(fr_rows), "nr_images": len(nr_rows)}


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

DEMO_NAMES = {
    "demo_sr_train": SR_SETS["demo_sr_train"].folder,
    "demo_sr_val": SR_SETS["demo_sr_val"].folder,
    "demo_fr": BENCHMARKS["demo_fr"].folder,
    "demo_nr": BENCHMARKS["demo_nr"].folder,
}


def _paths(data_root: Path) -> dict[str, str]:
    return {name: str(data_root / folder) for name, folder in DEMO_NAMES.items()}


def _marker_version(demo_dir: Path) -> int | None:
    try:
        return int(json.loads((demo_dir / MARKER).read_text())["version"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def build_demo(data_root: str | None = None, force: bool = False) -> dict[str, str]:
    """Build the demo sets under `data_root` (None or an S3 prefix: the cache root, see
    `raygrid.io.local_root`) unless a current build is there; returns {set name: folder} for
    demo_sr_train, demo_sr_val, demo_fr and demo_nr. Offline; about 1-2 s and 6 MB. Safe to call
    from many processes at once."""
    root = Path(local_root(data_root))
    demo_dir = root / "demo"
    # Every record folder of the demo sets must live in demo/, which is what gets renamed.
    assert all(f.startswith("demo/") for f in DEMO_NAMES.values())
    version = _marker_version(demo_dir)
    if version == DEMO_VERSION and not force:
        return _paths(root)
    if demo_dir.exists() and version is None and not force:
        raise RuntimeError(
            f"{demo_dir} exists but is not a raygrid demo build (no {MARKER}); "
            "remove it or call build_demo(force=True)"
        )

    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=root))
    try:
        sources = {n: _skimage_rgb(n) for n in {c[0] for c in SR_TRAIN_CROPS + SR_VAL_CROPS} | set(FR_SOURCES)}
        contents = _write_sr(tmp, sources)
        contents.update(_write_iqa(tmp, sources))
        seconds = time.perf_counter() - start
        # NR images are hard links to the FR files: count each inode once.
        size = sum({(st.st_dev, st.st_ino): st.st_size
                    for st in (p.stat() for p in tmp.rglob("*") if p.is_file())}.values())
        marker = {"version": DEMO_VERSION, "built_unix": time.time(), "build_seconds": round(seconds, 3),
                  "bytes": size, "contents": contents}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
        _install(tmp, demo_dir, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("demo data ready in %s", demo_dir)
    return _paths(root)


def _install(tmp: Path, demo_dir: Path, force: bool) -> None:
    """Move a finished build into place, atomically; another process may race us."""
    try:
        os.rename(tmp, demo_dir)  # fails if demo_dir exists and is not empty
        return
    except OSError:
        pass
    if _marker_version(demo_dir) == DEMO_VERSION and not force:
        return  # another process finished first; its build is equivalent to ours
    old = Path(tempfile.mkdtemp(prefix=".demo-old-", dir=demo_dir.parent))
    try:
        os.rename(demo_dir, old / "demo")
    except FileNotFoundError:
        pass  # someone else moved it away meanwhile
    try:
        os.rename(tmp, demo_dir)
    except OSError:
        if _marker_version(demo_dir) != DEMO_VERSION:
            raise
    shutil.rmtree(old, ignore_errors=True)
