"""Backbones: one record per network, holding everything raygrid knows about it.

A backbone is an image-in-[0,1] -> stage-maps network used three ways: as the features of a
DISTS-style fidelity measure, as a discriminator trunk and as an IQA model's encoder. Its record
says how to build it (`library` picks the builder in `raygrid.nets.backbones`, `arch` names the
library's model), the stage layout the builder must produce, the pretrained weight files it
accepts (one per tag: file, hash, input statistics, library caches, source), which tag "imagenet"
means, and its forward cost. Adding a named backbone is one `BackboneSpec` below.

Any other timm model can be named as "timm:<model name>[.<tag>]"; it is checked against timm's
model list when it is built (not during validation, which must not import timm).

No torch here: search-space validation, the weights preflight and the dry run read these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TIMM_PREFIX = "timm:"
FILE_PREFIX = "file:"  # a weights spec or checkpoint given as an explicit file: "file:PATH"


@dataclass(frozen=True)
class Normalization:
    """Per-channel input statistics the weights were trained with (RGB, inputs in [0,1])."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = Normalization((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# [0,1] -> [-1,1]: for trunks trained from scratch (the plain conv discriminator trunk).
SYMMETRIC_NORM = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class WeightFile:
    """One pretrained artifact: where raygrid expects it and how to recognise it."""

    key: str  # "<backbone>.<tag>" (or a logical name such as "dists.alpha_beta")
    file: str | None  # expected file name in the weights dir (None: seeded init, no file)
    sha256: str | None = None  # full hex digest, or the prefix that torchvision file names embed
    norm: Normalization = IMAGENET_NORM
    # Library caches searched after the weights dir; nothing is downloaded.
    torch_hub: tuple[str, ...] = ()  # paths relative to torch.hub.get_dir()
    hf_hub: tuple[tuple[str, str], ...] = ()  # (repo_id, filename) in the Hugging Face cache
    source: str = ""  # where to get the file by hand (shown in errors)
    seed: int | None = None  # seeded init instead of a file

    @property
    def tag(self) -> str:
        return self.key.rsplit(".", 1)[-1]


