"""The sweep's sample crops: chosen once per sweep from the optimize stage's test sets, identical
for every run, logged on the sweep run and handed to every trial (`RunEnv.samples`).

On the sweep run: artifact `samples/crops.json` (`{"crops": [{"id", "set", "image", "top",
"left", "size", "kind"}]}`, the record of raygrid.judge.crops) and the images `hr/<id>` and
`bicubic/<id>` at step 0 (the HR crop; the LR crop upscaled by bicubic interpolation). Each
optimize run logs `sr/<id>` at every evaluation step (raygrid.stages.optimize.evaluate).

Choosing, deterministically from the sets' pixels and names (docs/records.md):

- sets: the optimize stage's test sets (`data.test` of its trials, in order of first appearance);
  when no trial has a test set, its validation sets (`data.val`), so a demo still gets crops;
  per set the first `CANDIDATES_PER_SET` images by name (the cost of choosing stays a few seconds
  on the largest sets);
- a window is `size` HR pixels square (96, less for smaller images, a multiple of 4 x scale),
  on a grid of stride size/4;
- "face": the centre window of the first image on `FACE_IMAGES` present (close-up portraits of
  the standard sets, which are framed on the face: there is no face detector offline);
- "text": on the first image on `TEXT_IMAGES` present (or any image of a set named in
  `TEXT_SETS`, Manga109), the window with the most gradient energy: the glyph edges;
- then "detail" and "texture" in turn, round robin over the sets, each from an image not used
  yet: detail = the window with the most gradient energy (mean |∇Y|); texture = the window with
  the most stationary fine-scale energy, mean |∇²Y| × 1/(1 + CV) where CV is the coefficient of
  variation of that energy over the window's 4 x 4 blocks (a texture fills its window evenly; one
  strong edge does not). An image gives at most one crop; at most `max_crops` crops.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from raygrid.spec import records

DEFAULT_SIZE = 96  # HR pixels
DEFAULT_MAX_CROPS = 6
CANDIDATES_PER_SET = 25
# close-up portraits in the standard SR test sets (their stems)
FACE_IMAGES = {"set5": ("head", "baby", "woman"), "set14": ("face", "lenna", "foreman", "barbara")}
# images that are mostly text (Set14's slide); every page of Manga109 has lettering
TEXT_IMAGES = {"set14": ("ppt3",)}
TEXT_SETS = ("manga109",)
OPTIMIZE_TRAINABLE = "sr_gan"


def sample_sets(sweep) -> tuple[list[str], int]:
    """The optimize stage's test sets (else its validation sets) and its scale; ([], 4) without
    an optimize stage."""
    tests: list[str] = []
    vals: list[str] = []
    scale = 4
    for stage in sweep.stages.values():
        if stage.spec.trainable != OPTIMIZE_TRAINABLE:
            continue
        for trial in stage.trials:
            scale = trial.config.generator.scale
            tests += [s for s in trial.config.data.test if s not in tests]
            vals += [s for s in trial.config.data.val if s not in vals]
    return (tests or vals), scale


# ---------------------------------------------------------------------------------------------
# Image statistics
# ---------------------------------------------------------------------------------------------


def _luma(hr: np.ndarray) -> np.ndarray:
    return hr.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0


def _block_sums(energy: np.ndarray, block: int) -> np.ndarray:
    """Sums of `energy` over the non-overlapping block x block tiles from the top-left corner."""
    h, w = (energy.shape[0] // block) * block, (energy.shape[1] // block) * block
    return energy[:h, :w].reshape(h // block, block, w // block, block).sum(axis=(1, 3))


def window_scores(hr: np.ndarray, size: int) -> dict[str, tuple[float, int, int]]:
    """For one HR image (H x W x 3 uint8) and windows of `size` on a size/4 grid: the best window
    of each statistic as (score, top, left). `size` is a multiple of 4."""
    from scipy import ndimage

    y = _luma(hr)
    gy, gx = np.gradient(y)
    block = size // 4
    out = {}
    for kind, energy in (("detail", np.hypot(gx, gy)), ("texture", np.abs(ndimage.laplace(y)))):
        tiles = _block_sums(energy, block)
        win = np.lib.stride_tricks.sliding_window_view(tiles, (4, 4))  # (rows, cols, 4, 4)
        mean = win.mean(axis=(2, 3)) / block**2
        score = mean
        if kind == "texture":
            cv = win.std(axis=(2, 3)) / np.maximum(win.mean(axis=(2, 3)), 1e-12)
            score = mean / (1.0 + cv)
        i = int(np.argmax(score))  # first maximum in row-major order: deterministic
        r, c = np.unravel_index(i, score.shape)
        out[kind] = (float(score.flat[i]), int(r) * block, int(c) * block)
    return out


def _side(hr: np.ndarray, size: int, scale: int) -> int:
    unit = 4 * scale  # block = side/4 stays a multiple of the scale
    return min(size, (min(hr.shape[:2]) // unit) * unit)


# ---------------------------------------------------------------------------------------------
# Choosing
# ---------------------------------------------------------------------------------------------


def choose(images: Iterable[tuple[str, str, np.ndarray]], scale: int = 4, size: int = DEFAULT_SIZE,
           max_crops: int = DEFAULT_MAX_CROPS) -> list:
    """The crops (raygrid.judge.crops.Crop, ids c00, c01, ...) for `images` = (set, image stem,
    HR H x W x 3 uint8) in set order, by the rule of the module docstring."""
    from raygrid.judge.crops import Crop

    by_set: dict[str, list[tuple[str, np.ndarray, int]]] = {}
    for set_name, stem, hr in images:
        side = _side(hr, size, scale)
        if side >= 4 * scale:
            by_set.setdefault(set_name, []).append((stem, hr, side))
    chosen: list[Crop] = []
    used: set[tuple[str, str]] = set()

    def add(set_name: str, stem: str, top: int, left: int, side: int, kind: str) -> None:
        chosen.append(Crop(f"c{len(chosen):02d}", set_name, stem, top, left, side, kind))
        used.add((set_name, stem))

    def first_named(stems_by_set: dict[str, tuple[str, ...]], whole_sets: tuple[str, ...] = ()):
        for set_name, items in by_set.items():
            found = {stem: (hr, side) for stem, hr, side in items}
            order = [*stems_by_set.get(set_name, ()), *(sorted(found) if set_name in whole_sets else ())]
            for stem in order:
                if stem in found:
                    return (set_name, stem, *found[stem])
        return None

    face = first_named(FACE_IMAGES)
    if face is not None and len(chosen) < max_crops:
        set_name, stem, hr, side = face
        top = ((hr.shape[0] - side) // 2) // scale * scale
        left = ((hr.shape[1] - side) // 2) // scale * scale
        add(set_name, stem, top, left, side, "face")
    text = first_named(TEXT_IMAGES, TEXT_SETS)
    if text is not None and len(chosen) < max_crops and (text[0], text[1]) not in used:
        set_name, stem, hr, side = text
        _, top, left = window_scores(hr, side)["detail"]
        add(set_name, stem, top, left, side, "text")

    scores = {(s, stem): window_scores(hr, side) for s, items in by_set.items() for stem, hr, side in items}
    sides = {(s, stem): side for s, items in by_set.items() for stem, _, side in items}
    sets = list(by_set)
    turn = 0
    while len(chosen) < max_crops and sets:
        kind = ("detail", "texture")[turn % 2]
        for k in range(len(sets)):  # this turn's set first, then the next one with an unused image
            set_name = sets[(turn // 2 + k) % len(sets)]
            free = [(stem, scores[(set_name, stem)][kind]) for stem, _, _ in by_set[set_name]
                    if (set_name, stem) not in used]
            if free:
                stem, (_, top, left) = max(free, key=lambda f: f[1][0])  # first of equal maxima
                add(set_name, stem, top, left, sides[(set_name, stem)], kind)
                break
        else:
            break  # every image has a crop
        turn += 1
    return chosen


def choose_for_sweep(sweep, data_root: str, size: int = DEFAULT_SIZE, max_crops: int = DEFAULT_MAX_CROPS) -> list:
    """The crops of a sweep (empty when it has no optimize stage)."""
    from raygrid.judge.crops import TestImages

    sets, scale = sample_sets(sweep)
    if not sets:
        return []
    images = TestImages(data_root, scale)

    def candidates():
        for set_name in sets:
            for stem in sorted(images.names(set_name))[:CANDIDATES_PER_SET]:
                _, hr = images.pair(set_name, stem)
                yield set_name, stem, (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    return choose(candidates(), scale, size, max_crops)


# ---------------------------------------------------------------------------------------------
# The sweep run
# ---------------------------------------------------------------------------------------------


def logged_crops(client, sweep_run_id: str, scale: int) -> list | None:
    """The crops a sweep run already has (a resumed sweep keeps its crops), or None."""
    from raygrid.judge.crops import parse_crops

    parent = str(Path(records.ARTIFACT_CROPS).parent)
    if not any(f.path == records.ARTIFACT_CROPS for f in client.list_artifacts(sweep_run_id, parent)):
        return None
    with tempfile.TemporaryDirectory(prefix="raygrid-crops-") as tmp:
        text = Path(client.download_artifacts(sweep_run_id, records.ARTIFACT_CROPS, tmp)).read_text()
    return parse_crops(text, f"{records.ARTIFACT_CROPS} of sweep run {sweep_run_id}", scale)


def log_crops(client, sweep_run_id: str, crops: list, data_root: str, scale: int) -> None:
    """`samples/crops.json` and the HR and bicubic crops (step 0) on the sweep run."""
    from raygrid.judge.crops import TestImages, dump_crops, reference

    images = TestImages(data_root, scale)
    for crop in crops:
        hr, bicubic = reference(images, crop)
        client.log_image(sweep_run_id, hr, key=records.IMAGE_HR.format(id=crop.id), step=0)
        client.log_image(sweep_run_id, bicubic, key=records.IMAGE_BICUBIC.format(id=crop.id), step=0)
    # the list last: a sweep run that has crops.json has its reference images too
    client.log_text(sweep_run_id, dump_crops(crops), records.ARTIFACT_CROPS)


def sweep_samples(sweep, client, sweep_run_id: str, data_root: str) -> list[dict[str, Any]]:
    """The crops every trial of this sweep renders (`RunEnv.samples`): those its sweep run already
    has, or chosen now and logged on it."""
    sets, scale = sample_sets(sweep)
    if not sets:
        return []
    crops = logged_crops(client, sweep_run_id, scale)
    if crops is None:
        crops = choose_for_sweep(sweep, data_root)
        if crops:
            log_crops(client, sweep_run_id, crops, data_root, scale)
    return [c.to_dict() for c in crops]
