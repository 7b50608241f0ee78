"""raygrid data: SR training/test sets, IQA benchmark readers, the offline demo data.

Submodules import torch; this package does not, so `import raygrid.data` stays cheap and names
are resolved on first access:

  raygrid.data.sr       SRTrainSet, SRTestSet, resolve_sr_root
  raygrid.data.iqa      load_benchmark, resolve_benchmark_root, READERS, errors (no torch);
                        IQADataset in raygrid.data.iqa.dataset
  raygrid.data.demo     build_demo
  raygrid.data.images   image files: decoding, writing, ImageDecodeError, DatasetRootError (no torch)
  raygrid.data.tensors  images as tensors, bicubic_downscale
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SRTrainSet": "sr",
    "SRTestSet": "sr",
    "resolve_sr_root": "sr",
    "load_benchmark": "iqa",
    "resolve_benchmark_root": "iqa",
    "IQADataset": "iqa.dataset",
    "READERS": "iqa",
    "BenchmarkFormatError": "iqa",
    "MissingImageError": "iqa",
    "check_images": "iqa",
    "build_demo": "demo",
    "ImageDecodeError": "images",
    "DatasetRootError": "images",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