def timm_weights(key: str, arch: str, tag: str, **kw) -> WeightFile:
    """A timm checkpoint: timm's Hugging Face repos are "timm/<arch>.<tag>" holding
    model.safetensors; in the weights dir the file is kept as "<arch>.<tag>.safetensors" so that
    names never collide."""
    return WeightFile(
        key=key,
        file=f"{arch}.{tag}.safetensors",
        hf_hub=((f"timm/{arch}.{tag}", "model.safetensors"),),
        source=f"https://huggingface.co/timm/{arch}.{tag} (model.safetensors, renamed)",
        **kw,
    )


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    label: str  # as the paper writes it
    # The builder: "torchvision" = VGG-16's `features` in torchvision's layout with max-pooling
    # replaced by L2 pooling (DISTS); "timm" = timm.create_model(features_only=True);
    # "open_clip" = open_clip's vision transformer, token maps of `blocks`.
    library: Literal["torchvision", "timm", "open_clip"]
    family: Literal["cnn", "transformer"]
    arch: str  # the library's model name
    channels: tuple[int, ...]  # channels of each stage map the builder returns
    reductions: tuple[int, ...]  # stride of each stage map w.r.t. the input
    pretrained: tuple[WeightFile, ...]  # one per tag, keys "<name>.<tag>"
    default_tag: str  # what the weights spec "imagenet" means (the standard pretrained weights)
    gflops: float  # forward GFLOPs of one 224x224 image (bench/flops.py recounts them)
    # Transformer blocks whose tokens are the stages (ViTs); None: the library's feature stages.
    blocks: tuple[int, ...] | None = None
    # The backbone *is* its seeded init (VGG-16-R): "random" means that init too, never another draw.
    fixed_init: bool = False
    tags: dict[str, WeightFile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = {w.tag: w for w in self.pretrained}
        bad = [w.key for w in self.pretrained if not w.key.startswith(self.name + ".")]
        if bad or self.default_tag not in tags or len(self.channels) != len(self.reductions):
            raise ValueError(f"backbone record {self.name!r} is inconsistent (weight keys {bad}, "
                             f"default tag {self.default_tag!r}, stages {self.channels}/{self.reductions})")
        object.__setattr__(self, "tags", tags)


VGG16_R_SEED = 20250925  # every build of "vgg16_r" has identical weights
VGG16_STAGES = dict(channels=(64, 128, 256, 512, 512), reductions=(1, 2, 4, 8, 16))  # relu1_2 ... relu5_3
VIT_BLOCKS = (2, 5, 8, 11)  # four evenly spaced blocks of a 12-block ViT

# "imagenet" is raygrid's choice of standard weights: the classic torchvision ImageNet-1k weights
# for VGG/ResNet (what IQA papers fine-tune), FB ImageNet-1k ConvNeXt-T, MS Swin-T, OpenAI CLIP,
# DINOv2 LVD-142M (docs/models.md).
BACKBONES: dict[str, BackboneSpec] = {
    b.name: b
    for b in [
        BackboneSpec(
            "vgg16_r", "VGG-16-R", "torchvision", "cnn", "vgg16", **VGG16_STAGES,
            pretrained=(WeightFile("vgg16_r.seed", file=None, seed=VGG16_R_SEED,
                                   source="no file: kaiming-normal(fan_out, relu) conv init, zero bias, "
                                          "seed VGG16_R_SEED"),),
            default_tag="seed", gflops=30.720, fixed_init=True,
        ),
        BackboneSpec(
            "vgg16", "VGG-16", "torchvision", "cnn", "vgg16", **VGG16_STAGES,
            pretrained=(WeightFile("vgg16.tv_in1k", file="vgg16-397923af.pth",
                                   sha256="397923af",  # torchvision names files after their sha256 prefix
                                   torch_hub=("checkpoints/vgg16-397923af.pth",),
                                   source="https://download.pytorch.org/models/vgg16-397923af.pth"),),
            default_tag="tv_in1k", gflops=30.720,
        ),
        BackboneSpec(
            "resnet50", "ResNet-50", "timm", "cnn", "resnet50",
            channels=(64, 256, 512, 1024, 2048), reductions=(2, 4, 8, 16, 32),  # stem (act1), layer1-4
            # timm's resnet50 uses torchvision's key names, so torchvision's own file loads too.
            pretrained=(timm_weights("resnet50.tv_in1k", "resnet50", "tv_in1k",
                                     torch_hub=("checkpoints/resnet50-0676ba61.pth",)),),
            default_tag="tv_in1k", gflops=8.174,
        ),
        BackboneSpec(
            "convnext_tiny", "ConvNeXt-T", "timm", "cnn", "convnext_tiny",
            channels=(96, 192, 384, 768), reductions=(4, 8, 16, 32),
            pretrained=(timm_weights("convnext_tiny.fb_in1k", "convnext_tiny", "fb_in1k"),),
            default_tag="fb_in1k", gflops=8.910,
        ),
        BackboneSpec(
            "clip_vit_b16", "CLIP-ViT-B/16", "open_clip", "transformer",
            "ViT-B-16-quickgelu",  # OpenAI's weights were trained with QuickGELU
            channels=(768,) * 4, reductions=(16,) * 4, blocks=VIT_BLOCKS,
            pretrained=(WeightFile(
                "clip_vit_b16.openai", file="ViT-B-16.openai.safetensors", norm=CLIP_NORM,
                hf_hub=(("timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors"),
                        ("timm/vit_base_patch16_clip_224.openai", "open_clip_pytorch_model.bin")),
                source="https://huggingface.co/timm/vit_base_patch16_clip_224.openai "
                       "(open_clip_model.safetensors, renamed)"),),
            default_tag="openai", gflops=22.541,
        ),
        BackboneSpec(
            "swin_tiny", "Swin-T", "timm", "transformer", "swin_tiny_patch4_window7_224",
            channels=(96, 192, 384, 768), reductions=(4, 8, 16, 32),  # timm returns NHWC: permuted
            pretrained=(timm_weights("swin_tiny.ms_in1k", "swin_tiny_patch4_window7_224", "ms_in1k"),),
            default_tag="ms_in1k", gflops=8.980,
        ),
        BackboneSpec(
            "dinov2_vits14", "DINOv2-ViT-S/14", "timm", "transformer", "vit_small_patch14_dinov2",
            channels=(384,) * 4, reductions=(14,) * 4, blocks=VIT_BLOCKS,
            pretrained=(timm_weights("dinov2_vits14.lvd142m", "vit_small_patch14_dinov2", "lvd142m"),),
            default_tag="lvd142m", gflops=11.030,
        ),
    ]
}


def is_backbone(name: str) -> bool:
    return name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def unknown_backbone(name: str) -> str:
    """The one-line message for a name that is no backbone."""
    return f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)} or '{TIMM_PREFIX}<timm model name>'"
