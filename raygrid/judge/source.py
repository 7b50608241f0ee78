"""Where the judged images come from: an experiment's optimize runs and their SR crops.

`load_crop_set(tracking_uri, experiment, cache_dir)` is the one entry point; it returns a
`CropSet` of local PNG files (cached under `cache_dir`, so later sittings reuse them):

- crops: the sweep run's `samples/crops.json` (the run tagged raygrid.kind=sweep), with its
  `hr/<id>` and `bicubic/<id>` images; without one, crops chosen here (`crops.choose_crops`)
  from the runs' validation sets, with the HR and bicubic crops made from the data.
- SR crops per optimize run: its logged `sr/<id>` images at its last logged step (MLflow
  stores `client.log_image(key="sr/<id>", step=s)` as `images/sr~<id>+step+<s>+...png`);
  a run without them (or whose sweep run chose other crops) is rendered from its
  `checkpoints/final/model.pt` (EMA generator, preset and scale from the run's params) at the
  step of that checkpoint's `meta.json`.
- runs: finished or early-stopped optimize trials (tag raygrid.outcome), one per trial key (the
  latest), each with its item (grid point without the seed).

Bad input is a `JudgeInputError` with one line: no such experiment, no optimize runs, nothing
to show (no images and no checkpoints), one setting only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raygrid.spec import mlflow as names
from raygrid.judge import crops as C
from raygrid.judge.schema import item_key

STAGE_OPTIMIZE = "optimize"
CROPS_ARTIFACT = "samples/crops.json"
CHECKPOINT = "checkpoints/final/model.pt"
CHECKPOINT_META = "checkpoints/final/meta.json"
_PROGRESS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_IMAGE = re.compile(r"^(?P<key>[^+]+)\+step\+(?P<step>-?\d+)\+timestamp\+(?P<ts>\d+)\+(?P<uuid>[0-9a-fA-F-]+)\.png$")


class JudgeInputError(Exception):
    """Bad input, said in one line (the command prints it and exits 2)."""


@dataclass
class RunInfo:
    run_id: str
    item: str
    seed: int | None
    name: str
    sweep_run_id: str | None
    params: dict[str, str]


@dataclass
class CropSet:
    experiment: str
    tracking_uri: str
    root: Path
    crops: list[C.Crop]
    crops_origin: str  # "sweep run <id>" or "chosen here"
    runs: dict[str, RunInfo]
    sr: dict[str, dict[str, tuple[Path, int]]]  # run_id -> crop_id -> (file, step)
    sources: dict[str, str]  # run_id -> logged | rendered
    sweep_run_id: str | None
    notes: list[str] = field(default_factory=list)

    def items(self) -> dict[str, list[str]]:
        """item -> its run ids that have at least one SR crop."""
        out: dict[str, list[str]] = {}
        for run_id, info in sorted(self.runs.items()):
            if self.sr.get(run_id):
                out.setdefault(info.item, []).append(run_id)
        return out

    def run_crops(self) -> dict[str, list[str]]:
        return {r: sorted(v) for r, v in self.sr.items()}

    def hr_path(self, crop_id: str) -> Path:
        return self.root / "hr" / f"{crop_id}.png"

    def bicubic_path(self, crop_id: str) -> Path:
        return self.root / "bicubic" / f"{crop_id}.png"


# ---------------------------------------------------------------------------------------------
# MLflow lookups
# ---------------------------------------------------------------------------------------------


def sweep_runs(client, experiment_id: str) -> list:
    """Sweep runs of the experiment, newest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{names.TAG_KIND}` = '{names.KIND_SWEEP}'",
                              order_by=["attributes.start_time DESC"], max_results=1000)


def experiment_id(client, experiment: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise JudgeInputError(f"no MLflow experiment named {experiment!r} in {tracking_uri}")
    return exp.experiment_id


def optimize_runs(client, exp_id: str) -> list:
    """Finished or early-stopped optimize trial runs, the latest run per trial key."""
    runs = client.search_runs([exp_id], filter_string=f"tags.`{names.TAG_STAGE}` = '{STAGE_OPTIMIZE}'",
                              order_by=["attributes.start_time DESC"], max_results=50000)
    out, seen = [], set()
    for r in runs:
        tags = r.data.tags
        outcome = tags.get(names.TAG_OUTCOME)
        if outcome not in ("finished", "stopped") and not (outcome is None and r.info.status == "FINISHED"):
            continue
        key = tags.get(names.TAG_TRIAL_KEY) or r.info.run_id
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def run_item(run) -> tuple[str, int | None]:
    """(item key, seed) from the run's grid point tag, else from its params."""
    params, tags = run.data.params, run.data.tags
    seed = params.get("seed")
    seed = int(seed) if seed not in (None, "") and str(seed).lstrip("-").isdigit() else None
    point = None
    if tags.get("raygrid.point"):
        try:
            point = json.loads(tags["raygrid.point"])
        except json.JSONDecodeError:
            point = None
    if not isinstance(point, dict):
        point = {}
        for key in ("fidelity.backbone", "adversarial.discriminator", "loss.adversarial_weight"):
            if key in params:
                value = params[key]
                try:
                    value = json.loads(value)
                except (json.JSONDecodeError, TypeError):
                    pass
                point[key] = value
    if isinstance(point.get("seed"), int):
        seed = point["seed"]
    return item_key(point), seed


def logged_images(client, run_id: str, prefix: str) -> dict[str, tuple[str, int]]:
    """{name: (artifact path, step)} of images logged with key f"{prefix}/{name}", last step only."""
    found: dict[str, tuple[str, int]] = {}
    for f in client.list_artifacts(run_id, "images"):
        m = _IMAGE.match(Path(f.path).name)
        if not m:
            continue
        key = m["key"].replace("~", "/")
        if not key.startswith(prefix + "/"):
            continue
        name, step = key[len(prefix) + 1:], int(m["step"])
        if name not in found or step > found[name][1]:
            found[name] = (f.path, step)
    return found


def _download(client, run_id: str, path: str, dest: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="raygrid-judge-") as tmp:
        local = Path(client.download_artifacts(run_id, path, tmp))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
    return dest


def _text_artifact(client, run_id: str, path: str) -> str | None:
    parent = str(Path(path).parent)
    if not any(f.path == path for f in client.list_artifacts(run_id, parent)):
        return None
    with tempfile.TemporaryDirectory(prefix="raygrid-judge-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def _has_artifact(client, run_id: str, path: str) -> bool:
    return any(f.path == path for f in client.list_artifacts(run_id, str(Path(path).parent)))


def _write_png(path: Path, array: np.ndarray) -> None:
    from raygrid.data.images import write_rgb

    tmp = path.with_suffix(".tmp.png")
    write_rgb(tmp, array)
    os.replace(tmp, path)  # a half-written file never looks cached


def _scale(params: dict[str, str]) -> int:
    try:
        return int(float(params.get("generator.scale", 4)))
    except ValueError:
        return 4


def _val_sets(params: dict[str, str]) -> list[str]:
    try:
        sets = json.loads(params.get("data.val", "[]"))
    except json.JSONDecodeError:
        sets = [params["data.val"]]
    return [s for s in sets if isinstance(s, str)] if isinstance(sets, list) else []


# ---------------------------------------------------------------------------------------------
# The crop set
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_downloads():
    """MLflow draws a progress bar per artifact download; a crop set makes dozens."""
    old = os.environ.get(_PROGRESS)
    os.environ[_PROGRESS] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_PROGRESS, None)
        else:
            os.environ[_PROGRESS] = old


def load_crop_set(tracking_uri: str, experiment: str, cache_dir: str | Path, data_root: str | None = None,
                  log: Callable[[str], None] = print, max_crops: int = C.DEFAULT_MAX_CROPS,
                  crop_size: int = C.DEFAULT_SIZE) -> CropSet:
    """The crops, the runs and their local SR crop files (see the module docstring)."""
    with quiet_downloads():
        return _load_crop_set(tracking_uri, experiment, Path(cache_dir), data_root, log, max_crops, crop_size)


def _load_crop_set(tracking_uri, experiment, cache_dir, data_root, log, max_crops, crop_size) -> CropSet:
    client = names.client(tracking_uri)
    exp_id = experiment_id(client, experiment, tracking_uri)
    runs = optimize_runs(client, exp_id)
    if not runs:
        raise JudgeInputError(f"experiment {experiment!r} in {tracking_uri} has no finished optimize runs "
                              f"(runs tagged {names.TAG_STAGE}={STAGE_OPTIMIZE}): run the optimize stage first")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    infos = {}
    for r in runs:
        item, seed = run_item(r)
        infos[r.info.run_id] = RunInfo(r.info.run_id, item, seed, r.info.run_name or r.info.run_id,
                                       r.data.tags.get(names.TAG_SWEEP_RUN), dict(r.data.params))
    if len({i.item for i in infos.values()}) < 2:
        raise JudgeInputError(f"experiment {experiment!r}: all {len(infos)} optimize run(s) share one setting "
                              f"({next(iter(infos.values())).item}); a comparison needs two settings")
    sweeps = sweep_runs(client, exp_id)
    first = next(iter(infos.values()))
    scale = _scale(first.params)
    from raygrid import io

    root_data = io.data_root(data_root)
    images = C.TestImages(root_data, scale)
    notes: list[str] = []

    # -- the crops ------------------------------------------------------------------------------
    crops_doc, crops_sweep = None, None
    used_sweeps = [s for s in sweeps if s.info.run_id in {i.sweep_run_id for i in infos.values()}] or sweeps
    for s in used_sweeps:
        text = _text_artifact(client, s.info.run_id, CROPS_ARTIFACT)
        if text is not None:
            crops_doc, crops_sweep = text, s
            break
    if crops_doc is not None:
        crop_list = _parse(crops_doc, f"{CROPS_ARTIFACT} of sweep run {crops_sweep.info.run_id}", scale)
        origin = f"sweep run {crops_sweep.info.run_id}"
    else:
        cached = root / "crops.json"
        if cached.is_file():
            crop_list = _parse(cached.read_text(), str(cached), scale)
        else:
            crop_list = _choose(images, first.params, scale, crop_size, max_crops, experiment)
        origin = "chosen here"
    (root / "crops.json").write_text(C.dump_crops(crop_list))
    digest = hashlib.sha256(C.dump_crops(crop_list).encode()).hexdigest()[:16]

    # -- reference crops --------------------------------------------------------------------------
    logged_ref = {"hr": {}, "bicubic": {}}
    if crops_sweep is not None:
        for kind in logged_ref:
            logged_ref[kind] = logged_images(client, crops_sweep.info.run_id, kind)
    for crop in crop_list:
        for kind in ("hr", "bicubic"):
            dest = root / kind / f"{crop.id}.png"
            marker = root / kind / f"{crop.id}.{digest}"
            if dest.is_file() and marker.is_file():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if crop.id in logged_ref[kind]:
                _download(client, crops_sweep.info.run_id, logged_ref[kind][crop.id][0], dest)
            else:
                hr, bic = _reference_or_fail(images, crop, root_data)
                _write_png(dest, hr if kind == "hr" else bic)
            marker.touch()

    # -- SR crops per run ------------------------------------------------------------------------
    sweep_crops_text = {}
    sr: dict[str, dict[str, tuple[Path, int]]] = {}
    sources: dict[str, str] = {}
    missing_reasons: list[str] = []
    render_errors: list[str] = []
    ids = {c.id for c in crop_list}
    for run_id, info in sorted(infos.items()):
        folder = root / "sr" / run_id
        meta_path = folder / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        # a run's logged images are usable only if its own sweep chose the same crops
        if info.sweep_run_id not in sweep_crops_text:
            sweep_crops_text[info.sweep_run_id] = (_text_artifact(client, info.sweep_run_id, CROPS_ARTIFACT)
                                                   if info.sweep_run_id else None)
        own = sweep_crops_text[info.sweep_run_id]
        same_crops = own is not None and crops_doc is not None and own == crops_doc
        logged = {k: v for k, v in logged_images(client, run_id, "sr").items() if k in ids} if same_crops else {}
        if logged:
            step = max(s for _, s in logged.values())
            final = {k: v for k, v in logged.items() if v[1] == step}  # the run's final evaluation step
            if not (meta and meta.get("source") == "logged" and meta.get("step") == step and meta.get("crops") == digest
                    and all((folder / f"{k}.png").is_file() for k in final)):
                for k, (path, _) in final.items():
                    _download(client, run_id, path, folder / f"{k}.png")
                meta = {"source": "logged", "step": step, "crops": digest, "ids": sorted(final)}
                meta_path.write_text(json.dumps(meta))
        elif meta and meta.get("source") == "rendered" and meta.get("crops") == digest and all(
                (folder / f"{k}.png").is_file() for k in meta["ids"]):
            pass  # rendered in an earlier sitting
        elif _has_artifact(client, run_id, CHECKPOINT):
            try:
                meta = _render_run(client, info, crop_list, images, folder, digest, root_data, log)
            except JudgeInputError as e:  # this run cannot be shown; the others still can
                render_errors.append(str(e))
                continue
        else:
            missing_reasons.append(info.name)
            continue
        sr[run_id] = {k: (folder / f"{k}.png", int(meta["step"])) for k in meta["ids"]}
        sources[run_id] = meta["source"]
    if not sr and render_errors:
        raise JudgeInputError(render_errors[0])
    notes += [f"not shown: {e}" for e in render_errors]
    if not sr:
        raise JudgeInputError(f"experiment {experiment!r}: none of its {len(infos)} optimize run(s) has SR images "
                              f"(sr/<crop id> in MLflow) or a {CHECKPOINT} artifact to render them from")
    if missing_reasons:
        notes.append(f"{len(missing_reasons)} run(s) have neither SR images nor a final checkpoint and are not shown: "
                     + ", ".join(missing_reasons))
    result = CropSet(experiment, tracking_uri, root, crop_list, origin, infos, sr, sources,
                     crops_sweep.info.run_id if crops_sweep is not None else (sweeps[0].info.run_id if sweeps else None),
                     notes)
    if len(result.items()) < 2:
        raise JudgeInputError(f"experiment {experiment!r}: SR crops exist for only one setting; a comparison needs two")
    return result


def _parse(text: str, where: str, scale: int) -> list[C.Crop]:
    try:
        return C.parse_crops(text, where, scale)
    except ValueError as e:
        raise JudgeInputError(str(e)) from None


def _choose(images: C.TestImages, params, scale, size, max_crops, experiment) -> list[C.Crop]:
    sets = _val_sets(params)
    if not sets:
        raise JudgeInputError(f"experiment {experiment!r}: the optimize runs name no validation set (param data.val) "
                              "to choose crops from")
    found = []
    for name in sets:
        try:
            # the first max_crops images are all the detail pass can use (choose_crops' round robin)
            for stem in images.names(name)[:max(0, max_crops - len(found))]:
                _, hr = images.pair(name, stem)
                found.append((name, stem, (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
        except (OSError, ValueError) as e:
            raise JudgeInputError(f"cannot choose crops: validation set {name!r} is not readable under "
                                  f"{images.data_root} ({e}); pass --data-root") from None
    chosen = C.choose_crops(found, scale, size, max_crops)
    if not chosen:
        raise JudgeInputError(f"cannot choose crops: the images of {', '.join(sets)} are smaller than {4 * scale} px")
    return chosen


def _reference_or_fail(images: C.TestImages, crop: C.Crop, data_root: str):
    try:
        return C.reference(images, crop)
    except (OSError, ValueError, KeyError) as e:
        raise JudgeInputError(f"cannot make the reference crop {crop.id}: {crop.set}/{crop.image} is not readable "
                              f"under {data_root} ({e}); pass --data-root") from None


def _render_run(client, info: RunInfo, crop_list, images, folder: Path, digest: str, data_root: str, log) -> dict[str, Any]:
    arch = info.params.get("generator.arch", "swinir")
    preset = info.params.get("generator.preset") or None
    step = -1
    meta_text = _text_artifact(client, info.run_id, CHECKPOINT_META)
    if meta_text:
        try:
            step = int(json.loads(meta_text).get("step", -1))
        except (json.JSONDecodeError, TypeError, ValueError):
            step = -1
    log(f"rendering {len(crop_list)} crops of {info.name} from its final checkpoint")
    with tempfile.TemporaryDirectory(prefix="raygrid-judge-") as tmp:
        path = client.download_artifacts(info.run_id, CHECKPOINT, tmp)
        try:
            model = C.load_generator(path, arch, preset, images.scale)
        except (ValueError, RuntimeError) as e:
            raise JudgeInputError(f"run {info.name}: {CHECKPOINT} does not load into generator {arch}/{preset} "
                                  f"({str(e).splitlines()[0]})") from None
    try:
        out = C.render(model, images, crop_list)
    except (OSError, ValueError, KeyError) as e:
        raise JudgeInputError(f"cannot render crops of {info.name}: test images not readable under {data_root} ({e}); "
                              "pass --data-root") from None
    folder.mkdir(parents=True, exist_ok=True)
    for k, arr in out.items():
        _write_png(folder / f"{k}.png", arr)
    meta = {"source": "rendered", "step": step, "crops": digest, "ids": sorted(out)}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta
