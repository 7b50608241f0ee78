"""The optimize stage's evaluation: the EMA generator scored on the SR sets by the evaluator panel.

Built once per Train run on rank 0 (`SREvaluation(cfg, env, device)`: the panel and the sets),
then `run(generator, step)` at every evaluation returns the metrics Tune sees and the files that
travel in the checkpoint to the MLflow callback (raygrid.stages.loop.report).
"""

from __future__ import annotations

import torch

from raygrid.stages.loop import RunEnv
from raygrid.stages.optimize.config import SRGanConfig


class SREvaluation:
    def __init__(self, cfg: SRGanConfig, env: RunEnv, device: torch.device):
        from raygrid.data.sr import open_sr_test_set
        from raygrid.metrics.panel import build_panel

        self.cfg, self.device = cfg, device
        self.panel = build_panel(cfg.eval.fidelity_backbones, nr_metrics=cfg.eval.nr_metrics,
                                 weights=cfg.eval.weights, weights_dir=env.weights_dir, device=str(device))
        # (role, set name) -> dataset; role "val" selects, "test" is reported (the metric prefix)
        # a named set opens with its slice (DIV2K-val 0801-0810 selects, 0811-0900 is reported)
        self.sets = {(role, name): open_sr_test_set(name, env.data_root, scale=cfg.generator.scale)
                     for role, names in (("val", cfg.data.val), ("test", cfg.data.test)) for name in names}

    @torch.no_grad()
    def run(self, generator: torch.nn.Module, step: int) -> tuple[dict[str, float], dict[str, bytes]]:
        """PSNR/SSIM (Y) and every panel measure on each set: per-set and pooled means."""
        generator.eval()
        sums: dict[str, list[float]] = {}
        limit = self.cfg.data.max_eval_images
        for (role, set_name), dataset in self.sets.items():
            n = len(dataset) if limit is None else min(len(dataset), limit)
            for i in range(n):
                item = dataset[i]
                lr_img, hr = item["lr"].unsqueeze(0).to(self.device), item["hr"].unsqueeze(0).to(self.device)
                sr = generator(lr_img).clamp(0, 1)
                sr = sr[..., : hr.shape[-2], : hr.shape[-1]]
                for ev in self.panel:
                    value = float(ev(sr, hr).mean())
                    sums.setdefault(f"{role}/{set_name}/{ev.name}", []).append(value)
                    sums.setdefault(f"{role}/{ev.name}", []).append(value)
        files: dict[str, bytes] = {}
        return {k: sum(v) / len(v) for k, v in sums.items()}, files
