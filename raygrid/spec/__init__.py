"""Torch-free records, one per noun of the experiment, and their registries.

  backbones       BackboneSpec: builder, stage layout, pretrained weight files, FLOPs
  datasets        BenchmarkSpec (IQA benchmarks), SRSetSpec (SR sets)
  discriminators  discriminator heads and trunks, GAN losses
  trainables      TrainableSpec: config model, train loop, metrics, needs, FLOPs, lineage
  mlflow          the tag, param and artifact names the MLflow writer and readers share

This package namespace re-exports the vocabulary every layer validates names against.
"""

from raygrid.spec.backbones import BACKBONES, TIMM_PREFIX, is_backbone
from raygrid.spec.datasets import BENCHMARKS, CSV_PREFIX, SR_SETS, is_benchmark
from raygrid.spec.discriminators import (
    DISCRIMINATOR_HEADS,
    DISCRIMINATOR_TRUNKS,
    GAN_LOSSES,
    NO_DISCRIMINATOR,
    discriminator_names,
    split_discriminator,
)

__all__ = [
    "BACKBONES", "BENCHMARKS", "CSV_PREFIX", "DISCRIMINATOR_HEADS", "DISCRIMINATOR_TRUNKS", "GAN_LOSSES",
    "NO_DISCRIMINATOR", "SR_SETS", "TIMM_PREFIX", "discriminator_names", "is_backbone", "is_benchmark",
    "split_discriminator",
]
