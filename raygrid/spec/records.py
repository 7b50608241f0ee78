"""What a run records besides its scalar metrics: per-item score tables, the evaluator record and
the sample crops — their file names in a checkpoint, their artifact names in MLflow, and the
tables' columns. The train loops write them (raygrid.stages.loop.report(files=...)), the Tune
driver's callback logs them (raygrid.run.tracking), the analysis reads them. docs/records.md
describes all three.

Torch-free (pyarrow and pandas only): the analysis and the callback import it.

Per-item tables are Parquet (zstd) with a fixed schema per stage. Scores are stored as float32:
seven significant digits are more than any evaluator resolves, and they halve the size (the paper
grid's optimize table is ~23 KB per evaluation instead of ~40 KB).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

# -- files in a reported checkpoint directory ---------------------------------------------------
CKPT_SCORES = "scores.parquet"  # per-item scores at this report's step
CKPT_EVALUATORS = "evaluators.json"  # the typed evaluator record (first report of each (re)start)
CKPT_SAMPLES = "samples"  # samples/<crop id>.png: the SR crops at this step

# -- MLflow artifacts and images -------------------------------------------------------------------
ARTIFACT_SCORES = "scores/step_{step:08d}.parquet"  # a trial run's per-item table at `step`
ARTIFACT_SCORES_DIR = "scores"
ARTIFACT_EVALUATORS = "evaluators.json"  # a trial run's evaluator record (optimize: its panel; assess, transfer: its measure)
ARTIFACT_CROPS = "samples/crops.json"  # the sweep run's sample crops
IMAGE_SR = "sr/{id}"  # log_image key on a trial run, at each evaluation step
IMAGE_HR = "hr/{id}"  # on the sweep run, step 0
IMAGE_BICUBIC = "bicubic/{id}"  # on the sweep run, step 0
# a tag on a trial run: steps whose checkpoint was gone before the callback could read its files
TAG_RECORDS_MISSING = "raygrid.records_missing"

# -- per-item tables -----------------------------------------------------------------------------
# (column, pyarrow type name) in order; "string", "float32", "bool"
SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {
    # optimize, every evaluation: one row per (role, set, image, evaluator); `value` is the
    # evaluator's raw score (its direction is in the evaluator record)
    "optimize": (("role", "string"), ("set", "string"), ("image", "string"), ("evaluator", "string"),
                 ("value", "float32")),
    # assess, once: one row per distorted image; `pred` is the measure's raw distance
    "assess": (("benchmark", "string"), ("item", "string"), ("ref_id", "string"), ("split", "string"),
               ("pred", "float32"), ("lower_better", "bool"), ("score", "float32")),
    # transfer, every evaluation: one row per (role, benchmark, image)
    "transfer": (("role", "string"), ("benchmark", "string"), ("item", "string"), ("ref_id", "string"),
                 ("pred", "float32"), ("score", "float32")),
}

# the keys of one entry of evaluators.json, in order
EVALUATOR_KEYS = ("name", "metric", "family", "mode", "higher_better", "range", "backbone", "weights", "shares")
SHARES = ("loss", "discriminator")


def _schema(kind: str):
    import pyarrow as pa

    if kind not in SCHEMAS:
        raise ValueError(f"unknown score table kind {kind!r}; expected one of {', '.join(SCHEMAS)}")
    types = {"string": pa.string(), "float32": pa.float32(), "bool": pa.bool_()}
    return pa.schema([(name, types[t]) for name, t in SCHEMAS[kind]])


def table_bytes(kind: str, columns: Mapping[str, Sequence[Any]]) -> bytes:
    """A per-item table of `kind` as Parquet bytes; exactly the schema's columns, or ValueError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(kind)
    expected = schema.names
    if sorted(columns) != sorted(expected):
        raise ValueError(f"{kind} score table: columns {sorted(columns)}, expected {expected}")
    table = pa.Table.from_pydict({k: list(columns[k]) for k in expected}, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_table(source, kind: str | None = None):
    """A per-item table (Parquet bytes, a path or a file object) as a pandas DataFrame; with `kind`,
    its columns are checked against the schema."""
    import pyarrow.parquet as pq

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    table = pq.read_table(source)
    if kind is not None and table.schema.names != _schema(kind).names:
        raise ValueError(f"{kind} score table: columns {table.schema.names}, expected {_schema(kind).names}")
    return table.to_pandas()


def check_evaluator_record(record: Any, where: str = "evaluators.json") -> list[dict[str, Any]]:
    """The record's entries, checked key by key (one line naming the entry and key otherwise)."""
    if not isinstance(record, list) or not record:
        raise ValueError(f"{where}: expected a non-empty list of evaluator entries")
    for i, entry in enumerate(record):
        if not isinstance(entry, dict) or tuple(entry) != EVALUATOR_KEYS:
            keys = list(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"{where}[{i}]: keys {keys}, expected {list(EVALUATOR_KEYS)}")
        if entry["mode"] not in ("FR", "NR") or not isinstance(entry["higher_better"], bool):
            raise ValueError(f"{where}[{i}] ({entry['name']}): mode must be FR|NR and higher_better a bool")
        rng = entry["range"]
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and rng[0] < rng[1]):
            raise ValueError(f"{where}[{i}] ({entry['name']}): range must be [lo, hi] with lo < hi, or null")
        if not isinstance(entry["shares"], list) or any(s not in SHARES for s in entry["shares"]):
            raise ValueError(f"{where}[{i}] ({entry['name']}): shares must be a list of {list(SHARES)}")
    return record
