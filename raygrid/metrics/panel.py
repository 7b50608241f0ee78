"""The evaluator panel that scores SR outputs, independently of the loss a model was trained with.

Three kinds of evaluator, all called as `evaluator(sr, hr) -> Tensor[N]` on NxCxHxW batches in
[0, 1] (per-image scores, float64, CPU):

  psnr_y, ssim_y       the SwinIR/BasicSR protocol (raygrid.metrics.sr), crop_border = scale
  fidelity_<backbone>  the DISTS-style fidelity measure of every backbone
                       (raygrid.nets.fidelity.create_fidelity; distances, lower = better)
  <pyiqa name>         no-reference IQA models through pyiqa (an optional dependency): MUSIQ,
                       MANIQA, CLIP-IQA, TOPIQ-NR, NIQE, ... (NR: `hr` is ignored)

Each evaluator declares its name, mode ("FR"/"NR"), direction (`lower_better`), family, score
range, the backbone it is built on and the weights of that backbone (None for handcrafted
measures). `panel_record` turns a panel into the typed evaluator record a run logs once
(`evaluators.json`, raygrid.spec.records.EVALUATOR_KEYS), with, for that run, which evaluators
share a network with the loss or with the discriminator (docs/records.md).

Ranges: PSNR has none (unbounded above: null); SSIM [-1, 1]; the fidelity measures
`FidelityMeasure.score_range`; pyiqa models what pyiqa's metric config says (`score_range`, e.g.
"~0, ~100": pyiqa marks approximate bounds with "~"; the numbers are kept, an open bound "~" alone
or a range pyiqa does not give makes it null).

pyiqa weights: pyiqa names each checkpoint by its URL's basename and loads it from its cache
folder, downloading only if the file is absent. `build_panel` never lets it download: it looks
for the file in the weights dir (`weights_dir`, else $RAYGRID_WEIGHTS, else
~/.cache/raygrid/weights; directly or under pyiqa/) and then in pyiqa's own cache
($TORCH_HOME/hub/pyiqa), points pyiqa at the folder that has it while the metric is built, and
raises MissingWeightsError naming the file and the folders if none does. Backbones that pyiqa
builds inside a metric (MANIQA's timm ViT, TOPIQ's timm ResNet-50, CLIP-IQA's CLIP RN50) come
from the timm / Hugging Face / CLIP caches as usual; offline, they must already be there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from raygrid.errors import PermanentError
from raygrid.metrics import sr as sr_metrics
from raygrid.spec.mlflow import metric_name
from raygrid.spec.records import EVALUATOR_KEYS

# ---------------------------------------------------------------------------------------------
# Evaluator
# ---------------------------------------------------------------------------------------------


@dataclass
class Evaluator:
    name: str  # as its library names it (pyiqa "clipiqa+"); `metric` is the MLflow-safe form
    mode: Literal["FR", "NR"]
    lower_better: bool
    backbone: str | None  # the network it is built on; None for handcrafted measures
    family: str
    fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] = field(repr=False)
    device: str = "cpu"
    module: torch.nn.Module | None = field(default=None, repr=False)  # the network, if any
    score_range: tuple[float, float] | None = None  # None: unbounded or not known
    weights: str | None = None  # the weights the backbone carries (a weight key, file or "random")

    @property
    def metric(self) -> str:
        """The metric key suffix: `val/<set>/<metric>`, `test/<metric>`, ..."""
        return metric_name(self.name)

    def record(self, loss_backbone: str | None = None, discriminator_trunk: str | None = None) -> dict:
        """This evaluator's entry of the evaluator record for a run whose fidelity loss is built on
        `loss_backbone` and whose discriminator on `discriminator_trunk` (None: no discriminator,
        or a plain conv trunk). `shares` names the networks the evaluator shares with that run:
        by backbone name, whatever the weights on either side. That errs on the side of leaving an
        evaluator out: a generator trained against a network's features is not judged by the
        same architecture, pretrained or fine-tuned or not."""
        shares = []
        if self.backbone is not None and self.backbone == loss_backbone:
            shares.append("loss")
        if self.backbone is not None and self.backbone == discriminator_trunk:
            shares.append("discriminator")
        entry = {"name": self.name, "metric": self.metric, "family": self.family, "mode": self.mode,
                 "higher_better": not self.lower_better,
                 "range": None if self.score_range is None else [float(v) for v in self.score_range],
                 "backbone": self.backbone, "weights": self.weights, "shares": shares}
        assert tuple(entry) == EVALUATOR_KEYS  # the record's contract (raygrid.spec.records)
        return entry

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        if sr.dim() != 4:
            raise ValueError(f"{self.name}: expected an NxCxHxW batch, got shape {tuple(sr.shape)}")
        if self.mode == "FR" and (hr is None or hr.shape != sr.shape):
            raise ValueError(f"{self.name}: an FR evaluator needs hr of shape {tuple(sr.shape)}")
        sr = sr.detach().float().clamp(0, 1)
        hr = hr.detach().float().clamp(0, 1) if hr is not None else None
        with torch.no_grad():
            out = self.fn(sr, hr)
        out = torch.as_tensor(out).detach().reshape(-1).to("cpu", torch.float64)
        if out.numel() != sr.shape[0]:
            raise RuntimeError(f"{self.name}: returned {out.numel()} scores for {sr.shape[0]} images")
        return out


def evaluate(panel: Sequence[Evaluator], sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image scores of every evaluator: {metric: Tensor[N]}."""
    return {e.metric: e(sr, hr) for e in panel}


