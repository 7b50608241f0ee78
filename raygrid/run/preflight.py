"""Preflight: everything a trial would fail on later, checked before anything starts.

Each trainable's record (raygrid.spec.trainables) says which pretrained files and datasets its
trials need; the preflight checks them all and stops the sweep with one line naming the file and
the key. Nothing downloads; the demo data is built here when a stage uses it.
"""

from __future__ import annotations

import time
from pathlib import Path

from raygrid import io
from raygrid.space import SpaceError, Sweep
from raygrid.spec.generators import resolve_checkpoint
from raygrid.spec.trainables import BackboneWeights, GeneratorCheckpoint, LocalFile, NRMetric, WeightNeed, of


def weight_needs(sweep: Sweep) -> list[tuple[str, WeightNeed]]:
    """(stage, need) for every pretrained component and named file the sweep's trials load."""
    needs = {(name, need) for name, stage in sweep.stages.items() for t in stage.trials
             for need in of(t.config).weight_needs(t.config)}
    return sorted(needs, key=lambda n: (type(n[1]).__name__, n[0], repr(n[1])))


def preflight(sweep: Sweep, data_root: str, weights_dir: str | None) -> None:
    from raygrid.weights import MissingWeightsError, check_weights

    needs = weight_needs(sweep)
    for stage, need in (n for n in needs if isinstance(n[1], BackboneWeights)):
        try:
            check_weights(need.backbone, need.weights, weights_dir)
        except (MissingWeightsError, ValueError) as e:
            raise SpaceError(sweep.source, f"stages.{stage}.{need.key}", str(e).replace("\n", " ")) from None
    metrics = [n for n in needs if isinstance(n[1], NRMetric)]
    if metrics:
        from raygrid.metrics.panel import check_pyiqa_metric

        for stage, need in metrics:
            try:
                check_pyiqa_metric(need.name, weights_dir)
            except (ImportError, ValueError, FileNotFoundError) as e:
                raise SpaceError(sweep.source, f"stages.{stage}.{need.key}", str(e).replace("\n", " ")) from None
    for stage, need in (n for n in needs if isinstance(n[1], GeneratorCheckpoint)):
        where = f"stages.{stage}.{need.key}"
        if io.is_s3(need.checkpoint):
            if not io.exists(need.checkpoint):
                raise SpaceError(sweep.source, where, f"generator checkpoint {need.checkpoint} does not exist in S3")
            continue
        try:
            resolve_checkpoint(need.arch, need.preset, need.checkpoint, weights_dir, scale=need.scale, verify=False)
        except (ValueError, FileNotFoundError) as e:  # MissingWeightsError is a FileNotFoundError
            raise SpaceError(sweep.source, where, str(e).replace("\n", " ")) from None
    for stage, need in (n for n in needs if isinstance(n[1], LocalFile)):
        if not io.is_s3(need.path) and not Path(need.path).expanduser().is_file():
            raise SpaceError(sweep.source, f"stages.{stage}.{need.key}", f"{need.what} {need.path} does not exist")
    check_datasets(sweep, data_root)
    check_sr_stores(sweep, data_root)


def check_sr_stores(sweep: Sweep, data_root: str) -> None:
    """The prepared SR stores trials read (`data.store`), checked against their sources here, or
    prepared here with `data.store_on_mismatch: rebuild`, so that no trial starts on a stale one.
    A store of a training set in S3 is checked by the trials (opening it mirrors the set)."""
    import os

    from raygrid.data.images import DatasetRootError, ImageDecodeError
    from raygrid.data.sr import resolve_sr_root
    from raygrid.data.sr_store import StoreError, find_store, open_store, prepare

    seen = set()
    for name, stage in sweep.stages.items():
        for t in stage.trials:
            data = getattr(t.config, "data", None)
            if getattr(data, "store", None) is None or (data.train, data.store, data.store_on_mismatch) in seen:
                continue
            seen.add((data.train, data.store, data.store_on_mismatch))
            root = resolve_sr_root(data.train, data_root)
            try:
                if data.store != "auto" and data.store_on_mismatch == "rebuild":
                    prepare(data.train, out=data.store, data_root=data_root, workers=max(1, (os.cpu_count() or 2) - 1))
                elif not io.is_s3(root) and data.store == "auto":
                    find_store(root, root, data.store_on_mismatch)
                elif not io.is_s3(root):
                    open_store(root, data.store, data.store_on_mismatch)
            except (StoreError, DatasetRootError, ImageDecodeError) as e:
                raise SpaceError(sweep.source, f"stages.{name}.data.store", str(e).replace("\n", " ")) from None


def check_datasets(sweep: Sweep, data_root: str) -> None:
    """Build the demo sets if used; check that every other dataset's folder exists (local roots)."""
    from raygrid.data.iqa import resolve_benchmark_root
    from raygrid.data.sr import resolve_sr_root

    sr, iqa = set(), set()
    for stage in sweep.stages.values():
        for t in stage.trials:
            needs = of(t.config).datasets(t.config)
            sr |= needs.sr_sets
            iqa |= needs.benchmarks
    if any(n.startswith("demo_") for n in sr | iqa):
        from raygrid.data.demo import build_demo

        t0 = time.time()
        build_demo(data_root)
        print(f"demo data ready under {io.local_root(data_root)} ({time.time() - t0:.1f} s)")
    if io.is_s3(data_root):
        return  # mirrored by the readers on first use
    for name in sorted(sr):
        root = resolve_sr_root(name, data_root)
        if not io.is_s3(root) and not Path(root).exists():
            raise SpaceError(sweep.source, "data_root", f"SR set {name!r}: folder {root} does not exist")
    for name in sorted(iqa):
        root = resolve_benchmark_root(name, data_root)
        if not io.is_s3(root) and not Path(root).exists():
            raise SpaceError(sweep.source, "data_root", f"benchmark {name!r}: folder {root} does not exist")
