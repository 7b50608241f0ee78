"""optimize: SwinIR ×4 trained with λ_fid·fidelity + λ_adv·adversarial (+ λ_pix·L1).

The G/D alternation follows the BasicSR/KAIR GAN recipes: per step, update G with D frozen,
then update D on real HR vs detached SR; EMA of G after the G step. Adam with betas (0.9, 0.99).
Every `eval_every` steps the EMA generator is scored on the validation sets (PSNR/SSIM on Y and
the panel of fidelity distances) and a checkpoint is reported.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from raygrid import catalog
from raygrid.config import SRGanConfig
from raygrid.train import loop


def resolve_trunk_trainable(cfg: SRGanConfig) -> bool:
    setting = cfg.adversarial.trunk_trainable
    if setting != "auto":
        return bool(setting)
    _, trunk = catalog.split_discriminator(cfg.adversarial.discriminator)
    info = catalog.BACKBONES.get(trunk)
    return info is None or info.family == "cnn"  # fine-tune conv trunks, freeze transformers


class SRGanModels:
    """Generator (+EMA), fidelity loss, discriminator and their optimisers for one trial.

    Built outside Ray too: the step-overhead benchmark and the unit tests use it directly.
    """

    def __init__(self, cfg: SRGanConfig, device: torch.device, weights_dir: str | None = None):
        from raygrid.nets.fidelity import create_fidelity
        from raygrid.nets.generator import create_swinir

        self.cfg, self.device = cfg, device
        self.generator = create_swinir(cfg.generator.preset, scale=cfg.generator.scale,
                                       checkpoint=cfg.generator.checkpoint).to(device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.fidelity = create_fidelity(cfg.fidelity.backbone, weights=cfg.fidelity.weights,
                                        alpha_beta=cfg.fidelity.alpha_beta, weights_dir=weights_dir).to(device)
        self.fidelity.eval().requires_grad_(False)
        betas = tuple(cfg.optim.betas)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.optim.lr, betas=betas)
        self.discriminator = None
        self.opt_d = None
        self.gan_loss = None
        if cfg.adversarial.discriminator != catalog.NO_DISCRIMINATOR:
            from raygrid.nets.discriminators import GANLoss, create_discriminator

            self.discriminator = create_discriminator(
                cfg.adversarial.discriminator, weights=cfg.adversarial.weights,
                trunk_trainable=resolve_trunk_trainable(cfg), weights_dir=weights_dir,
                input_size=cfg.data.hr_crop,
            ).to(device)
            # a frozen trunk (trunk_trainable false) has requires_grad off from construction
            self.d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
            self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.adversarial.lr, betas=betas)
            self.gan_loss = GANLoss(cfg.adversarial.gan_loss, weight=cfg.loss.adversarial_weight)

    def wrap_for_ddp(self) -> None:
        import ray.train.torch

        self.generator = ray.train.torch.prepare_model(self.generator, move_to_device=False)
        if self.discriminator is not None:
            self.discriminator = ray.train.torch.prepare_model(self.discriminator, move_to_device=False)

    # -- one step ------------------------------------------------------------------------------

    def step(self, lr_img: torch.Tensor, hr_img: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        amp = loop.autocast(self.device, cfg.runtime.amp)
        self.generator.train()
        # Generator update (D frozen)
        self._set_d_trainable(False)
        with amp:
            sr = self.generator(lr_img)
        sr = sr.float()
        losses: dict[str, torch.Tensor] = {}
        losses["g_fidelity"] = cfg.loss.fidelity_weight * self.fidelity(sr, hr_img).mean()
        if cfg.loss.pixel_weight > 0:
            losses["g_pixel"] = cfg.loss.pixel_weight * F.l1_loss(sr, hr_img)
        fake_logits = real_logits = None
        if self.discriminator is not None:
            with amp:
                fake_logits = self.discriminator(sr).float()
                real_logits = self.discriminator(hr_img).float() if self.gan_loss.kind == "relativistic" else None
            losses["g_adversarial"] = self.gan_loss.g_loss(fake_logits, real_logits)  # weight applied inside
        g_total = sum(losses.values())
        self.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.optim.grad_clip)
        self.opt_g.step()
        self._update_ema()
        out = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
        out["loss/g_total"] = float(g_total.detach())

        # Discriminator update on real vs detached fake
        if self.discriminator is not None:
            self._set_d_trainable(True)
            with amp:
                real_logits = self.discriminator(hr_img).float()
                fake_logits = self.discriminator(sr.detach()).float()
            d_loss = self.gan_loss.d_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.d_params, cfg.optim.grad_clip)
            self.opt_d.step()
            out["loss/d"] = float(d_loss.detach())
            out["d/real_acc"] = float((real_logits.detach() > 0).float().mean())
            out["d/fake_acc"] = float((fake_logits.detach() < 0).float().mean())
        return out

    def _set_d_trainable(self, on: bool) -> None:
        for p in getattr(self, "d_params", []):
            p.requires_grad_(on)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.optim.ema_decay
        g = _unwrap(self.generator)
        for pe, p in zip(self.ema.parameters(), g.parameters()):
            pe.lerp_(p.detach(), 1 - decay)
        for be, b in zip(self.ema.buffers(), g.buffers()):
            be.copy_(b)

    # -- checkpoint state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        state = {
            "generator": _unwrap(self.generator).state_dict(),
            "ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "rng": loop.rng_state(),
        }
        if self.discriminator is not None:
            state["discriminator"] = _unwrap(self.discriminator).state_dict()
            state["discriminator_name"] = self.cfg.adversarial.discriminator
            state["opt_d"] = self.opt_d.state_dict()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        _unwrap(self.generator).load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.discriminator is not None:
            _unwrap(self.discriminator).load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        loop.set_rng_state(state["rng"])


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


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
    import ray.train.torch

    from raygrid.data.sr import SRTestSet, SRTrainSet, resolve_sr_root
    from raygrid.metrics.panel import build_panel

    cfg = SRGanConfig.model_validate(loop_config["trial"])
    env = loop.RunEnv(**loop_config["env"])
    ctx = loop.setup(loop_config["trial"], loop_config.get("meta", {}))

    models = SRGanModels(cfg, ctx.device, weights_dir=env.weights_dir)
    state, start = loop.restore()
    if state is not None:
        models.load_state(state)
    models.wrap_for_ddp()

    train_set = SRTrainSet(resolve_sr_root(cfg.data.train, env.data_root), hr_crop=cfg.data.hr_crop,
                           scale=cfg.generator.scale, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.runtime.num_workers, persistent_workers=cfg.runtime.num_workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    batches_per_epoch = max(len(loader), 1)
    batches = loop.infinite(loader, start_epoch=start // batches_per_epoch)

    panel, val_sets = [], {}
    if ctx.is_main:
        panel = build_panel(cfg.eval.fidelity_backbones, nr_metrics=cfg.eval.nr_metrics,
                            weights=cfg.eval.weights, weights_dir=env.weights_dir, device=str(ctx.device))
        val_sets = {name: SRTestSet(resolve_sr_root(name, env.data_root), scale=cfg.generator.scale)
                    for name in cfg.data.val}

    meter = loop.Throughput()
    first_report = True
    running: dict[str, list[float]] = {}
    for step in range(start + 1, cfg.budget.steps + 1):
        meter.start()
        batch = next(batches)
        lr_img, hr_img = batch["lr"].to(ctx.device), batch["hr"].to(ctx.device)
        losses = models.step(lr_img, hr_img)
        loop.check_finite(step, losses)
        loop.maybe_inject_failure(step)
        meter.stop(lr_img.shape[0] * ctx.world_size)
        for k, v in losses.items():
            running.setdefault(k, []).append(v)

        if step % cfg.budget.eval_every == 0 or step == cfg.budget.steps:
            metrics = loop.all_reduce_mean(ctx, {k: sum(v) / len(v) for k, v in running.items()})
            running.clear()
            metrics["throughput/images_per_s"] = meter.read()
            evaluation = evaluate(models.ema, val_sets, panel, ctx.device, cfg.data.val_max_images) if ctx.is_main else {}
            metrics.update(loop.broadcast(ctx, evaluation))
            gpu_mem = torch.cuda.max_memory_allocated(ctx.device) if ctx.device.type == "cuda" else None
            if ctx.is_main:
                ctx.telemetry.record(step, meter.step_time, metrics["throughput/images_per_s"], gpu_mem)
            if first_report:
                metrics["progress/start_step"] = start  # where this (re)start picked up
                first_report = False
            loop.report(ctx, step, metrics, models.state() if ctx.is_main else None)