def panel_record(panel: Sequence[Evaluator], loss_backbone: str | None = None,
                 discriminator_trunk: str | None = None) -> list[dict]:
    """The typed evaluator record of a run (see Evaluator.record): one entry per evaluator."""
    return [e.record(loss_backbone, discriminator_trunk) for e in panel]


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM
# ---------------------------------------------------------------------------------------------


def sr_protocol_evaluators(scale: int = 4) -> list[Evaluator]:
    return [
        Evaluator("psnr_y", "FR", False, None, "signal fidelity (BT.601 Y)",
                  lambda s, h: sr_metrics.psnr_y_batch(s, h, scale), score_range=None),
        Evaluator("ssim_y", "FR", False, None, "structural similarity (BT.601 Y)",
                  lambda s, h: sr_metrics.ssim_y_batch(s, h, scale), score_range=(-1.0, 1.0)),
    ]


# ---------------------------------------------------------------------------------------------
# Fidelity measures
# ---------------------------------------------------------------------------------------------


def fidelity_evaluator(backbone: str, weights: str = "random", weights_dir: str | None = None,
                       device: str = "cpu") -> Evaluator:
    from raygrid.nets.fidelity import (
        create_fidelity,  # heavy (timm/open_clip); built on demand
    )

    measure = create_fidelity(backbone, weights=weights, alpha_beta="uniform", weights_dir=weights_dir)
    measure = measure.to(device).eval()
    return Evaluator(
        f"fidelity_{backbone}", "FR", bool(getattr(measure, "lower_better", True)), backbone,
        "DISTS-style fidelity (uniform alpha/beta)", lambda s, h: measure(s.to(device), h.to(device)), device,
        measure, score_range=tuple(measure.score_range), weights=weights_key(backbone, weights, weights_dir),
    )


def weights_key(backbone: str, spec: str, weights_dir: str | None = None) -> str:
    """What a backbone's weights spec resolves to, as the record names it: the weight key
    ("vgg16.tv_in1k", "vgg16_r.seed"), "random", or the "file:PATH" spec itself."""
    from raygrid.weights import resolve_weights

    src = resolve_weights(backbone, spec, weights_dir, verify=False)
    if src.kind == "random":
        return "random"
    if src.tag is not None:
        name = backbone.split(".")[0] if backbone.startswith("timm:") else backbone
        return f"{name}.{src.tag}"
    return spec


