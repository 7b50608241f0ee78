"""Networks: feature backbones, the DISTS-style fidelity measure, discriminators + GAN losses,
the SR generators (SwinIR, RRDBNet, HAT) and IQA models. timm / open_clip are imported only when a model needs them.
"""

from raygrid.nets.backbones import Backbone, create_backbone
from raygrid.nets.discriminators import Discriminator, GANLoss, create_discriminator
from raygrid.nets.fidelity import FidelityMeasure, create_fidelity, fit_alpha_beta
from raygrid.nets.generators import create_generator
from raygrid.nets.iqa import create_iqa_model

__all__ = [
    "Backbone",
    "Discriminator",
    "FidelityMeasure",
    "GANLoss",
    "create_backbone",
    "create_discriminator",
    "create_fidelity",
    "create_generator",
    "create_iqa_model",
    "fit_alpha_beta",
]
