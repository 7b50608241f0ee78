"""The crop viewer: the same sample crop at the same step for every run of a grid slice.

    crop_viewer(tracking_uri, experiment, sweep_run_id=None, rows=..., cols=...) -> HTML fragment

What it reads (names in `raygrid.spec.mlflow` and the sample-crops contract, docs/views.md):
- the sweep run (tag `raygrid.kind` = "sweep"): artifact `samples/crops.json` and the images
  `hr/<crop id>` and `bicubic/<crop id>` logged at step 0 with `MlflowClient.log_image`;
- each optimize trial run of that sweep run: images `sr/<crop id>` at every evaluation step, its
  grid point (tag `raygrid.point`), its outcome tags and every `health/*` metric history.

`log_image(key=..., step=...)` stores `images/<key, "/" as "~">+step+<step>+timestamp+<ms>+<uuid>.png`
(older MLflow used "%" for "+"); a step logged twice (a resumed trial) keeps its latest image.

The fragment is self-contained (inline CSS, JS and data; images as data URIs) so the report can
embed it in a page that needs no network. Size: SR and bicubic crops are re-encoded as lossy WebP
(`quality`, default 90: about 2.5 kB for a 96 px crop against 18 kB for its PNG), the HR crops as
lossless WebP because the browser computes the |SR − HR| error map against them; the page states
how much the encoding alone moves a pixel, and the PSNR shown per crop is computed here from the
PNGs as logged. `image_format="png"` embeds the logged PNGs unchanged.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import tempfile
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from raygrid.spec import mlflow as names

ARTIFACT_CROPS = "samples/crops.json"
KEY_SR, KEY_HR, KEY_BICUBIC = "sr", "hr", "bicubic"
HEALTH_PREFIX = "health/"
TAG_OUTCOME_STEP = "raygrid.outcome_step"
TAG_OUTCOME_REASON = "raygrid.outcome_reason"
DEFAULT_ROWS = "fidelity.backbone"
DEFAULT_COLS = ("adversarial.discriminator", "loss.adversarial_weight")
FORMATS = ("webp", "png")

# images/<key>+step+<n>+timestamp+<ms>+<uuid>.png; "%" is the delimiter of older MLflow versions
_IMAGE_FILE = re.compile(r"^(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%](?P<ts>\d+)[+%][0-9a-fA-F-]+\.png$")


class ViewerError(ValueError):
    """A sweep the viewer cannot show, in one line naming the run, key or value."""


@dataclass(frozen=True)
class Image:
    key: str  # the log_image key, e.g. "sr/c00"
    step: int
    timestamp: int
    path: str  # the artifact path in the run


def logged_images(client, run_id: str) -> dict[str, dict[int, Image]]:
    """key -> step -> the latest image logged under that key at that step."""
    out: dict[str, dict[int, Image]] = {}
    for info in client.list_artifacts(run_id, "images"):
        m = _IMAGE_FILE.match(info.path.rsplit("/", 1)[-1])
        if info.is_dir or not m:
            continue
        img = Image(m["key"].replace("~", "/"), int(m["step"]), int(m["ts"]), info.path)
        prev = out.setdefault(img.key, {}).get(img.step)
        if prev is None or img.timestamp > prev.timestamp:
            out[img.key][img.step] = img
    return out


def parse_crops(text: str, where: str) -> list[dict[str, Any]]:
    """The sweep's crops.json as dicts, read by the one strict reader (raygrid.judge.crops)."""
    from raygrid.judge.crops import parse_crops as read_crops

    try:
        return [c.to_dict() for c in read_crops(text, where)]
    except ValueError as e:
        raise ViewerError(str(e)) from None


def level_label(value: Any) -> str:
    """An axis value as the page shows and groups it (0.05 -> "0.05", None -> "null")."""
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------------
# Reading MLflow
# ---------------------------------------------------------------------------------------------


