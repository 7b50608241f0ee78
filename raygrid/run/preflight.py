"""Preflight: everything a trial would fail on later, checked before Ray starts or MLflow is
written to.

- Weights: each trainable's record (raygrid.spec.trainables) says which pretrained files its
  trials need; every one must resolve (nothing downloads).
- Data: every dataset folder the plan needs exists and holds files; an IQA benchmark's label
  file parses and names images that exist (the same reader the trial uses, on the labels only:
  no image is decoded); an SR test set pairs its HR and LR images; every image of an SR training
  set is at least the trials' `hr_crop` (read from the file's header, not decoded). The demo sets
  are built here, in raygrid's cache.
- Services: the MLflow tracking server and the Tune storage (and an S3 data root) answer within a
  few seconds (`check_services`), instead of a client retrying for minutes.

Each problem stops the sweep with one `SpaceError` line naming the file (or option) and what was
expected.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlparse

from raygrid import io
from raygrid.space import SpaceError, Sweep
from raygrid.spec.generators import resolve_checkpoint
from raygrid.spec.trainables import (
    BackboneWeights,
    GeneratorCheckpoint,
    LocalFile,
    NRMetric,
    WeightNeed,
    of,
)

SERVICE_TIMEOUT_S = 5.0  # per check; a dead port answers at once, a black hole takes this long


def weight_needs(sweep: Sweep) -> list[tuple[str, WeightNeed]]:
    """(stage, need) for every pretrained component and named file the sweep's trials load."""
    needs = {(name, need) for name, stage in sweep.stages.items() for t in stage.trials
             for need in of(t.config).weight_needs(t.config)}
    return sorted(needs, key=lambda n: (type(n[1]).__name__, n[0], repr(n[1])))


def preflight(sweep: Sweep, data_root: str, weights_dir: str | None | Callable[[], str | None],
              endpoint_url: str | None = None) -> str | None:
    """Every check, cheapest first: the datasets (labels and image headers), then the weights,
    then the prepared stores. `weights_dir` may be a function that resolves it (building the
    demo's weights takes seconds): it runs only once the data checks passed. Returns the weights dir."""
    check_datasets(sweep, data_root, endpoint_url)
    if callable(weights_dir):
        weights_dir = weights_dir()
    check_weights_and_files(sweep, weights_dir)
    check_sr_stores(sweep, data_root)
    return weights_dir


def check_weights_and_files(sweep: Sweep, weights_dir: str | None) -> None:
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


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def check_datasets(sweep: Sweep, data_root: str, endpoint_url: str | None = None) -> None:
    """The data checks of the module docstring. An S3 data root is only checked for existence
    (`check_services`): its sets are mirrored by the readers on first use."""
    sr, iqa, crops = set(), set(), {}
    where: dict[str, str] = {}  # dataset -> the stage that first needs it (for the error line)
    for name, stage in sweep.stages.items():
        for t in stage.trials:
            needs = of(t.config).datasets(t.config)
            sr |= needs.sr_sets
            iqa |= needs.benchmarks
            for s in needs.sr_sets | needs.benchmarks:
                where.setdefault(s, name)
            for s, crop in needs.sr_crops:
                crops[s] = max(crops.get(s, 0), crop)
    if any(n.startswith("demo_") for n in sr | iqa):
        from raygrid.data.demo import build_demo

        t0 = time.time()
        build_demo()
        print(f"demo data ready under {io.cache_root()} ({time.time() - t0:.1f} s)")
    remote = io.is_s3(data_root)
    for name in sorted(sr):
        if remote and not name.startswith("demo_"):
            continue
        _check_sr_set(sweep, where[name], name, data_root, crops.get(name))
    for name in sorted(iqa):
        if remote and not name.startswith("demo_"):
            continue
        _check_benchmark(sweep, where[name], name, data_root)


def _fail(sweep: Sweep, stage: str, what: str, message: str) -> SpaceError:
    return SpaceError(sweep.source, f"stages.{stage} ({what})", message)


def _check_sr_set(sweep: Sweep, stage: str, name: str, data_root: str, crop: int | None) -> None:
    from raygrid.data.images import DatasetRootError, list_images
    from raygrid.data.sr import SRTestSet, resolve_sr_root

    root = resolve_sr_root(name, data_root)
    if io.is_s3(root):
        return
    what = f"SR set {name!r}"
    if not Path(root).is_dir():
        raise _fail(sweep, stage, what, f"folder {root} does not exist")
    if crop is None:  # a validation/test set: HR images and, if there is an LR folder, their pairs
        try:
            SRTestSet(root)
        except (DatasetRootError, FileNotFoundError) as e:
            raise _fail(sweep, stage, what, str(e)) from None
        return
    paths = list_images(root, recursive=True)
    if not paths:
        raise _fail(sweep, stage, what, f"no images in {root}")
    small = _smaller_than(paths, crop)
    if small:
        path, (w, h) = small[0]
        more = f" (and {len(small) - 1} more)" if len(small) > 1 else ""
        raise _fail(sweep, stage, what, f"HR image {path} is {w}x{h}, smaller than data.hr_crop={crop}{more}; "
                    f"expected every training image to be at least {crop}x{crop}")


