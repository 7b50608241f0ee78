"""Feature backbones: image in [0,1] -> list of NCHW stage maps, for every backbone of the paper.

`create_backbone(name)` builds any record of raygrid.spec.backbones (its `library` picks one of the
three builders below, its `arch` the library's model) or "timm:<any timm model>".
A Backbone normalises its own input (ImageNet or CLIP statistics), pads where the architecture
needs a multiple of its patch size, and returns its stage maps (never the pixel stage: the DISTS
measure adds that itself). Weights come from raygrid.weights and go through each library's own
file hook: torchvision layout + load_state_dict, timm pretrained_cfg_overlay(file=...), open_clip
pretrained=<path>.

Stages (raygrid's choices, docs/models.md):
  torchvision   VGG-16 relu1_2 ... relu5_3 (`features` layout, max-pools -> L2 pooling: DISTS)
  timm          timm's features_only stages (ResNet: stem + layer1-4; ConvNeXt, Swin: the 4 stages,
                Swin's NHWC permuted); ViTs: the record's `blocks` as 2-D token maps (dynamic size)
  open_clip     the visual tower's `blocks` as 2-D token maps
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raygrid.spec.backbones import (
    BACKBONES,
    CLIP_NORM,
    IMAGENET_NORM,
    TIMM_PREFIX,
    BackboneSpec,
    Normalization,
    unknown_backbone,
)
from raygrid.weights import WeightSource, resolve_weights

MIN_SIZE = 32  # smallest H, W accepted (five stride-2 stages leave 1x1 maps)


class Backbone(nn.Module):
    """Base class: normalise, pad to the architecture's multiple, return stage maps (NCHW).

    Subclasses implement forward_features(x_normalised) -> list[Tensor] and set `channels` and
    `reductions` (stride of each map w.r.t. the input).
    """

    def __init__(
        self,
        name: str,
        channels: list[int],
        reductions: list[int],
        norm: Normalization,
        pad_multiple: int = 1,
    ):
        super().__init__()
        self.name = name
        self.channels = list(channels)
        self.reductions = list(reductions)
        self.norm = norm
        self.pad_multiple = pad_multiple
        # Not persistent: a Backbone's state dict holds network weights only, so discriminator
        # trunks and IQA backbones exchange weights key for key.
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected an N x 3 x H x W RGB batch, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"{self.name}: input {tuple(x.shape[-2:])} is smaller than {MIN_SIZE} px")
        x = (x - self.mean) / self.std
        if self.pad_multiple > 1:
            # Patch embeddings need H, W divisible by the patch size. Zero after normalisation is
            # the mean colour: the padded border carries no structure (what timm's dynamic_img_pad does).
            h, w = x.shape[-2:]
            ph, pw = (-h) % self.pad_multiple, (-w) % self.pad_multiple
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph))
        return self.forward_features(x)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, channels={self.channels}, reductions={self.reductions}"


def create_backbone(name: str, weights: str = "random", weights_dir: str | None = None) -> Backbone:
    """Build a backbone record (or "timm:<model>[.<tag>]") with weights resolved by raygrid.weights."""
    if name in BACKBONES:
        spec = BACKBONES[name]
        return _BUILDERS[spec.library](spec, resolve_weights(name, weights, weights_dir))
    if not name.startswith(TIMM_PREFIX):
        raise ValueError(unknown_backbone(name))
    import timm

    model, tag = name[len(TIMM_PREFIX) :].partition(".")[::2]
    if not timm.is_model(model):
        raise ValueError(f"backbone {name!r}: {model!r} is not a timm model (see timm.list_models())")
    return TimmBackbone(name, model, resolve_weights(name, weights, weights_dir), tag=tag or None)


# ---------------------------------------------------------------------------------------------
# VGG-16 in torchvision's layout, max-pooling replaced by L2 pooling (DISTS)
# ---------------------------------------------------------------------------------------------


class L2Pool(nn.Module):
    """sqrt(g * x^2 + 1e-12), g = 3x3 Hann kernel [1,2,1]x[1,2,1]/16, stride 2 (DISTS)."""

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5])  # hanning(5)[1:-1]
        g = a[:, None] * a[None, :]
        g = g / g.sum()
        # persistent=False: derived, and not part of torchvision's state dict.
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=self.channels)
        return (out + 1e-12).sqrt()


# (index of the stage's last ReLU in torchvision's vgg16().features, channels)
_VGG16_STAGE_ENDS = [(3, 64), (8, 128), (15, 256), (22, 512), (29, 512)]


class VGG16Backbone(Backbone):
    """torchvision vgg16().features[:30] (final max-pool dropped), pools at 4/9/16/23 -> L2Pool.

    Module indices stay torchvision's, so `features.N.weight` keys load from vgg16-397923af.pth.
    """

    def __init__(self, name: str, source: WeightSource):
        super().__init__(name, [c for _, c in _VGG16_STAGE_ENDS], [1, 2, 4, 8, 16], source.norm or IMAGENET_NORM)
        self._ends = {end for end, _ in _VGG16_STAGE_ENDS}
        if source.kind == "seeded":
            # VGG-16-R: identical weights on every build, drawn from a private RNG state so the
            # caller's random stream is not advanced.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(source.seed)
                self.features = self._build()
        else:
            self.features = self._build()
            if source.kind == "file":
                self._load(source)

    @staticmethod
    def _build() -> nn.Sequential:
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["D"])[:30]
        for i, layer in enumerate(features):
            if isinstance(layer, nn.MaxPool2d):
                features[i] = L2Pool(features[i - 2].out_channels)
        for m in features:  # torchvision's VGG init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        return features

    def _load(self, source: WeightSource) -> None:
        sd = torch.load(source.path, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        # Accept torchvision's full VGG file (features.* + classifier.*) or a features-only dict.
        feats = {k: v for k, v in sd.items() if k.startswith("features.")}
        if not feats:
            raise ValueError(
                f"{source.path}: no 'features.*' keys; expected a torchvision VGG-16 state dict "
                f"(got keys like {list(sd)[:4]})"
            )
        missing, unexpected = self.load_state_dict(feats, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{source.path}: not a torchvision VGG-16 checkpoint: missing {missing[:6]}, "
                f"unexpected {unexpected[:6]}"
            )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._ends:
                outs.append(x)
        return outs


def _torchvision(spec: BackboneSpec, source: WeightSource) -> Backbone:
    if spec.arch != "vgg16":
        raise ValueError(f"backbone {spec.name!r}: the torchvision builder makes VGG-16 only, not {spec.arch!r}")
    return VGG16Backbone(spec.name, source)


# ---------------------------------------------------------------------------------------------
# timm models (features_only)
# ---------------------------------------------------------------------------------------------


class TimmBackbone(Backbone):
    """timm.create_model(features_only=True); NHWC outputs (Swin) permuted to NCHW.

    Transformers get dynamic_img_size=True (position embeddings / attention masks follow the
    input) and inputs padded to a multiple of the patch size.
    """

    def __init__(
        self,
        name: str,
        model_name: str,
        source: WeightSource,
        tag: str | None = None,
        out_indices: tuple[int, ...] | None = None,
        norm: Normalization | None = None,
    ):
        kw: dict = {"features_only": True}
        if out_indices is not None:
            kw["out_indices"] = out_indices
        if source.kind == "file":
            # timm's own file hook: pretrained_cfg_overlay(file=...) beats hub/url, no network.
            tag = source.tag or tag
            kw.update(pretrained=True, pretrained_cfg_overlay={"file": str(source.path)})
        else:
            kw.update(pretrained=False)
        full_name = f"{model_name}.{tag}" if tag else model_name
        try:
            model = _create_timm(full_name, kw)
        except (RuntimeError, KeyError, ValueError) as e:  # checkpoint filter or strict load failed
            if source.path is None:
                raise
            raise ValueError(f"{source.path}: not a checkpoint of timm model {full_name!r}: {e}") from e
        cfg_norm = None
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if cfg.get("mean") and len(cfg["mean"]) == 3:
            cfg_norm = Normalization(tuple(cfg["mean"]), tuple(cfg["std"]))
        patch = _patch_size(model)
        super().__init__(
            name,
            model.feature_info.channels(),
            model.feature_info.reduction(),
            norm or source.norm or cfg_norm or IMAGENET_NORM,
            pad_multiple=patch,
        )
        self.model = model
        self.nhwc = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self.model(x)
        if self.nhwc:
            outs = [o.permute(0, 3, 1, 2) for o in outs]
        return list(outs)


def _create_timm(name: str, kw: dict) -> nn.Module:
    import timm

    # Size-flexible options only exist for transformer families; CNN constructors reject them.
    for extra in ({"dynamic_img_size": True}, {}):
        try:
            return timm.create_model(name, **kw, **extra)
        except TypeError as e:
            if "dynamic_img_size" not in str(e) or not extra:
                raise
    raise AssertionError("unreachable")


def _patch_size(model: nn.Module) -> int:
    inner = getattr(model, "model", model)  # FeatureGetterNet wraps the ViT as .model
    pe = getattr(inner, "patch_embed", None)
    ps = getattr(pe, "patch_size", None)
    if ps is None:
        return 1
    ps = tuple(ps) if isinstance(ps, (tuple, list)) else (ps, ps)
    return math.lcm(*ps)


def _timm(spec: BackboneSpec, source: WeightSource) -> Backbone:
    return TimmBackbone(spec.name, spec.arch, source, out_indices=spec.blocks)


# ---------------------------------------------------------------------------------------------
# open_clip ViT (visual tower only), token maps at any input size
# ---------------------------------------------------------------------------------------------


class OpenClipViTBackbone(Backbone):
    """open_clip's VisionTransformer; intermediate tokens (class token dropped) reshaped to maps.

    open_clip adds a fixed 14x14 position embedding, so for other sizes the embedding step is
    done here with the position grid resampled (timm's resample_abs_pos_embed, bicubic).
    """

    def __init__(self, name: str, model_name: str, source: WeightSource, blocks: tuple[int, ...] | None):
        if not blocks:
            raise ValueError(f"backbone {name!r}: an open_clip ViT needs the blocks whose tokens are its stages")
        import open_clip

        if source.kind == "file":
            # open_clip's file hook: `pretrained=<path>` loads the whole CLIP checkpoint strictly.
            try:
                clip = open_clip.create_model(model_name, pretrained=str(source.path))
            except (RuntimeError, KeyError, ValueError) as e:
                raise ValueError(f"{source.path}: not a checkpoint of open_clip {model_name!r}: {e}") from e
        else:
            clip = _quiet_open_clip(open_clip, model_name)
        visual = clip.visual
        if not hasattr(visual, "conv1") or not hasattr(visual, "positional_embedding"):
            raise ValueError(f"{model_name}: expected an open_clip VisionTransformer, got {type(visual).__name__}")
        visual.ln_post, visual.proj = nn.Identity(), None  # pooled head unused: frees parameters
        width = visual.conv1.out_channels
        patch = visual.patch_size[0]
        super().__init__(
            name, [width] * len(blocks), [patch] * len(blocks), source.norm or CLIP_NORM, pad_multiple=patch
        )
        self.visual = visual
        self.blocks = list(blocks)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        from timm.layers import resample_abs_pos_embed

        v = self.visual
        x = v.conv1(x)  # N, C, gh, gw
        n, c, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.view(1, 1, -1).expand(n, -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        pos = v.positional_embedding.unsqueeze(0)
        if (gh, gw) != tuple(v.grid_size):
            pos = resample_abs_pos_embed(pos, new_size=[gh, gw], old_size=list(v.grid_size), num_prefix_tokens=1)
        x = v.ln_pre(x + pos.to(x.dtype))
        _, inter = v.transformer.forward_intermediates(x, indices=self.blocks, stop_early=True)
        return [t[:, 1:].transpose(1, 2).reshape(n, c, gh, gw) for t in inter]


def _quiet_open_clip(open_clip, model_name: str) -> nn.Module:
    # Random init is intended here; silence open_clip's "initialized randomly" warning.
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(model_name, pretrained=None)
    finally:
        root.setLevel(level)


def _open_clip(spec: BackboneSpec, source: WeightSource) -> Backbone:
    return OpenClipViTBackbone(spec.name, spec.arch, source, blocks=spec.blocks)


# The builder of each record's `library`.
_BUILDERS: dict[str, Callable[[BackboneSpec, WeightSource], Backbone]] = {
    "torchvision": _torchvision,
    "timm": _timm,
    "open_clip": _open_clip,
}
