"""The optimize stage's evaluation: the EMA generator scored on the SR sets by the evaluator panel.

Built once per Train run on rank 0 (`SREvaluation(cfg, env, device)`: the panel, its record, the
sets and the sweep's sample crops), then `run(generator, step)` at every evaluation returns the
metrics Tune sees and the files that travel in the checkpoint to the MLflow callback
(raygrid.stages.loop.report; names in raygrid.spec.records, docs/records.md):

- metrics: `<role>/<set>/<metric>` and the pooled `<role>/<metric>` (role val selects, test is
  reported), the means over the set's images;
- `scores.parquet`: every (role, set, image, evaluator) score behind those means (evaluator = the
  record's `name`);
- `samples/<crop id>.png`: the EMA generator's SR of each sweep crop (`RunEnv.samples`), cut out
  of the SR of the full image, so a crop is exactly what the scores saw. A crop whose image this
  run does not evaluate (another set, or past `max_eval_images`) gets a full-image pass of its own;
- `evaluators.json`: the typed evaluator record, in the first report of each (re)start of the
  run (the callback logs it once).
"""

from __future__ import annotations

import io
import json

import torch

from raygrid.spec import records
from raygrid.spec.discriminators import CONV_TRUNK, trunk_of
from raygrid.stages.loop import RunEnv
from raygrid.stages.optimize.config import SRGanConfig


def discriminator_trunk(cfg: SRGanConfig) -> str | None:
    """The backbone a run's discriminator is built on (None: no discriminator or the conv trunk)."""
    trunk = trunk_of(cfg.adversarial.discriminator)
    return None if trunk in (None, CONV_TRUNK) else trunk


def png_bytes(tensor: torch.Tensor) -> bytes:
    """A 3xHxW image in [0, 1] as PNG (rounded to 8 bits as BasicSR's tensor2img does)."""
    from PIL import Image

    from raygrid.data.tensors import to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(tensor)).save(buf, format="PNG")
    return buf.getvalue()


class SREvaluation:
    def __init__(self, cfg: SRGanConfig, env: RunEnv, device: torch.device):
        from raygrid.data.sr import open_sr_test_set
        from raygrid.judge.crops import TestImages, parse_crops
        from raygrid.metrics.panel import build_panel, panel_record

        self.cfg, self.device = cfg, device
        self.panel = build_panel(cfg.eval.fidelity_backbones, nr_metrics=cfg.eval.nr_metrics,
                                 weights=cfg.eval.weights, weights_dir=env.weights_dir, device=str(device))
        self.record = panel_record(self.panel, cfg.fidelity.backbone, discriminator_trunk(cfg))
        # (role, set name) -> dataset; role "val" selects, "test" is reported (the metric prefix)
        # a named set opens with its slice (DIV2K-val 0801-0810 selects, 0811-0900 is reported)
        self.sets = {(role, name): open_sr_test_set(name, env.data_root, scale=cfg.generator.scale)
                     for role, names in (("val", cfg.data.val), ("test", cfg.data.test)) for name in names}
        self.crops = (parse_crops(json.dumps({"crops": list(env.samples)}), "RunEnv.samples", cfg.generator.scale)
                      if env.samples else [])
        self._images = TestImages(env.data_root, cfg.generator.scale)  # crops outside the evaluated images
        self._record_sent = False

    @torch.no_grad()
    def run(self, generator: torch.nn.Module, step: int) -> tuple[dict[str, float], dict[str, bytes]]:
        """PSNR/SSIM (Y) and every panel measure on each set: per-set and pooled means, the
        per-image table, the sample crops and (once) the evaluator record."""
        generator.eval()
        sums: dict[str, list[float]] = {}
        table: dict[str, list] = {name: [] for name, _ in records.SCHEMAS["optimize"]}
        wanted = {(c.set, c.image) for c in self.crops}
        full_sr: dict[tuple[str, str], torch.Tensor] = {}
        limit = self.cfg.data.max_eval_images
        for (role, set_name), dataset in self.sets.items():
            n = len(dataset) if limit is None else min(len(dataset), limit)
            for i in range(n):
                item = dataset[i]
                sr, hr = self._super_resolve(generator, item)
                if (set_name, item["name"]) in wanted:
                    full_sr[(set_name, item["name"])] = sr[0].cpu()
                for ev in self.panel:
                    value = float(ev(sr, hr).mean())
                    sums.setdefault(f"{role}/{set_name}/{ev.metric}", []).append(value)
                    sums.setdefault(f"{role}/{ev.metric}", []).append(value)
                    for key, v in zip(table, (role, set_name, item["name"], ev.name, value)):
                        table[key].append(v)
        files = {records.CKPT_SCORES: records.table_bytes("optimize", table)}
        files.update(self._samples(generator, full_sr))
        if not self._record_sent:
            files[records.CKPT_EVALUATORS] = json.dumps(self.record, indent=1).encode()
            self._record_sent = True
        return {k: sum(v) / len(v) for k, v in sums.items()}, files

    def _super_resolve(self, generator: torch.nn.Module, item: dict) -> tuple[torch.Tensor, torch.Tensor]:
        lr_img, hr = item["lr"].unsqueeze(0).to(self.device), item["hr"].unsqueeze(0).to(self.device)
        sr = generator(lr_img).clamp(0, 1)
        return sr[..., : hr.shape[-2], : hr.shape[-1]], hr

    def _samples(self, generator: torch.nn.Module, full_sr: dict[tuple[str, str], torch.Tensor]) -> dict[str, bytes]:
        from raygrid.judge.crops import check_fits

        files = {}
        for crop in self.crops:
            sr = full_sr.get((crop.set, crop.image))
            if sr is None:  # not among this run's evaluated images: one full-image pass of its own
                lr, hr = self._images.pair(crop.set, crop.image)
                sr = self._super_resolve(generator, {"lr": lr, "hr": hr})[0][0].cpu()
                full_sr[(crop.set, crop.image)] = sr
            check_fits(crop, sr.shape)
            patch = sr[:, crop.top:crop.top + crop.size, crop.left:crop.left + crop.size]
            files[f"{records.CKPT_SAMPLES}/{crop.id}.png"] = png_bytes(patch)
        return files
