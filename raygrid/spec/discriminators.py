"""Discriminators ("none", or "<head>_<trunk>") and GAN losses: the names a search space may use.

Heads: `vanilla` (image-level, one logit per image) and `patch` (patch-level, one logit per
position). Trunks: `conv` (a plain spectral-norm conv trunk trained from scratch) or a backbone of
`raygrid.spec.backbones`. docs/models.md describes both. No torch here.
"""

from __future__ import annotations

DISCRIMINATOR_HEADS = ("vanilla", "patch")  # image-level (one logit) / patch-level (N×1×h×w)
DISCRIMINATOR_TRUNKS = ("conv", "vgg16", "resnet50", "dinov2_vits14")  # conv = plain conv trunk
CONV_TRUNK = "conv"
NO_DISCRIMINATOR = "none"
CONV_TRUNK_GFLOPS = 12.299  # forward GFLOPs of one 224x224 image through the conv trunk

GAN_LOSSES = ("vanilla", "hinge", "relativistic", "lsgan")


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


def trunk_of(name: str) -> str | None:
    """The trunk a discriminator name builds on; None for 'none'."""
    return None if name == NO_DISCRIMINATOR else split_discriminator(name)[1]
