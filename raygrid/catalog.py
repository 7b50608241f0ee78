"""The names every layer of raygrid agrees on: backbones, discriminators, datasets.

This module imports nothing heavy (no torch) so that search-space validation and the dry run
stay fast. The model and data registries (`raygrid.nets`, `raygrid.data`) implement exactly
these names; a test checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# ---------------------------------------------------------------------------------------------
# Backbones (fidelity measures, discriminator trunks, IQA models)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    label: str  # as the paper writes it
    library: Literal["torchvision", "timm", "open_clip"]
    family: Literal["cnn", "transformer"]


BACKBONES: dict[str, BackboneInfo] = {
    b.name: b
    for b in [
        BackboneInfo("vgg16_r", "VGG-16-R", "torchvision", "cnn"),
        BackboneInfo("vgg16", "VGG-16", "torchvision", "cnn"),
        BackboneInfo("resnet50", "ResNet-50", "timm", "cnn"),
        BackboneInfo("convnext_tiny", "ConvNeXt-T", "timm", "cnn"),
        BackboneInfo("clip_vit_b16", "CLIP-ViT-B/16", "open_clip", "transformer"),
        BackboneInfo("swin_tiny", "Swin-T", "timm", "transformer"),
        BackboneInfo("dinov2_vits14", "DINOv2-ViT-S/14", "timm", "transformer"),
    ]
}

# Any other timm model can be named as "timm:<model name>"; it is checked against timm's model
# list when the sweep builds it (not during validation, which must not import timm).
TIMM_PREFIX = "timm:"


def is_backbone(name: str) -> bool:
    return name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


# ---------------------------------------------------------------------------------------------
# Discriminators: "none", or "<head>_<trunk>"
# ---------------------------------------------------------------------------------------------

DISCRIMINATOR_HEADS = ("vanilla", "patch")  # image-level (one logit) / patch-level (N×1×h×w)
DISCRIMINATOR_TRUNKS = ("conv", "vgg16", "resnet50", "dinov2_vits14")  # conv = plain conv trunk
NO_DISCRIMINATOR = "none"


def discriminator_names() -> list[str]:
    return [NO_DISCRIMINATOR] + [f"{h}_{t}" for t in DISCRIMINATOR_TRUNKS for h in DISCRIMINATOR_HEADS]


def split_discriminator(name: str) -> tuple[str, str]:
    """'patch_vgg16' -> ('patch', 'vgg16'). Raises ValueError for unknown names and 'none'."""
    head, _, trunk = name.partition("_")
    if head not in DISCRIMINATOR_HEADS or trunk not in DISCRIMINATOR_TRUNKS:
        raise ValueError(
            f"unknown discriminator {name!r}; expected one of {', '.join(discriminator_names())}"
        )
    return head, trunk


GAN_LOSSES = ("vanilla", "hinge", "relativistic", "lsgan")

# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkInfo:
    name: str
    label: str
    mode: Literal["FR", "NR"]
    folder: str  # default folder name under the sweep's data root
    size: int  # scored images (distorted images for FR); for cost estimates only


BENCHMARKS: dict[str, BenchmarkInfo] = {
    b.name: b
    for b in [
        BenchmarkInfo("live", "LIVE", "FR", "LIVE", 779),
        BenchmarkInfo("csiq", "CSIQ", "FR", "CSIQ", 866),
        BenchmarkInfo("tid2013", "TID2013", "FR", "TID2013", 3000),
        BenchmarkInfo("kadid10k", "KADID-10k", "FR", "kadid10k", 10125),
        BenchmarkInfo("pipal", "PIPAL", "FR", "PIPAL", 23200),
        BenchmarkInfo("koniq10k", "KonIQ-10k", "NR", "koniq10k", 10073),
        BenchmarkInfo("spaq", "SPAQ", "NR", "SPAQ", 11125),
        BenchmarkInfo("livec", "LIVE Challenge", "NR", "ChallengeDB_release", 1162),
        # Built offline from scikit-image's images by raygrid.data.demo, in real benchmark formats.
        BenchmarkInfo("demo_fr", "demo FR", "FR", "demo/iqa_fr", 160),
        BenchmarkInfo("demo_nr", "demo NR", "NR", "demo/iqa_nr", 40),
    ]
}

# A generic FR/NR set in pyiqa's meta-info CSV format (e.g. TQD): "csv:<path to csv>".
CSV_PREFIX = "csv:"


def is_benchmark(name: str) -> bool:
    return name in BENCHMARKS or (name.startswith(CSV_PREFIX) and len(name) > len(CSV_PREFIX))


@dataclass(frozen=True)
class SRSetInfo:
    name: str
    label: str
    role: Literal["train", "test"]
    folder: str
    images: int  # for cost estimates only
    megapixels: float  # mean HR size, for cost estimates only


SR_SETS: dict[str, SRSetInfo] = {
    s.name: s
    for s in [
        SRSetInfo("df2k", "DF2K", "train", "DF2K", 3450, 2.8),
        SRSetInfo("div2k_train", "DIV2K train", "train", "DIV2K/DIV2K_train_HR", 800, 2.8),
        SRSetInfo("set5", "Set5", "test", "Set5", 5, 0.11),
        SRSetInfo("set14", "Set14", "test", "Set14", 14, 0.23),
        SRSetInfo("bsd100", "BSD100", "test", "BSD100", 100, 0.15),
        SRSetInfo("urban100", "Urban100", "test", "Urban100", 100, 0.8),
        SRSetInfo("div2k_val", "DIV2K val", "test", "DIV2K", 100, 2.8),
        SRSetInfo("demo_sr_train", "demo SR train", "train", "demo/sr/train", 10, 0.1),
        SRSetInfo("demo_sr_val", "demo SR val", "test", "demo/sr/val", 4, 0.03),
    ]
}