def _smaller_than(paths: list[str], crop: int) -> list[tuple[str, tuple[int, int]]]:
    """Images whose header says they are smaller than crop x crop; a file that is not an image
    at all is reported with size (0, 0). Reads headers only (PIL opens lazily)."""
    from PIL import Image, UnidentifiedImageError

    small = []
    for path in paths:
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            small.append((path, (0, 0)))
            continue
        if w < crop or h < crop:
            small.append((path, (w, h)))
    return small


def _check_benchmark(sweep: Sweep, stage: str, name: str, data_root: str) -> None:
    from raygrid.data.images import DatasetRootError
    from raygrid.data.iqa import (
        BenchmarkFormatError,
        load_benchmark,
        resolve_benchmark_root,
    )

    root = resolve_benchmark_root(name, data_root)
    if io.is_s3(root):
        return
    what = f"benchmark {name!r}"
    if not Path(root).is_dir():
        raise _fail(sweep, stage, what, f"folder {root} does not exist")
    if not any(Path(root).iterdir()):
        raise _fail(sweep, stage, what, f"folder {root} is empty; expected its label file and images")
    try:
        load_benchmark(name, root)  # parses the labels, checks each named image exists; decodes none
    except (DatasetRootError, BenchmarkFormatError, FileNotFoundError, ImportError) as e:
        raise _fail(sweep, stage, what, str(e).replace("\n", " ")) from None


# ---------------------------------------------------------------------------------------------
# Services: tracking server, Tune storage, S3 data root
# ---------------------------------------------------------------------------------------------


def check_services(tracking_uri: str, storage_uri: str, data_root: str, endpoint_url: str | None) -> None:
    """Each service answers within SERVICE_TIMEOUT_S, or one line naming the option."""
    if tracking_uri.startswith(("http://", "https://")):
        _check_http(tracking_uri)
    elif tracking_uri.startswith("sqlite:///"):
        _check_sqlite(tracking_uri)
    for option, uri in (("--storage", storage_uri), ("--data-root", data_root)):
        if io.is_s3(uri):
            _check_s3(option, uri, endpoint_url)


def _check_sqlite(uri: str) -> None:
    """The database file's folder is a writable folder, or can be made under one (MLflow makes
    the file): so that a bad path fails here, before Ray starts, not when the sweep run opens."""
    import os

    folder = Path(uri[len("sqlite:///"):]).parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        what = "is not a writable folder" if existing is not None else "does not exist"
        raise SpaceError("--tracking-uri", "", f"MLflow at {uri} is not usable: {existing or folder} {what}; "
                         "expected a path to a file in a writable folder")


def _check_http(uri: str) -> None:
    import urllib.error
    import urllib.request

    parsed = urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=SERVICE_TIMEOUT_S).close()
    except OSError as e:
        raise SpaceError("--tracking-uri", "", f"{uri}: cannot connect ({e.strerror or e}); expected a running "
                         "MLflow server there (on a cluster: the SSH tunnel of the README)") from None
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=SERVICE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # it answers HTTP: a server without /health, or one that wants credentials for it
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SpaceError("--tracking-uri", "", f"{uri}: no HTTP answer in {SERVICE_TIMEOUT_S:g} s ({reason}); "
                         "expected an MLflow server") from None


def _check_s3(option: str, uri: str, endpoint_url: str | None) -> None:
    import pyarrow.fs

    def probe() -> str | None:
        fs, path = io.filesystem(uri, endpoint_url)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
            return f"bucket {bucket!r} does not exist"
        if option == "--data-root" and fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return f"{uri} does not exist"
        return None

    pool = ThreadPoolExecutor(1)
    try:
        problem = pool.submit(probe).result(timeout=2 * SERVICE_TIMEOUT_S)
    except FutureTimeout:
        problem = f"no answer in {2 * SERVICE_TIMEOUT_S:g} s"
    except Exception as e:  # OSError from pyarrow: wrong endpoint, credentials, DNS
        problem = " ".join(str(e).split())[:300]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if problem:
        where = f" at {io.endpoint(endpoint_url)}" if io.endpoint(endpoint_url) else ""
        raise SpaceError(option, "", f"{uri}{where}: {problem}")
