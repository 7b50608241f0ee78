"""The optimize stage's Ray Train loop: the generator ×4 trained with a fidelity loss (and a
discriminator) on the run's sample stream, the EMA generator scored every `eval_every` steps
(raygrid.stages.optimize.evaluate) with a checkpoint reported each time.
"""

from __future__ import annotations

from typing import Any

import torch

from raygrid.stages import loop
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.evaluate import SREvaluation
from raygrid.stages.optimize.models import SRGanModels

# ---------------------------------------------------------------------------------------------
# The Ray Train loop
# ---------------------------------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from raygrid.data.sr import SRTrainSet, resolve_sr_root
    from raygrid.data.stream import train_batches

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

    evaluation = SREvaluation(cfg, env, ctx.device) if ctx.is_main else None

    def step(batch) -> tuple[dict[str, float], int]:
        lr_img, hr_img = batch["lr"].to(ctx.device), batch["hr"].to(ctx.device)
        return models.step(lr_img, hr_img), lr_img.shape[0]

    loop.train(ctx, cfg.budget, start, batches, step,
               evaluate=lambda step_: evaluation.run(models.ema, step_),
               state=models.state)