def measure_record(name: str, mode: str, lower_better: bool, backbone: str | None, family: str,
                   score_range=None, weights: str | None = None, discriminator_trunk: str | None = None) -> list[dict]:
    """The evaluator record of a run whose subject is one IQA measure (an assess or transfer run):
    one entry, in the same schema as an optimize run's panel, so the analysis reads every run's
    evaluators one way. `discriminator_trunk`: the GAN discriminator trunk the measure starts from."""
    entry = Evaluator(name, mode, lower_better, backbone, family, fn=lambda s, h: s, score_range=score_range,
                      weights=weights)
    return [entry.record(None, discriminator_trunk)]


# ---------------------------------------------------------------------------------------------
# pyiqa NR models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PyiqaInfo:
    family: str
    backbone: str | None
    # where pyiqa takes the checkpoint's URL: (module under pyiqa.archs, key of default_model_urls)
    checkpoint: tuple[str, str] | None


PYIQA_NR: dict[str, PyiqaInfo] = {
    "musiq": PyiqaInfo("multi-scale transformer", "musiq_vit", ("musiq_arch", "koniq10k")),
    "maniqa": PyiqaInfo("transformer, attention pooling", "vit_base_patch8_224", ("maniqa_arch", "koniq")),
    "clipiqa": PyiqaInfo("vision-language (CLIP prompts)", "clip_rn50", None),
    "topiq_nr": PyiqaInfo("CNN, top-down attention", "resnet50", ("topiq_arch", "cfanet_nr_koniq_res50")),
    "niqe": PyiqaInfo("natural scene statistics", None, ("niqe_arch", "niqe")),
    "cnniqa": PyiqaInfo("shallow CNN", "cnniqa_cnn", ("cnniqa_arch", "koniq10k")),
}


class PyiqaMissingError(PermanentError, ImportError):
    pass


def _import_pyiqa():
    try:
        import pyiqa
    except ImportError as exc:
        raise PyiqaMissingError(
            "no-reference evaluators need pyiqa, an optional dependency: pip install pyiqa "
            f"(it must not change the installed torch); import failed with: {exc}"
        ) from exc
    return pyiqa


def pyiqa_checkpoint_name(metric: str) -> str | None:
    """File name pyiqa will look for in its cache for `metric` (None if it needs no checkpoint
    or raygrid does not know it)."""
    info = PYIQA_NR.get(metric)
    if info is None or info.checkpoint is None:
        return None
    import importlib

    module, key = info.checkpoint
    urls = importlib.import_module(f"pyiqa.archs.{module}").default_model_urls
    return os.path.basename(urls[key])


def pyiqa_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    from raygrid.weights import default_weights_dir, torch_hub_dir

    wdir = Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()
    return [wdir, wdir / "pyiqa", torch_hub_dir() / "pyiqa"]


@contextlib.contextmanager
def _pyiqa_cache(folder: Path):
    """Point pyiqa's download cache at `folder` while a metric is built (its module global is read
    at call time; it was fixed from TORCH_HOME when pyiqa was imported)."""
    from pyiqa.utils import download_util

    saved = download_util.DEFAULT_CACHE_DIR
    download_util.DEFAULT_CACHE_DIR = str(folder)
    try:
        yield
    finally:
        download_util.DEFAULT_CACHE_DIR = saved


def check_pyiqa_metric(metric: str, weights_dir: str | os.PathLike | None = None) -> None:
    """Before a sweep starts: pyiqa is installed, knows `metric`, and its checkpoint file is on
    disk (backbones pyiqa builds inside some metrics are only checked when they are built)."""
    from raygrid.weights import MissingWeightsError

    pyiqa = _import_pyiqa()
    if metric not in pyiqa.list_models(metric_mode="NR"):
        raise ValueError(f"{metric!r} is not a pyiqa no-reference metric (see pyiqa.list_models(metric_mode='NR'))")
    fname = pyiqa_checkpoint_name(metric)
    dirs = pyiqa_search_dirs(weights_dir)
    if fname is not None and not any((d / fname).is_file() for d in dirs):
        raise MissingWeightsError(f"pyiqa metric {metric!r}: weights file {fname!r} not found in any of "
                                  f"{', '.join(str(d) for d in dirs)} (nothing is downloaded)")


