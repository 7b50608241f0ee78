"""The assess stage's Ray Train loop: a fidelity measure used as an FR-IQA model, scored against
human ratings.

Optionally α/β are first fitted (on another benchmark, or on this benchmark's train split, in
which case SRCC is measured on its test split) with DISTS's objective: MOS agreement plus the
texture-resampling-invariance term on crop pairs cut from the fitting benchmark's reference images
(`fit.texture_weight`; the summary metrics `fit/...` give both terms before and after). Reports
SRCC/PLCC/KRCC with bootstrap intervals that resample whole reference images (BCa; every pair of a
drawn reference enters together, docs/statistics.md; `n_clusters` = references resampled; with
fewer than 3 references no interval is given); the sign convention is quality = −distance against
higher-is-better scores, so a good measure has positive SRCC. The per-item table (one row per
scored distorted image: raygrid.spec.records.SCHEMAS["assess"]) travels in the checkpoint as
`scores.parquet`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raygrid.spec import records
from raygrid.stages import loop
from raygrid.stages.assess.config import AssessConfig

MAX_TEXTURE_CROP = 256


def _loader(table, size: int | None, batch_size: int, workers: int):
    from raygrid.data.iqa.dataset import IQADataset

    ds = IQADataset(table, sorted(set(table["split"])), size=size)  # every row of the subset
    return torch.utils.data.DataLoader(ds, batch_size=batch_size if size else 1, shuffle=False,
                                       num_workers=workers)


def score_measure(measure, table, size: int | None, batch_size: int, device: torch.device,
                  workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair distances and the pairs' scores (higher = better)."""
    dists, scores = [], []
    for batch in _loader(table, size, batch_size, workers):
        d = measure(batch["dist"].to(device), batch["ref"].to(device))
        dists.append(d.detach().cpu().numpy())
        scores.append(batch["score"].numpy())
    return np.concatenate(dists), np.concatenate(scores)


