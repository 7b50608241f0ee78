"""The report's static SR sample strip: LR, the SR of a few representative runs, HR — on the
centre crop of the first image of the runs' first test set, rendered from each run's checkpoint
artifact (`checkpoints/<final|best>/model.pt`, EMA generator weights under "ema").

The representative runs: the best compared run per (fidelity backbone, with/without an adversarial
loss) by the stage's `val/` selection metric at the compared step (a reported test set never
chooses what is shown); without a selection metric, the first seed of each.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

from raygrid import spec as catalog
from raygrid.analysis.load import SweepData, download_artifact, logged_space
from raygrid.analysis.tables import backbone_order_key, json_list, opt_runs, to_float


def representative_runs(data: SweepData, max_runs: int = 8) -> pd.DataFrame:
    df = opt_runs(data)
    if df.empty:
        return df
    df = df[df["compared"]].copy()
    rep = data.report.get("optimize")
    df["adversarial"] = df["discriminator"] != catalog.NO_DISCRIMINATOR
    if rep is not None and rep.selection and f"metrics.{rep.selection[0]}" in df:
        df = df.sort_values(f"metrics.{rep.selection[0]}", ascending=rep.selection[1] == "min", kind="stable")
    else:
        df = df.sort_values("seed", kind="stable")
    best = df.drop_duplicates(["backbone", "adversarial"], keep="first")
    best = best.assign(_order=best["backbone"].map(backbone_order_key))
    best = best.sort_values(["_order", "backbone", "adversarial"], kind="stable").drop(columns="_order")
    return best.head(max_runs).reset_index(drop=True)


def run_name(row: pd.Series) -> str:
    if row.get("discriminator") == catalog.NO_DISCRIMINATOR:
        setting = "none"
    else:
        setting = f"{row.get('discriminator')} @ {to_float(row.get('adv_weight')):g}"
    return f"{catalog.BACKBONES[row['backbone']].label if row['backbone'] in catalog.BACKBONES else row['backbone']} + {setting}"


def data_root(data: SweepData, explicit: str | None) -> str:
    """Where the SR sets are: raygrid's one data-root rule (`raygrid.io.data_root`) with the
    explicit argument first, then the data_root of the space the sweep run logged."""
    from raygrid import io

    if explicit:
        return io.data_root(explicit)
    space = logged_space(data) or {}
    return io.data_root(None, space.get("data_root")) if space.get("data_root") else io.data_root()


def sr_sample_tiles(data: SweepData, runs: pd.DataFrame, root: str, lr_crop: int = 32) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """[(caption, HxWx3)]: LR, the SR of each run's EMA generator, HR. Runs without the
    checkpoint artifact or without generator weights get a note instead of a tile."""
    import torch

    from raygrid.data.sr import open_sr_test_set
    from raygrid.nets.generators import create_generator

    notes: list[str] = []
    first = runs.iloc[0]
    sets = json_list(first.get("params.data.test"))
    if not sets:
        return [], ["The runs name no test set (params.data.test): no samples."]
    scale = to_float(first.get("params.generator.scale"))
    scale = int(scale) if np.isfinite(scale) else 4
    try:
        item = open_sr_test_set(sets[0], root, scale=scale)[0]
    except Exception as exc:  # noqa: BLE001 — data not on this machine
        return [], [f"Test set {sets[0]!r} is not readable under {root} ({type(exc).__name__}: {exc}): no samples."]
    lr, hr = item["lr"], item["hr"]
    p = min(lr_crop, lr.shape[-2], lr.shape[-1])
    top, left = (lr.shape[-2] - p) // 2, (lr.shape[-1] - p) // 2
    lr_patch = lr[:, top:top + p, left:left + p]
    hr_patch = hr[:, top * scale:(top + p) * scale, left * scale:(left + p) * scale]
    to_img = lambda t: t.detach().clamp(0, 1).permute(1, 2, 0).numpy()
    tiles = [(f"LR ({sets[0]}: {item.get('name', '')})", np.repeat(np.repeat(to_img(lr_patch), scale, 0), scale, 1))]
    which = data.report["optimize"].checkpoint if "optimize" in data.report else "final"
    for _, run in runs.iterrows():
        name = run_name(run)
        try:
            with tempfile.TemporaryDirectory(prefix="raygrid-sample-") as tmp:
                path = download_artifact(data.tracking_uri, run["run_id"], f"checkpoints/{which}/model.pt", tmp)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            missing = run.get(f"tags.raygrid.checkpoint.{which}_missing")
            notes.append(f"{name}: no checkpoints/{which}/model.pt artifact "
                         f"({missing if isinstance(missing, str) else type(exc).__name__}); no SR sample.")
            continue
        if "ema" not in state and "generator" not in state:
            notes.append(f"{name}: the {which} checkpoint holds no generator weights; no SR sample.")
            continue
        arch, preset = run.get("params.generator.arch"), run.get("params.generator.preset")
        model = create_generator(arch if isinstance(arch, str) else "swinir",
                                 preset if isinstance(preset, str) and preset != "None" else None, scale=scale)
        model.load_state_dict(state["ema"] if "ema" in state else state["generator"])
        sr = _one_thread_forward(model.eval(), lr_patch)[:, : hr_patch.shape[-2], : hr_patch.shape[-1]]
        mse = float(((sr - hr_patch) ** 2).mean())
        psnr = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
        tiles.append((f"{name}\n(crop RGB PSNR {psnr:.2f} dB)", to_img(sr)))
    tiles.append(("HR", to_img(hr_patch)))
    return tiles, notes


def _one_thread_forward(model, lr_patch):
    """SR of one small crop with a single torch thread: on shared cores, intra-op threads that
    wait for each other made a tiny SwinIR forward 25x slower (1.3 s instead of 0.05 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return model(lr_patch.unsqueeze(0)).clamp(0, 1)[0]
    finally:
        torch.set_num_threads(threads)
