"""The optimize stage's networks: the generator ×4 (+EMA), the fidelity loss, the discriminator, their
optimisers, one training step and the checkpoint state.

The G/D alternation follows the BasicSR/KAIR GAN recipes: per step, update G with D frozen,
then update D on real HR vs detached SR; EMA of G after the G step. Adam with betas (0.9, 0.99).
The loss is λ_fid·fidelity + λ_adv·adversarial (+ λ_pix·L1).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from typing import Any

import torch
import torch.nn.functional as F

from raygrid import io
from raygrid.spec.discriminators import NO_DISCRIMINATOR
from raygrid.stages import loop
from raygrid.stages.optimize.config import SRGanConfig, resolve_trunk_trainable


class SRGanModels:
    """Generator (+EMA), fidelity loss, discriminator and their optimisers for one trial.

    Built outside Ray too: the step-overhead benchmark and the unit tests use it directly.
    """

    def __init__(self, cfg: SRGanConfig, device: torch.device, weights_dir: str | None = None):
        from raygrid.nets.fidelity import create_fidelity
        from raygrid.nets.generators import create_generator

        self.cfg, self.device = cfg, device
        g = cfg.generator
        with _local_checkpoint(g.checkpoint) as checkpoint:
            self.generator = create_generator(g.arch, g.preset, scale=g.scale, checkpoint=checkpoint,
                                              weights_dir=weights_dir).to(device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.fidelity = create_fidelity(cfg.fidelity.backbone, weights=cfg.fidelity.weights,
                                        alpha_beta=cfg.fidelity.alpha_beta, weights_dir=weights_dir).to(device)
        self.fidelity.eval().requires_grad_(False)
        betas = tuple(cfg.optim.betas)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.optim.lr, betas=betas)
        self.discriminator = None
        self.opt_d = None
        self.gan_loss = None
        if cfg.adversarial.discriminator != NO_DISCRIMINATOR:
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


@contextlib.contextmanager
def _local_checkpoint(checkpoint: str | None):
    """An s3:// warm-start checkpoint is fetched to a temporary file for the build; other forms
    (None, "official", a checkpoint name, a path) are resolved by create_generator itself."""
    if checkpoint is None or not io.is_s3(checkpoint):
        yield checkpoint
        return
    with tempfile.TemporaryDirectory(prefix="raygrid-gen-") as tmp:
        yield io.fetch(checkpoint, tmp)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)