def find_sweep_run(client, experiment_id: str, sweep_run_id: str | None):
    """The sweep run: the one named, else the latest sweep run of the experiment with crops.json."""
    if sweep_run_id:
        run = client.get_run(sweep_run_id)
        if run.info.experiment_id != experiment_id:
            raise ViewerError(f"sweep run {sweep_run_id} is not in experiment {experiment_id}")
        return run
    sweeps = client.search_runs([experiment_id], f"tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'",
                                order_by=["attributes.start_time DESC"], max_results=200)
    for run in sweeps:
        if any(f.path == ARTIFACT_CROPS for f in client.list_artifacts(run.info.run_id, "samples")):
            return run
    raise ViewerError(f"no sweep run of experiment {experiment_id} has {ARTIFACT_CROPS} "
                      "(the sample crops are logged by sweeps that ran an optimize stage)")


class _Artifacts:
    """One artifact repository per run (a client download resolves the run again for every file,
    35x slower on a local store), without MLflow's progress bar per file on stderr."""

    def __init__(self, tracking_uri: str, tmp: Path):
        self.uri, self.tmp, self.repos = tracking_uri, tmp, {}

    def fetch(self, run, path: str) -> Path:
        from mlflow.store.artifact.artifact_repository_registry import (
            get_artifact_repository,
        )

        rid = run.info.run_id
        if rid not in self.repos:
            self.repos[rid] = get_artifact_repository(run.info.artifact_uri, tracking_uri=self.uri)
        dst = self.tmp / rid
        dst.mkdir(exist_ok=True)
        return Path(self.repos[rid].download_artifacts(path, str(dst)))


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _encode(pixels: np.ndarray, fmt: str, quality: int | None) -> str:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    im = PILImage.fromarray(pixels)
    if fmt == "png":
        im.save(buf, "PNG", optimize=True)
    elif quality is None:  # lossless; effort 80/4: within 1% of the smallest file, 60x faster than 100/6
        im.save(buf, "WEBP", lossless=True, quality=80, method=4)
    else:
        im.save(buf, "WEBP", quality=quality, method=4)
    mime = "image/png" if fmt == "png" else "image/webp"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _decoded(uri: str) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape:
        return None
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(10 * math.log10(255.0 ** 2 / mse), 2) if mse > 0 else None


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None  # JSON has no NaN/inf; the page draws a gap


def _health(client, run) -> dict[str, list[list[float | None]]]:
    out = {}
    for key in sorted(k for k in run.data.metrics if k.startswith(HEALTH_PREFIX)):
        by_step = {}
        for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp)):
            by_step[int(m.step)] = _finite(m.value)
        out[key] = [[s, v] for s, v in sorted(by_step.items())]
    return out


def _pick_steps(steps: list[int], max_steps: int | None) -> list[int]:
    """At most max_steps of them, evenly spread, always with the last (and the first if 2+)."""
    if not max_steps or len(steps) <= max_steps:
        return steps
    if max_steps == 1:
        return steps[-1:]
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, max_steps)).astype(int))
    return [steps[i] for i in idx]


def _levels(values: list[Any]) -> list[str]:
    """Numeric axes ascending; others in the order the trials first use them."""
    uniq = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in uniq):
        uniq = sorted(uniq)
    return [level_label(v) for v in uniq]