def pyiqa_evaluator(metric: str, weights_dir: str | os.PathLike | None = None, device: str = "cpu") -> Evaluator:
    pyiqa = _import_pyiqa()
    from raygrid.weights import MissingWeightsError

    if metric not in pyiqa.list_models(metric_mode="NR"):
        raise ValueError(f"{metric!r} is not a pyiqa no-reference metric (see pyiqa.list_models(metric_mode='NR'))")
    info = PYIQA_NR.get(metric, PyiqaInfo("pyiqa", None, None))
    dirs = pyiqa_search_dirs(weights_dir)
    folder = dirs[-1]
    fname = pyiqa_checkpoint_name(metric)
    if fname is not None:
        hit = next((d for d in dirs if (d / fname).is_file()), None)
        if hit is None:
            searched = "\n  ".join(str(d) for d in dirs)
            raise MissingWeightsError(
                f"pyiqa metric {metric!r}: weights file {fname!r} not found (nothing is downloaded). "
                f"Searched:\n  {searched}\nPut {fname!r} in one of them (pyiqa's cache is the last)."
            )
        folder = hit
    try:
        with _pyiqa_cache(folder):
            model = pyiqa.create_metric(metric, as_loss=False, device=torch.device(device))
    except MissingWeightsError:
        raise
    except Exception as exc:
        raise RuntimeError(
            f"pyiqa metric {metric!r} could not be built offline from {folder}: {type(exc).__name__}: {exc}. "
            "Backbones pyiqa builds inside the metric come from the timm/Hugging Face/CLIP caches."
        ) from exc
    model.eval()
    return Evaluator(
        metric, "NR", bool(model.lower_better), info.backbone, info.family,
        lambda s, h: model(s.to(device)), device, model,
        score_range=parse_pyiqa_range(getattr(model, "score_range", None)), weights=fname,
    )


def parse_pyiqa_range(text: str | None) -> tuple[float, float] | None:
    """pyiqa's `score_range` ("0, 1", "~0, ~100", "~, 2", ...) as (lo, hi); None when pyiqa gives
    none, a bound is open ("~" alone) or the text is not two numbers (e.g. per-output ranges)."""
    if not isinstance(text, str):
        return None
    parts = [p.strip().lstrip("~").strip() for p in text.split(",")]
    if len(parts) != 2:
        return None
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return (lo, hi) if lo < hi else None


# ---------------------------------------------------------------------------------------------
# The panel
# ---------------------------------------------------------------------------------------------


def build_panel(
    fidelity_backbones: Sequence[str],
    nr_metrics: Sequence[str] = (),
    weights: str = "random",
    weights_dir: str | None = None,
    device: str = "cpu",
    scale: int = 4,
) -> list[Evaluator]:
    """PSNR-Y and SSIM-Y (crop_border = scale), one fidelity measure per backbone (uniform
    alpha/beta, backbone `weights` resolved by raygrid.weights), and the pyiqa NR models named in
    `nr_metrics` (pyiqa checkpoints from the weights dir or pyiqa's cache, see module docstring)."""
    panel = sr_protocol_evaluators(scale)
    for backbone in fidelity_backbones:
        panel.append(fidelity_evaluator(backbone, weights, weights_dir, device))
    for metric in nr_metrics:
        panel.append(pyiqa_evaluator(metric, weights_dir, device))
    names = [e.metric for e in panel]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate evaluators in the panel: {dupes}")
    return panel
