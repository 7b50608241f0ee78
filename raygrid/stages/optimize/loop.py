"""The optimize stage's Ray Train loop: the generator ×4 trained with a fidelity loss (and a
discriminator) on the run's sample stream, the EMA generator scored every `eval_every` steps
(raygrid.stages.optimize.evaluate) with a checkpoint reported each time, and the run's health
watched at each evaluation (raygrid.stages.optimize.health): a run that collapsed or diverged
ends early and says at which step.
"""

from __future__ import annotations

from typing import Any

import torch

from raygrid.stages import loop
from raygrid.stages.optimize.config import SRGanConfig
from raygrid.stages.optimize.evaluate import SREvaluation
from raygrid.stages.optimize.health import HealthMonitor
from raygrid.stages.optimize.models import SRGanModels
from raygrid.stages.optimize.spec import reported_metrics

HEALTH_STATE = "health"  # the monitor's streaks in the checkpoint state


def train_set(cfg: SRGanConfig, env: loop.RunEnv, make_lr: bool = True):
    """The run's training stream: crops of the training set, read from its prepared store when
    `data.store` names one (the preflight has checked or built it)."""
    from raygrid.data.sr import SRTrainSet, resolve_sr_root

    return SRTrainSet(resolve_sr_root(cfg.data.train, env.data_root), hr_crop=cfg.data.hr_crop,
                      scale=cfg.generator.scale, seed=cfg.seed, endpoint_url=env.s3_endpoint_url,
                      store=cfg.data.store, on_mismatch=cfg.data.store_on_mismatch, make_lr=make_lr)


def train_steps(models: SRGanModels, device: torch.device):
    """(step, measure_step) for the loop skeleton: a batch to the device without waiting (pinned
    memory, non_blocking), its LR made there when the loader left it out, one models.step."""

    def run(batch: dict[str, torch.Tensor], measure: bool) -> tuple[dict[str, torch.Tensor], int]:
        hr_img = batch["hr"].to(device, non_blocking=True)
        lr_img = batch["lr"].to(device, non_blocking=True) if "lr" in batch else models.lr_from_hr(hr_img)
        return models.step(lr_img, hr_img, measure=measure), hr_img.shape[0]

    return (lambda batch: run(batch, False)), (lambda batch: run(batch, True))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    from raygrid.data.stream import train_batches

    cfg, env, ctx = loop.start(loop_config, SRGanConfig)
    models = SRGanModels(cfg, ctx.device, weights_dir=env.weights_dir)
    monitor = HealthMonitor(cfg.health, final_step=cfg.budget.steps)
    state, start = loop.restore()
    if state is not None:
        models.load_state(state)
        if HEALTH_STATE in state:
            monitor.load_state_dict(state[HEALTH_STATE])
    models.wrap_for_ddp()

    # The sample stream: every step's crops are a function of (seed, stream position), so a resumed
    # run continues exactly where it stopped, on any number of ranks and loader workers.
    batches = train_batches(train_set(cfg, env, make_lr=not ctx.runtime.lr_on_device), cfg.data.batch_size,
                            start_step=start, rank=ctx.rank, world=ctx.world_size,
                            num_workers=ctx.loader_workers(cfg.runtime.num_workers),
                            stop_step=cfg.budget.steps, pin_memory=ctx.device.type == "cuda")

    evaluation = SREvaluation(cfg, env, ctx.device) if ctx.is_main else None
    step, measure_step = train_steps(models, ctx.device)
    loop.train(ctx, cfg.budget, start, batches, step,
               evaluate=lambda step_: evaluation.run(models.ema, step_),
               state=lambda: {**models.state(), HEALTH_STATE: monitor.state_dict()},
               measure_step=measure_step, monitor=monitor, metric_keys=reported_metrics(cfg))