def viewer_data(tracking_uri: str, experiment: str, sweep_run_id: str | None = None, *,
                stage: str = "optimize", crops: list[str] | None = None, max_runs: int | None = 60,
                max_steps: int | None = 6, image_format: str = "webp", quality: int = 90) -> dict[str, Any]:
    """Everything the page shows, as one JSON-able dict (images as data URIs)."""
    if image_format not in FORMATS:
        raise ViewerError(f"image_format = {image_format!r}, expected one of {', '.join(FORMATS)}")
    if not 1 <= quality <= 100:
        raise ViewerError(f"quality = {quality!r}, expected 1..100 (WebP quality)")
    client = names.client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ViewerError(f"no MLflow experiment named {experiment!r} in {tracking_uri}")
    sweep = find_sweep_run(client, exp.experiment_id, sweep_run_id)
    sid = sweep.info.run_id
    notes: list[str] = []
    lossy = None if image_format == "png" else quality
    from raygrid.judge.source import quiet_downloads

    with tempfile.TemporaryDirectory(prefix="raygrid-viewer-") as tmpdir, quiet_downloads():
        store = _Artifacts(tracking_uri, Path(tmpdir))
        where = f"run {sid} artifact {ARTIFACT_CROPS}"
        try:
            text = store.fetch(sweep, ARTIFACT_CROPS).read_text()
        except Exception as e:  # noqa: BLE001 — absent artifact: say which run lacks it
            raise ViewerError(f"{where}: cannot be read ({type(e).__name__}: {e})") from None
        crop_list = parse_crops(text, where)
        if crops is not None:
            unknown = sorted(set(crops) - {c["id"] for c in crop_list})
            if unknown:
                raise ViewerError(f"crops={crops}: {unknown} not in {where} (ids: {[c['id'] for c in crop_list]})")
            crop_list = [c for c in crop_list if c["id"] in crops]
        ref = logged_images(client, sid)
        hr_pixels: dict[str, np.ndarray] = {}
        floor = 0.0  # the largest mean |decoded - logged| the encoding causes, in 8-bit levels
        out_crops = []
        for c in crop_list:
            entry = {k: c[k] for k in ("id", "set", "image", "kind", "size")}
            for key in (KEY_HR, KEY_BICUBIC):
                img = ref.get(f"{key}/{c['id']}", {}).get(0)
                if img is None:
                    raise ViewerError(f"sweep run {sid} has no image {key}/{c['id']} at step 0 "
                                      f"(crops.json lists crop {c['id']!r})")
                px = _pixels(store.fetch(sweep, img.path))
                uri = _encode(px, image_format, None if key == KEY_HR else lossy)
                if key == KEY_HR:
                    hr_pixels[c["id"]] = px
                else:
                    entry["bicubic_psnr"] = _psnr(px, hr_pixels[c["id"]])
                    floor = max(floor, float(np.abs(_decoded(uri).astype(int) - px).mean()))
                entry[key] = uri
            out_crops.append(entry)

        runs = client.search_runs([exp.experiment_id], f"tags.`{names.TAG_SWEEP_RUN}` = '{sid}' and "
                                  f"tags.`{names.TAG_STAGE}` = '{stage}'", max_results=10000)
        if not runs:
            raise ViewerError(f"sweep run {sid} has no {stage} trial runs (tag {names.TAG_SWEEP_RUN})")
        runs = sorted(runs, key=lambda r: (r.data.tags.get(names.TAG_TRIAL_ID, ""), r.info.start_time))
        if max_runs and len(runs) > max_runs:
            notes.append(f"{len(runs) - max_runs} of {len(runs)} runs left out (max_runs={max_runs}).")
            runs = runs[:max_runs]
        images = {r.info.run_id: logged_images(client, r.info.run_id) for r in runs}
        all_steps = sorted({s for imgs in images.values() for c in crop_list
                            for s in imgs.get(f"{KEY_SR}/{c['id']}", {})})
        steps = _pick_steps(all_steps, max_steps)
        if len(steps) < len(all_steps):
            notes.append(f"{len(steps)} of {len(all_steps)} logged steps shown (max_steps={max_steps}).")
        points, out_runs = [], []
        for r in runs:
            tags = r.data.tags
            try:
                point = json.loads(tags.get(names.TAG_POINT) or "{}")
            except json.JSONDecodeError:
                raise ViewerError(f"run {r.info.run_id}: tag {names.TAG_POINT} is not JSON") from None
            points.append(point)
            sr, psnr = {}, {}
            for c in crop_list:
                for step, img in sorted(images[r.info.run_id].get(f"{KEY_SR}/{c['id']}", {}).items()):
                    if step not in steps:
                        continue
                    px = _pixels(store.fetch(r, img.path))
                    uri = _encode(px, image_format, lossy)
                    floor = max(floor, float(np.abs(_decoded(uri).astype(int) - px).mean()))
                    sr.setdefault(c["id"], {})[str(step)] = uri
                    psnr.setdefault(c["id"], {})[str(step)] = _psnr(px, hr_pixels[c["id"]])
            outcome = tags.get(names.TAG_OUTCOME)
            out_runs.append({
                "id": r.info.run_id, "name": r.info.run_name, "trial": tags.get(names.TAG_TRIAL_ID),
                "point": {k: level_label(v) for k, v in point.items()},
                "outcome": outcome, "outcome_step": tags.get(TAG_OUTCOME_STEP),
                "outcome_reason": tags.get(TAG_OUTCOME_REASON), "status": r.info.status,
                "sr": sr, "psnr": psnr, "health": _health(client, r),
            })
            if not sr:
                notes.append(f"run {r.info.run_name or r.info.run_id} has no sr/<crop> images.")
            if not point:
                notes.append(f"run {r.info.run_name or r.info.run_id} has no {names.TAG_POINT} tag: in no cell.")
        if not steps:
            raise ViewerError(f"none of the {len(runs)} {stage} runs of sweep run {sid} has an image "
                              f"sr/<crop id> for the crops of {ARTIFACT_CROPS}")
    axes = list(dict.fromkeys(k for p in points for k in p))
    return {
        "experiment": experiment, "sweep_run_id": sid, "stage": stage,
        "axes": {a: _levels([p[a] for p in points if a in p]) for a in axes},
        "steps": steps, "crops": out_crops, "runs": out_runs, "notes": notes,
        "encoding": {"format": image_format, "quality": lossy, "floor": round(floor, 2)},
    }


