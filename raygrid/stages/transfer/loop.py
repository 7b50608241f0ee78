"""The transfer stage's Ray Train loop: an IQA model fine-tuned from ImageNet, a GAN
discriminator's trunk, or random init.

Trained on the train split of `data.train` (targets: scores normalised to [0, 1], higher =
better), selected on a val split carved from it (its official val split, else a fraction of its
training references: raygrid.stages.transfer.splits; metrics `val/...`), and tested on every
`data.test` set (its test split when it is the training set, all of it otherwise; metrics
`test/<benchmark>/...`). A test set never selects. Intervals resample reference images; every
evaluation's per-item table (one row per scored image and set: raygrid.spec.records.SCHEMAS
["transfer"]) travels in the checkpoint as `scores.parquet`.
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raygrid.spec import records
from raygrid.stages import loop
from raygrid.stages.transfer.config import IQAFinetuneConfig
from raygrid.stages.transfer.splits import carve_val


def build_model(cfg: IQAFinetuneConfig, weights_dir: str | None) -> torch.nn.Module:
    from raygrid import io
    from raygrid.nets.iqa import create_iqa_model

    m = cfg.model
    ckpt = m.discriminator_checkpoint
    if ckpt and io.is_s3(ckpt):  # an optimize trial's checkpoint in S3 storage
        ckpt = io.fetch(ckpt, tempfile.mkdtemp(prefix="raygrid-disc-"))
    return create_iqa_model(
        m.kind, m.backbone, init=m.init, weights=m.weights,
        discriminator_checkpoint=ckpt, weights_dir=weights_dir,
    )


def _dataset(table, split, size: int, seed: int, train: bool):
    from raygrid.data.iqa.dataset import IQADataset

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


def evaluator_record(cfg: IQAFinetuneConfig, weights_dir: str | None) -> list[dict]:
    """The IQA model this run trains, as an evaluator record entry (raygrid.metrics.panel): its
    `shares` names the discriminator trunk an init "discriminator" starts from."""
    from raygrid.metrics.panel import measure_record, weights_key

    m = cfg.model
    weights = {"imagenet": lambda: weights_key(m.backbone, m.weights, weights_dir), "random": lambda: "random",
               "discriminator": lambda: f"discriminator:{m.discriminator_checkpoint}"}[m.init]()
    return measure_record(f"iqa_{m.kind}_{m.backbone}", m.kind.upper(), False, m.backbone,
                          f"fine-tuned IQA model (init {m.init})", None, weights,
                          discriminator_trunk=m.backbone if m.init == "discriminator" else None)


def evaluate(model, sets: dict[str, Any], batch_size: int, device: torch.device, n_boot: int,
             seed: int, benchmarks: dict[str, str], items: dict[str, list[str]],
             record: list[dict] | None = None) -> tuple[dict[str, float], dict[str, bytes]]:
    """Correlations per set (`val` selects, `test/<benchmark>` is reported), with intervals that
    resample reference images, and the per-item table of every scored image
    (raygrid.spec.records.SCHEMAS["transfer"]; `scores.parquet` in the checkpoint)."""
    from raygrid.metrics.correlation import reference_correlations

    out: dict[str, float] = {}
    columns: dict[str, list[Any]] = {c: [] for c, _ in records.SCHEMAS["transfer"]}
    for prefix, dataset in sets.items():
        pred, score = predict(model, dataset, batch_size, device)
        refs = [str(r) for r in dataset.rows["ref_id"]]
        corr = reference_correlations(pred, score, refs, n_boot=n_boot, seed=seed)
        out.update({f"{prefix}/{k}": v for k, v in corr.items() if k != "n"})
        columns["role"] += [prefix.split("/")[0]] * len(pred)
        columns["benchmark"] += [benchmarks[prefix]] * len(pred)
        columns["item"] += items[prefix]
        columns["ref_id"] += refs
        columns["pred"] += pred.astype(float).tolist()
        columns["score"] += score.astype(float).tolist()
    files = {records.CKPT_SCORES: records.table_bytes("transfer", columns)}
    if record is not None:
        files[records.CKPT_EVALUATORS] = json.dumps(record, indent=1).encode()
    return out, files


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train.torch

    from raygrid.data.iqa import item_ids, open_benchmark, subset

    cfg, env, ctx = loop.start(loop_config, IQAFinetuneConfig)

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

    table = carve_val(open_benchmark(cfg.data.train, env.data_root, cfg.seed, env.s3_endpoint_url),
                      cfg.data.val_fraction, cfg.seed)
    train_set = _dataset(subset(table, ["train"], cfg.data.max_images, cfg.seed), "train",
                         cfg.data.image_size, cfg.seed, train=True)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=len(train_set) > cfg.data.batch_size,
        num_workers=ctx.loader_workers(cfg.runtime.num_workers), generator=torch.Generator().manual_seed(cfg.seed),
    )
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    batches = loop.infinite(loader, start_epoch=start // max(len(loader), 1))

    eval_sets: dict[str, Any] = {}
    benchmarks: dict[str, str] = {}  # set prefix -> benchmark name
    items: dict[str, list[str]] = {}  # set prefix -> the item id of each row, in order
    if ctx.is_main:
        ids = dict(zip(table["dist"], item_ids(table)))
        eval_sets["val"] = _dataset(subset(table, ["val"], cfg.data.max_images, cfg.seed), "val",
                                    cfg.data.image_size, cfg.seed, train=False)
        benchmarks["val"], items["val"] = cfg.data.train, [ids[p] for p in eval_sets["val"].rows["dist"]]
        for name in cfg.data.test:
            t = table if name == cfg.data.train else open_benchmark(name, env.data_root, cfg.seed, env.s3_endpoint_url)
            use = ["test"] if name == cfg.data.train else sorted(set(t["split"]))
            ds = eval_sets[f"test/{name}"] = _dataset(subset(t, use, cfg.data.max_images, cfg.seed), use,
                                                      cfg.data.image_size, cfg.seed, train=False)
            t_ids = ids if t is table else dict(zip(t["dist"], item_ids(t)))
            benchmarks[f"test/{name}"], items[f"test/{name}"] = name, [t_ids[p] for p in ds.rows["dist"]]

    amp = loop.autocast(ctx.device, cfg.runtime.amp)

    def step(batch) -> tuple[dict[str, float], int]:
        args = [batch["dist"].to(ctx.device)] + ([batch["ref"].to(ctx.device)] if "ref" in batch else [])
        with amp:
            pred = model(*args).float()
        loss = _loss(cfg.optim.loss, pred, batch["score"].to(ctx.device).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss/train": float(loss.detach())}, args[0].shape[0]

    def state() -> dict[str, Any]:
        inner = getattr(model, "module", model)
        return {"model": inner.state_dict(), "opt": opt.state_dict(), "rng": loop.rng_state()}

    loop.train(ctx, cfg.budget, start, batches, step,
               evaluate=lambda step_: evaluate(model, eval_sets, cfg.data.batch_size, ctx.device, cfg.n_boot,
                                               cfg.seed, benchmarks, items, evaluator_record(cfg, env.weights_dir)),
               state=state)