def texture_pairs(table, cfg: AssessConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of non-overlapping crops of each reference image of `table` (sorted by path), for
    DISTS's texture-resampling-invariance term; crop side `fit.texture_crop` (None: half the
    shorter side of the smallest reference, at most MAX_TEXTURE_CROP)."""
    from raygrid.data.images import read_rgb
    from raygrid.data.tensors import to_tensor
    from raygrid.nets.fidelity import texture_crop_pairs

    images = [to_tensor(read_rgb(p)) for p in sorted(set(table["ref"]))]
    crop = cfg.fit.texture_crop or min(MAX_TEXTURE_CROP, min(min(im.shape[1:]) for im in images) // 2)
    return texture_crop_pairs(images, crop=crop, pairs_per_image=cfg.fit.texture_pairs_per_image,
                              batch_size=cfg.batch_size, seed=cfg.seed)


def fit(measure, table, cfg: AssessConfig, device: torch.device, workers: int = 0) -> dict[str, float]:
    """α/β fitted on `table` with DISTS's two terms (MOS agreement; texture invariance on crops
    of its references, unless fit.texture_weight is 0)."""
    def pairs():
        for batch in _loader(table, cfg.image_size, cfg.batch_size, workers):
            yield batch["dist"].to(device), batch["ref"].to(device), batch["score"]

    textures = texture_pairs(table, cfg) if cfg.fit.texture_weight > 0 else None
    return measure.fit_alpha_beta(pairs(), steps=cfg.budget.steps, lr=cfg.lr, seed=cfg.seed,
                                  texture_pairs=textures, texture_weight=cfg.fit.texture_weight)


def score_table(cfg: AssessConfig, table, eval_table, dist: np.ndarray, score: np.ndarray,
                lower_better: bool) -> bytes:
    """The per-item table (raygrid.spec.records.SCHEMAS["assess"]) of the scored rows."""
    from raygrid.data.iqa import item_ids

    ids = dict(zip(table["dist"], item_ids(table)))
    return records.table_bytes("assess", {
        "benchmark": [cfg.benchmark] * len(eval_table), "item": [ids[p] for p in eval_table["dist"]],
        "ref_id": [str(r) for r in eval_table["ref_id"]], "split": [str(s) for s in eval_table["split"]],
        "pred": dist.astype(float).tolist(), "lower_better": [bool(lower_better)] * len(eval_table),
        "score": score.astype(float).tolist()})


def evaluator_record(cfg: AssessConfig, measure, env: loop.RunEnv) -> list[dict]:
    """The measure this run assesses, as an evaluator record entry (raygrid.metrics.panel)."""
    from raygrid.metrics.panel import measure_record, weights_key

    b = cfg.fidelity.backbone
    return measure_record(f"fidelity_{b}", "FR", bool(measure.lower_better), b,
                          f"DISTS-style fidelity (alpha/beta: {cfg.fidelity.alpha_beta}, fitted on {cfg.fit_on})",
                          tuple(measure.score_range), weights_key(b, cfg.fidelity.weights, env.weights_dir))


def interval_metrics(dist: np.ndarray, score: np.ndarray, ref_ids, cfg: AssessConfig) -> dict[str, float]:
    """SRCC/KRCC/PLCC of quality = -distance, with intervals that resample reference images."""
    from raygrid.metrics.correlation import reference_correlations

    # the unit ("reference images") and the method (BCa) are the same for every assess run:
    # docs/records.md states them, the metrics keep the numbers
    return reference_correlations(-dist, score, ref_ids, n_boot=cfg.n_boot, seed=cfg.seed)


def run_assess(cfg: AssessConfig, env: loop.RunEnv, device: torch.device,
               workers: int = 0) -> tuple[dict[str, float], Any, dict[str, bytes]]:
    """Fit (optionally) and score with `workers` loader processes; returns the metrics, the
    measure and the checkpoint files (the per-item table). Used with and without Ray."""
    from raygrid.data.iqa import open_benchmark, subset
    from raygrid.nets.fidelity import create_fidelity

    measure = create_fidelity(cfg.fidelity.backbone, weights=cfg.fidelity.weights,
                              alpha_beta=cfg.fidelity.alpha_beta, weights_dir=env.weights_dir).to(device)
    measure.eval()
    table = open_benchmark(cfg.benchmark, env.data_root, cfg.seed, env.s3_endpoint_url)
    metrics: dict[str, float] = {}
    if cfg.fit_on is not None:
        if cfg.fit_on == cfg.benchmark:
            fit_table = subset(table, ["train", "val"], cfg.max_pairs, cfg.seed)
        else:
            fit_table = subset(open_benchmark(cfg.fit_on, env.data_root, cfg.seed, env.s3_endpoint_url),
                                None, cfg.max_pairs, cfg.seed)
        summary = fit(measure, fit_table, cfg, device, workers)
        metrics.update({f"fit/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))})
    eval_table = subset(table, ["test"] if cfg.eval_split == "test" else None, cfg.max_pairs, cfg.seed)
    with torch.no_grad():
        dist, score = score_measure(measure, eval_table, cfg.image_size, cfg.batch_size, device, workers)
    metrics.update(interval_metrics(dist, score, eval_table["ref_id"], cfg))
    metrics["abs_srcc"] = abs(metrics["srcc"])
    metrics["pairs"] = float(len(score))
    files = {records.CKPT_SCORES: score_table(cfg, table, eval_table, dist, score, measure.lower_better),
             records.CKPT_EVALUATORS: json.dumps(evaluator_record(cfg, measure, env), indent=1).encode()}
    return metrics, measure, files


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg, env, ctx = loop.start(loop_config, AssessConfig)
    state, start = loop.restore()
    if state is not None and start >= cfg.budget.steps:
        return  # already scored; a restarted trial has nothing left to do
    workers = ctx.loader_workers(cfg.runtime.num_workers)
    metrics, measure, files = run_assess(cfg, env, ctx.device, workers) if ctx.is_main else ({}, None, {})
    metrics = loop.broadcast(ctx, metrics)
    out_state = None
    if ctx.is_main:
        with tempfile.TemporaryDirectory() as d:
            path = measure.save_alpha_beta(Path(d) / "alpha_beta.pt")
            out_state = {"alpha_beta": torch.load(path, weights_only=False), "metrics": metrics}
    loop.report(ctx, cfg.budget.steps, metrics, out_state, files)