# ---------------------------------------------------------------------------------------------
# The HTML fragment
# ---------------------------------------------------------------------------------------------


def check_slice(data: dict[str, Any], rows: str, cols: tuple[str, ...] | list[str]) -> tuple[str, list[str]]:
    """rows/cols as the page uses them; axes the runs do not have are one clear error."""
    axes = data["axes"]
    cols = [cols] if isinstance(cols, str) else list(cols)
    for what, axis in [("rows", rows)] + [("cols", c) for c in cols]:
        if axis not in axes:
            raise ViewerError(f"crop_viewer: {what}={axis!r} is not an axis of the {data['stage']} runs of "
                              f"sweep run {data['sweep_run_id']}; axes: {', '.join(axes) or '(none)'}")
    if rows in cols or len(set(cols)) != len(cols) or not 1 <= len(cols) <= 2:
        raise ViewerError(f"crop_viewer: rows={rows!r}, cols={cols}: expected one or two column axes, "
                          "none of them the row axis")
    return rows, cols


def _asset(name: str) -> str:
    return resources.files("raygrid").joinpath("templates", name).read_text()


def render_viewer(data: dict[str, Any], rows: str = DEFAULT_ROWS,
                  cols: tuple[str, ...] | list[str] = DEFAULT_COLS) -> str:
    """The HTML fragment (a <div> with its data, inline CSS and JS) for `viewer_data`'s dict."""
    rows, cols = check_slice(data, rows, cols)
    payload = json.dumps({**data, "rows": rows, "cols": cols}, allow_nan=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c")  # nothing in the data can close the <script>
    uid = "rgv-" + uuid.uuid4().hex[:8]
    title = (f"{len(data['runs'])} {html.escape(data['stage'])} runs of sweep run "
             f"<code>{html.escape(data['sweep_run_id'])}</code>")
    return (f'<div class="rgv" id="{uid}">\n<p class="rgv-title">{title}</p>\n'
            f'<script type="application/json" class="rgv-data">{payload}</script>\n'
            f'<noscript>The crop viewer needs JavaScript.</noscript>\n</div>\n'
            f"<style>\n{_asset('viewer.css')}</style>\n<script>\n{_asset('viewer.js')}</script>\n")


def crop_viewer(tracking_uri: str, experiment: str, sweep_run_id: str | None = None,
                rows: str = DEFAULT_ROWS, cols: tuple[str, ...] | list[str] = DEFAULT_COLS, *,
                max_runs: int | None = 60, max_steps: int | None = 6, crops: list[str] | None = None,
                image_format: str = "webp", quality: int = 90) -> str:
    """The crop viewer of a sweep's optimize runs as a self-contained HTML fragment.

    rows / cols: the grid slice the page opens with (one row axis, one or two column axes; the
    page switches to any other axes of the runs). max_runs, max_steps, crops bound the page size
    (each SR crop at each step is one embedded image)."""
    data = viewer_data(tracking_uri, experiment, sweep_run_id, crops=crops, max_runs=max_runs,
                       max_steps=max_steps, image_format=image_format, quality=quality)
    return render_viewer(data, rows, cols)


def viewer_page(fragment: str, title: str = "raygrid crop viewer") -> str:
    """A whole HTML document around a fragment (for viewing it alone, and for the browser test)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title></head>\n<body>\n{fragment}</body></html>\n")
