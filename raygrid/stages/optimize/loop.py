"""The optimize stage's Ray Train loop: SwinIR ×4 trained with a fidelity loss (and a
discriminator), the EMA generator scored every `eval_every` steps on the validation sets (PSNR/SSIM
on Y and the evaluator panel) with a checkpoint reported each time.
"""

from __future__ import annotations

from typing import Any

import torch

from raygrid.stages import loop
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.models import SRGanModels

# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(generator: torch.nn.Module, val_sets: dict[str, Any], panel: list[Any],
             device: torch.device, max_images: int | None) -> dict[str, float]:
    """PSNR/SSIM (Y) and every panel measure on each val set; per-set and pooled means."""
    generator.eval()
    sums: dict[str, list[float]] = {}
    for set_name, dataset in val_sets.items():
        n = len(dataset) if max_images is None else min(len(dataset), max_images)
        for i in range(n):
            item = dataset[i]
            lr_img, hr = item["lr"].unsqueeze(0).to(device), item["hr"].unsqueeze(0).to(device)
            sr = generator(lr_img).clamp(0, 1)
            sr = sr[..., : hr.shape[-2], : hr.shape[-1]]
            for ev in panel:
                value = float(ev(sr, hr).mean())
                sums.setdefault(f"val/{set_name}/{ev.name}", []).append(value)
                sums.setdefault(f"val/{ev.name}", []).append(value)
    return {k: sum(v) / len(v) for k, v in sums.items()}


# ---------------------------------------------------------------------------------------------
# The Ray Train loop
# ---------------------------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from raygrid.data.sr import SRTestSet, SRTrainSet, resolve_sr_root
    from raygrid.data.stream import train_batches
    from raygrid.metrics.panel import build_panel

    cfg, env, ctx = loop.start(loop_config, SRGanConfig)
    models = SRGanModels(cfg, ctx.device, weights_dir=env.weights_dir)
    state, start = loop.restore()
    if state is not None:
        models.load_state(state)
    models.wrap_for_ddp()

    # The sample stream: every step's crops are a function of (seed, stream position), so a resumed
    # run continues exactly where it stopped, on any number of ranks and loader workers.
    train_set = SRTrainSet(resolve_sr_root(cfg.data.train, env.data_root), hr_crop=cfg.data.hr_crop,
                           scale=cfg.generator.scale, seed=cfg.seed, endpoint_url=env.s3_endpoint_url)
    batches = train_batches(train_set, cfg.data.batch_size, start_step=start, rank=ctx.rank,
                            world=ctx.world_size, num_workers=ctx.loader_workers(cfg.runtime.num_workers),
                            stop_step=cfg.budget.steps, pin_memory=ctx.device.type == "cuda")

    panel, val_sets = [], {}
    if ctx.is_main:
        panel = build_panel(cfg.eval.fidelity_backbones, nr_metrics=cfg.eval.nr_metrics,
                            weights=cfg.eval.weights, weights_dir=env.weights_dir, device=str(ctx.device))
        val_sets = {name: SRTestSet(resolve_sr_root(name, env.data_root), scale=cfg.generator.scale)
                    for name in cfg.data.val}

    def step(batch) -> tuple[dict[str, float], int]:
        lr_img, hr_img = batch["lr"].to(ctx.device), batch["hr"].to(ctx.device)
        return models.step(lr_img, hr_img), lr_img.shape[0]

    loop.train(ctx, cfg.budget, start, batches, step,
               evaluate=lambda: evaluate(models.ema, val_sets, panel, ctx.device, cfg.data.val_max_images),
               state=models.state)
