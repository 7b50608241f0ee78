"""transfer: an IQA model fine-tuned from ImageNet, a GAN discriminator's trunk, or random init.

Trained on the train split of `data.train` (targets: scores normalised to [0, 1], higher =
better), validated on its val split (or test split when the set has no val split), and tested on
every `data.test` set (its test split when it is the training set, all of it otherwise).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raygrid.config import IQAFinetuneConfig
from raygrid.train import loop
from raygrid.train.assess import benchmark_table


def build_model(cfg: IQAFinetuneConfig, weights_dir: str | None) -> torch.nn.Module:
    from raygrid.nets.iqa import create_iqa_model

    from raygrid import io

    m = cfg.model
    ckpt = m.discriminator_checkpoint
    if ckpt and io.is_s3(ckpt):  # an optimize trial's checkpoint in S3 storage
        ckpt = io.fetch(ckpt, tempfile.mkdtemp(prefix="raygrid-disc-"))
    return create_iqa_model(
        m.kind, m.backbone, init=m.init, weights=m.weights,
        discriminator_checkpoint=ckpt, weights_dir=weights_dir,
    )


def _dataset(table, split, size: int, seed: int, train: bool):
    from raygrid.data.iqa import IQADataset

    return IQADataset(table, split, size=size, seed=seed, target="score_norm" if train else "score",
                      skip_unreadable=train)


def _loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    # 1 - PLCC: scale-free, as in several IQA fine-tuning recipes
    p, t = pred - pred.mean(), target - target.mean()
    return 1 - (p * t).sum() / (p.norm() * t.norm() + 1e-8)


@torch.no_grad()
def predict(model, dataset, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    preds, scores = [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        args = [batch["dist"].to(device)] + ([batch["ref"].to(device)] if "ref" in batch else [])
        preds.append(model(*args).float().cpu().numpy())
        scores.append(batch["score"].numpy())
    model.train()
    return np.concatenate(preds), np.concatenate(scores)


def evaluate(model, sets: dict[str, Any], batch_size: int, device: torch.device, n_boot: int,
             seed: int) -> dict[str, float]:
    from raygrid.metrics.correlation import correlations

    out: dict[str, float] = {}
    for prefix, dataset in sets.items():
        pred, score = predict(model, dataset, batch_size, device)
        corr = correlations(pred, score, n_boot=n_boot, seed=seed)
        out.update({f"{prefix}/{k}": v for k, v in corr.items() if k != "n"})
    return out


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train.torch

    from raygrid.data.iqa import subset

    cfg = IQAFinetuneConfig.model_validate(loop_config["trial"])
    env = loop.RunEnv(**loop_config["env"])
    ctx = loop.setup(loop_config["trial"], loop_config.get("meta", {}))

    model = build_model(cfg, env.weights_dir).to(ctx.device)
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    trunk = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    opt = torch.optim.AdamW(
        [{"params": trunk, "lr": cfg.optim.lr * cfg.optim.backbone_lr_mult}, {"params": head, "lr": cfg.optim.lr}],
        weight_decay=cfg.optim.weight_decay,
    )
    state, start = loop.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        loop.set_rng_state(state["rng"])
    model = ray.train.torch.prepare_model(model, move_to_device=False)

    table = benchmark_table(cfg.data.train, env.data_root, cfg.seed, env.s3_endpoint_url)
    splits = set(table["split"])
    train_set = _dataset(subset(table, ["train"], cfg.data.max_images, cfg.seed), "train",
                         cfg.data.image_size, cfg.seed, train=True)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=len(train_set) > cfg.data.batch_size,
        num_workers=cfg.runtime.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
    )
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    batches = loop.infinite(loader, start_epoch=start // max(len(loader), 1))

    eval_sets: dict[str, Any] = {}
    if ctx.is_main:
        val_split = "val" if "val" in splits else "test"
        eval_sets["val"] = _dataset(subset(table, [val_split], cfg.data.max_images, cfg.seed), val_split,
                                    cfg.data.image_size, cfg.seed, train=False)
        for name in cfg.data.test:
            t = table if name == cfg.data.train else benchmark_table(name, env.data_root, cfg.seed, env.s3_endpoint_url)
            use = ["test"] if name == cfg.data.train else sorted(set(t["split"]))
            eval_sets[f"test/{name}"] = _dataset(subset(t, use, cfg.data.max_images, cfg.seed), use,
                                                 cfg.data.image_size, cfg.seed, train=False)

    meter = loop.Throughput()
    first_report = True
    running: list[float] = []
    amp = loop.autocast(ctx.device, cfg.runtime.amp)
    for step in range(start + 1, cfg.budget.steps + 1):
        meter.start()
        batch = next(batches)
        args = [batch["dist"].to(ctx.device)] + ([batch["ref"].to(ctx.device)] if "ref" in batch else [])
        with amp:
            pred = model(*args).float()
        loss = _loss(cfg.optim.loss, pred, batch["score"].to(ctx.device).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        loop.check_finite(step, {"loss/train": value})
        loop.maybe_inject_failure(step)
        running.append(value)
        meter.stop(args[0].shape[0] * ctx.world_size)

        if step % cfg.budget.eval_every == 0 or step == cfg.budget.steps:
            metrics = loop.all_reduce_mean(ctx, {"loss/train": sum(running) / len(running)})
            running.clear()
            metrics["throughput/images_per_s"] = meter.read()
            evaluation = evaluate(model, eval_sets, cfg.data.batch_size, ctx.device, cfg.n_boot, cfg.seed) if ctx.is_main else {}
            metrics.update(loop.broadcast(ctx, evaluation))
            if ctx.is_main:
                ctx.telemetry.record(step, meter.step_time, metrics["throughput/images_per_s"], None)
            inner = getattr(model, "module", model)
            state = {"model": inner.state_dict(), "opt": opt.state_dict(), "rng": loop.rng_state()} if ctx.is_main else None
            if first_report:
                metrics["progress/start_step"] = start  # where this (re)start picked up
                first_report = False
            loop.report(ctx, step, metrics, state)
