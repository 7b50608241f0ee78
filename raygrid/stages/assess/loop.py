"""The assess stage's Ray Train loop: a fidelity measure used as an FR-IQA model, scored against
human ratings.

Optionally α/β are first fitted (on another benchmark, or on this benchmark's train split, in
which case SRCC is measured on its test split). Reports SRCC/PLCC/KRCC with bootstrap intervals;
the sign convention is quality = −distance against higher-is-better scores, so a good measure has
positive SRCC.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raygrid.stages import loop
from raygrid.stages.assess.config import AssessConfig


def _loader(table, size: int | None, batch_size: int, workers: int):
    from raygrid.data.iqa import IQADataset

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


def fit(measure, table, cfg: AssessConfig, device: torch.device, workers: int = 0) -> dict[str, float]:
    def pairs():
        for batch in _loader(table, cfg.image_size, cfg.batch_size, workers):
            yield batch["dist"].to(device), batch["ref"].to(device), batch["score"]

    return measure.fit_alpha_beta(pairs(), steps=cfg.budget.steps, lr=cfg.lr, seed=cfg.seed)


def run_assess(cfg: AssessConfig, env: loop.RunEnv, device: torch.device,
               workers: int = 0) -> tuple[dict[str, float], Any]:
    """Fit (optionally) and score with `workers` loader processes; returns the metrics and the
    measure. Used with and without Ray."""
    from raygrid.data.iqa import open_benchmark, subset
    from raygrid.metrics.correlation import TEXT_KEYS, correlations
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
    corr = correlations(-dist, score, n_boot=cfg.n_boot, seed=cfg.seed)
    metrics.update({k: v for k, v in corr.items() if k not in TEXT_KEYS})
    metrics["abs_srcc"] = abs(metrics["srcc"])
    metrics["pairs"] = float(len(score))
    return metrics, measure


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg, env, ctx = loop.start(loop_config, AssessConfig)
    state, start = loop.restore()
    if state is not None and start >= cfg.budget.steps:
        return  # already scored; a restarted trial has nothing left to do
    workers = ctx.loader_workers(cfg.runtime.num_workers)
    metrics, measure = run_assess(cfg, env, ctx.device, workers) if ctx.is_main else ({}, None)
    metrics = loop.broadcast(ctx, metrics)
    out_state = None
    if ctx.is_main:
        with tempfile.TemporaryDirectory() as d:
            path = measure.save_alpha_beta(Path(d) / "alpha_beta.pt")
            out_state = {"alpha_beta": torch.load(path, weights_only=False), "metrics": metrics}
    loop.report(ctx, cfg.budget.steps, metrics, out_state)
