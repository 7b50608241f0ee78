"""Networks: feature backbones, the DISTS-style fidelity measure, discriminators + GAN losses,
the SwinIR generator and IQA models. timm / open_clip are imported only when a model needs them.
"""

from raygrid.nets.backbones import Backbone, create_backbone
from raygrid.nets.discriminators import Discriminator, GANLoss, create_discriminator
from raygrid.nets.fidelity import FidelityMeasure, create_fidelity, fit_alpha_beta
from raygrid.nets.generator import SWINIR_PRESETS, create_swinir
from raygrid.nets.iqa import create_iqa_model

__all__ = [
    "SWINIR_PRESETS",
    "Backbone",
    "Discriminator",
    "FidelityMeasure",
    "GANLoss",
    "create_backbone",
    "create_discriminator",
    "create_fidelity",
    "create_iqa_model",
    "create_swinir",
    "fit_alpha_beta",
]
