"""IQA benchmarks: every benchmark's labels become one table (`load_benchmark`), read by the
reader its record names (raygrid.spec.datasets), served by `IQADataset`
(`raygrid.data.iqa.dataset`, not imported here: reading and checking labels needs no torch).

  table      load_benchmark, resolve_benchmark_root, splits, subset, check_images, item_ids
  readers    the original label formats (READERS, by label format)
  pyiqa_csv  pyiqa's meta-info CSVs (and generic "csv:" sets)
  parsing    errors, row records and parsing helpers shared by the readers
  dataset    IQADataset
"""

from raygrid.data.iqa.parsing import BenchmarkFormatError, MissingImageError
from raygrid.data.iqa.readers import LIVE_FOLDERS, READERS
from raygrid.data.iqa.table import (
    check_images,
    item_ids,
    load_benchmark,
    open_benchmark,
    resolve_benchmark_root,
    split_groups,
    subset,
)

__all__ = [
    "LIVE_FOLDERS", "READERS", "BenchmarkFormatError", "MissingImageError", "check_images",
    "item_ids", "load_benchmark", "open_benchmark", "resolve_benchmark_root", "split_groups", "subset",
]
