"""The optimize stage's networks: the generator ×4 (+EMA), the fidelity loss, the discriminator, their
optimisers, one training step and the checkpoint state.

The G/D alternation follows the BasicSR/KAIR GAN recipes: per step, update G with D frozen,
then update D on real HR vs detached SR; EMA of G after the G step. Adam with betas (0.9, 0.99).
The loss is λ_fid·fidelity + λ_adv·adversarial (+ λ_pix·L1).

The step never waits for the device: it returns 0-dim tensors (losses, gradient norms, the
discriminator's logit statistics) that the loop skeleton sums on the device and reads at report
time. On report steps (`measure=True`) it also measures, without changing the update, the
gradient each weighted loss term sends to the generator's output and the colour shift of SR vs
HR (docs/training.md lists every key).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from typing import Any

import torch
import torch.nn.functional as F

from raygrid import io
from raygrid.data.tensors import bicubic_downscale
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
        self.runtime = loop.resolve_runtime(cfg.runtime, device)
        g = cfg.generator
        with _local_checkpoint(g.checkpoint) as checkpoint:
            self.generator = create_generator(g.arch, g.preset, scale=g.scale, checkpoint=checkpoint,
                                              weights_dir=weights_dir).to(device)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.fidelity = create_fidelity(cfg.fidelity.backbone, weights=cfg.fidelity.weights,
                                        alpha_beta=cfg.fidelity.alpha_beta, weights_dir=weights_dir).to(device)
        self.fidelity.eval().requires_grad_(False)
        betas = tuple(cfg.optim.betas)
        fused = {"fused": True} if self.runtime.fused_adam else {}
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.optim.lr, betas=betas, **fused)
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
            self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.adversarial.lr, betas=betas, **fused)
            self.gan_loss = GANLoss(cfg.adversarial.gan_loss, weight=cfg.loss.adversarial_weight)

    def wrap_for_ddp(self) -> None:
        import ray.train.torch

        self.generator = ray.train.torch.prepare_model(self.generator, move_to_device=False)
        if self.discriminator is not None:
            self.discriminator = ray.train.torch.prepare_model(self.discriminator, move_to_device=False)

    # -- one step ------------------------------------------------------------------------------

    def lr_from_hr(self, hr_img: torch.Tensor) -> torch.Tensor:
        """The LR batch made from the HR crops where they are (runtime.lr_on_device): the loader's
        own bicubic_downscale (antialiased bicubic, rounded to 8-bit levels)."""
        return bicubic_downscale(hr_img, self.cfg.generator.scale)

    def step(self, lr_img: torch.Tensor, hr_img: torch.Tensor, measure: bool = False) -> dict[str, torch.Tensor]:
        """One generator and one discriminator update; returns detached 0-dim tensors.

        measure: also `health/grad_sr/<term>` (the L2 norm, over the batch, of the gradient of each
        weighted loss term with respect to the SR batch, from torch.autograd.grad on the step's own
        graph: no parameter gradient or optimiser state is touched) and `health/color_shift/<r|g|b>`
        (mean of SR minus mean of HR per channel, on this batch).
        """
        cfg = self.cfg
        amp = loop.autocast(self.device, cfg.runtime.amp)
        self.generator.train()
        # Generator update (D frozen)
        self._set_d_trainable(False)
        with amp:
            sr = self.generator(lr_img)
        sr = sr.float()
        terms: dict[str, torch.Tensor] = {"fidelity": cfg.loss.fidelity_weight * self.fidelity(sr, hr_img).mean()}
        if cfg.loss.pixel_weight > 0:
            terms["pixel"] = cfg.loss.pixel_weight * F.l1_loss(sr, hr_img)
        if self.discriminator is not None:
            with amp:
                fake_logits = self.discriminator(sr).float()
                real_logits = self.discriminator(hr_img).float() if self.gan_loss.kind == "relativistic" else None
            terms["adversarial"] = self.gan_loss.g_loss(fake_logits, real_logits)  # weight applied inside
        g_total = sum(terms.values())
        out = {f"loss/g_{k}": v.detach() for k, v in terms.items()}
        out["loss/g_total"] = g_total.detach()
        if measure:
            for name, term in terms.items():
                (grad,) = torch.autograd.grad(term, sr, retain_graph=True)
                out[f"health/grad_sr/{name}"] = grad.norm()
            shift = (sr.detach() - hr_img).mean(dim=(0, 2, 3))
            out.update({f"health/color_shift/{c}": shift[i] for i, c in enumerate("rgb")})
        self.opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        out["grad_norm/g"] = _clip(self.generator.parameters(), cfg.optim.grad_clip)
        self.opt_g.step()
        self._update_ema()

        # Discriminator update on real vs detached fake
        if self.discriminator is not None:
            self._set_d_trainable(True)
            with amp:
                real_logits = self.discriminator(hr_img).float()
                fake_logits = self.discriminator(sr.detach()).float()
            d_loss = self.gan_loss.d_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            out["grad_norm/d"] = _clip(self.d_params, cfg.optim.grad_clip)
            self.opt_d.step()
            out["loss/d"] = d_loss.detach()
            out.update(discriminator_stats(real_logits.detach(), fake_logits.detach(), self.gan_loss.kind))
        return out

    def _set_d_trainable(self, on: bool) -> None:
        for p in getattr(self, "d_params", []):
            p.requires_grad_(on)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not hasattr(self, "_ema_pairs"):  # built on first use: after a DDP wrap, the same tensors
            g = _unwrap(self.generator)
            self._ema_pairs = ([list(self.ema.parameters()), [p.detach() for p in g.parameters()]],
                               [list(self.ema.buffers()), list(g.buffers())])
        (ema_p, g_p), (ema_b, g_b) = self._ema_pairs
        torch._foreach_lerp_(ema_p, g_p, 1 - self.cfg.optim.ema_decay)  # one kernel per group, not per tensor
        if ema_b:
            torch._foreach_copy_(ema_b, g_b)

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


def _clip(params, max_norm: float | None) -> torch.Tensor:
    """The total L2 norm of the gradients before clipping (a device tensor), clipped if asked."""
    params = [p for p in params if p.grad is not None]
    if max_norm:
        return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
    return torch.nn.utils.get_total_norm([p.grad for p in params]).detach()


def discriminator_stats(real: torch.Tensor, fake: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    """The discriminator's logits on this step's real and (detached) fake batch: mean and std
    over every logit (images x patches), and its accuracy by its own loss's decision rule: logit
    > 0 is "real" (vanilla, hinge), > 0.5 (lsgan: targets 1 and 0), and for the relativistic
    loss a real logit above the fake mean / a fake logit below the real mean."""
    if kind == "relativistic":
        real_right, fake_right = real > fake.mean(), fake < real.mean()
    else:
        threshold = 0.5 if kind == "lsgan" else 0.0
        real_right, fake_right = real > threshold, fake <= threshold
    return {
        "d/real_logit_mean": real.mean(), "d/real_logit_std": real.std(correction=0),
        "d/fake_logit_mean": fake.mean(), "d/fake_logit_std": fake.std(correction=0),
        "d/real_acc": real_right.float().mean(), "d/fake_acc": fake_right.float().mean(),
    }


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)
