"""A prepared store of SR training images: decoded once, read a crop at a time.

Layout of a store folder (default: next to the source folder, `<source>.srstore`):

    manifest.json      format, version, and per source image: name (relative path), size,
                       mtime_ns, sha256, shape, array file (or the decode error of a file that
                       was skipped as unreadable)
    arrays/000000.npy  the decoded image, uint8 HWC RGB exactly as `read_rgb` returns it, one
                       uncompressed .npy per image, read with np.load(mmap_mode="r") so a crop
                       touches only its own rows
    COMPLETE           written last; holds the sha256 of manifest.json

A store is built in a temporary folder beside its target and renamed into place, so a folder
without a matching COMPLETE (an interrupted build) is never read. Opening a store checks its
manifest against the source folder: the same files, each with the size recorded and, if its
mtime differs, the same sha256. A store that is missing, incomplete or stale is rebuilt or
refused (`on_mismatch`) with one line naming the file. docs/data-path.md says why this format.

S3: a store at an s3:// URI is mirrored into the local cache and read there; it is never
rewritten by a reader (with on_mismatch="rebuild" a stale one is rebuilt into a private local
folder instead). `raygrid data prepare` publishes a store to S3 (marker last).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from raygrid.data.images import (
    DatasetRootError,
    ImageDecodeError,
    list_images,
    read_rgb,
)
from raygrid.errors import PermanentError

log = logging.getLogger(__name__)

FORMAT, VERSION = "raygrid-sr-store", 1
MANIFEST, MARKER, ARRAYS = "manifest.json", "COMPLETE", "arrays"
STORE_SUFFIX = ".srstore"
OnMismatch = Literal["refuse", "rebuild"]
OPEN_ARRAYS = 64  # memmaps kept open per process (each holds a file descriptor)


class StoreError(PermanentError, RuntimeError):
    """A store that is missing, incomplete or does not match its sources (one line, names the file)."""


def default_store_location(source: str) -> str:
    """`<source>.srstore` beside the source folder (or s3:// prefix), where "auto" looks."""
    return source.rstrip("/").rstrip(os.sep) + STORE_SUFFIX


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _names(source_dir: str) -> tuple[list[str], list[str]]:
    paths = list_images(source_dir, recursive=True)
    if not paths:
        raise DatasetRootError(f"SR training set: no images in {source_dir}")
    return paths, [Path(p).relative_to(source_dir).as_posix() for p in paths]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class SRStore:
    """A complete, verified store: `array(i)` is image i (source order) as a read-only memmap."""

    def __init__(self, location: str, manifest: dict[str, Any]):
        self.location, self.manifest = location, manifest
        self.entries: list[dict[str, Any]] = manifest["images"]
        self.names = [e["name"] for e in self.entries]
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def array(self, i: int) -> np.ndarray:
        arr = self._open.get(i)
        if arr is not None:
            self._open.move_to_end(i)
            return arr
        entry = self.entries[i]
        if entry["array"] is None:  # skipped at build time; the reader treats it like the PNG
            raise ImageDecodeError(entry["name"], entry["error"], listed_at=self.location)
        arr = np.load(os.path.join(self.location, entry["array"]), mmap_mode="r")
        self._open[i] = arr
        if len(self._open) > OPEN_ARRAYS:
            self._open.popitem(last=False)
        return arr

    def __getstate__(self) -> dict[str, Any]:  # spawned workers reopen their own memmaps
        return {**self.__dict__, "_open": OrderedDict()}


def _read_manifest(location: str) -> dict[str, Any] | None:
    """The manifest of a complete store, or None (no folder, no marker, marker not matching)."""
    folder = Path(location)
    try:
        raw = (folder / MANIFEST).read_bytes()
        marker = (folder / MARKER).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if marker != hashlib.sha256(raw).hexdigest():
        return None
    manifest = json.loads(raw)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        return None
    manifest["digest"] = marker
    return manifest


def _verified_file(location: str, manifest: dict[str, Any]) -> Path:
    """Per machine: the source stats last verified by hash against this store's manifest."""
    from raygrid.io import cache_root

    key = hashlib.sha256(f"{os.path.abspath(location)}\0{manifest['digest']}".encode()).hexdigest()[:24]
    return cache_root() / "sr-store-verified" / f"{key}.json"


def mismatch(manifest: dict[str, Any], source_dir: str, verify: Literal["stat", "sha256"] = "stat",
             verified: dict[str, list[int]] | None = None) -> str | None:
    """Why the store does not match `source_dir` (naming the file), or None if it does.

    "stat": a file with the recorded size and mtime (or the size and mtime it had when it was last
    hashed on this machine, `verified`) is taken as unchanged; any other file is hashed.
    "sha256": every file is hashed.
    """
    paths, names = _names(source_dir)
    recorded = {e["name"]: e for e in manifest["images"]}
    for path, name in zip(paths, names):
        if name not in recorded:
            return f"source {path} is not in the store (added after it was built)"
    for name in sorted(recorded.keys() - set(names)):
        return f"source {os.path.join(source_dir, name)} is in the store but no longer in the source folder"
    if [e["name"] for e in manifest["images"]] != names:
        return "the store lists its images in another order than the source folder"
    verified = {} if verified is None else verified
    for path, name in zip(paths, names):
        entry, st = recorded[name], os.stat(path)
        if st.st_size != entry["size"]:
            return f"source {path} changed: {entry['size']} bytes when the store was built, {st.st_size} now"
        stat = [st.st_size, st.st_mtime_ns]
        # A copy or an S3 sync moves the mtime without changing the content: only then hash it.
        if verify == "sha256" or (st.st_mtime_ns != entry["mtime_ns"] and verified.get(name) != stat):
            if _sha256(path) != entry["sha256"]:
                return f"source {path} changed since the store was built (sha256 differs)"
            verified[name] = stat
    return None


def _diagnose(location: str, source_dir: str, verify) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) for a complete store matching its sources; else (manifest or None, why)."""
    manifest = _read_manifest(location)
    if manifest is None:
        if os.path.exists(location):
            return None, "is incomplete (no COMPLETE marker matching its manifest: a build was interrupted)"
        return None, "does not exist"
    cache = _verified_file(location, manifest)
    try:
        verified = json.loads(cache.read_text())
    except (FileNotFoundError, ValueError):
        verified = {}
    before = dict(verified)
    why = mismatch(manifest, source_dir, verify, verified)
    if why is None and verified != before:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(verified, f)
        os.replace(tmp, cache)
    return manifest, (None if why is None else f"does not match its sources: {why}")


@contextmanager
def _locked(location: str):
    """One builder per store on this machine; others wait, then find the store built."""
    lock = Path(f"{location.rstrip(os.sep)}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _refusal(location: str, source: str, why: str) -> StoreError:
    return StoreError(f"SR store {location} {why}; rebuild it with `raygrid data prepare {source} "
                      f"--out {location}` or open it with on_mismatch='rebuild'")


def open_store(source_dir: str, location: str, on_mismatch: OnMismatch = "refuse",
               verify: Literal["stat", "sha256"] = "stat", skip_unreadable: bool = False,
               endpoint_url: str | None = None, source: str | None = None) -> SRStore:
    """The verified store at `location` (local path or s3:// URI) for the local `source_dir`.

    on_mismatch: "refuse" raises StoreError (one line naming the store and the file); "rebuild"
    builds it anew (under a lock; unchanged images are reused). `source` is how the source is
    named in messages (e.g. its s3:// URI), default `source_dir`.
    """
    if on_mismatch not in ("refuse", "rebuild"):
        raise ValueError(f"on_mismatch must be 'refuse' or 'rebuild', got {on_mismatch!r}")
    shown = source or source_dir
    if location.startswith("s3://"):
        local = fetch_store(location, endpoint_url) or _mirror_dir(location)
        manifest, why = _diagnose(local, source_dir, verify)
        if why is None:
            return SRStore(local, manifest)
        if on_mismatch == "refuse":
            raise _refusal(location, shown, why)
        # Never rewrite a shared prefix from a trial: rebuild into a private local folder.
        log.warning("SR store %s %s; using a local rebuild at %s.rebuilt", location, why, local)
        location = local + ".rebuilt"
    manifest, why = _diagnose(location, source_dir, verify)
    if why is None:
        return SRStore(location, manifest)
    if on_mismatch == "refuse":
        raise _refusal(location, shown, why)
    with _locked(location):
        manifest, why = _diagnose(location, source_dir, verify)  # rebuilt by another process meanwhile?
        if why is not None:
            log.warning("SR store %s %s; rebuilding it", location, why)
            build_store(source_dir, location, skip_unreadable=skip_unreadable, reuse=manifest)
            manifest = _read_manifest(location)
    return SRStore(location, manifest)


def find_store(source: str, source_dir: str, on_mismatch: OnMismatch = "refuse",
               endpoint_url: str | None = None) -> SRStore | None:
    """The store at the default location of `source` if one was prepared there, else None."""
    location = default_store_location(source)
    if location.startswith("s3://"):
        if fetch_store(location, endpoint_url) is None:
            return None
    elif not os.path.exists(location):
        return None
    return open_store(source_dir, location, on_mismatch, endpoint_url=endpoint_url, source=source)


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def _prepare_one(job: tuple[str, str, str, dict | None, str | None, bool]) -> dict[str, Any]:
    """Decode one source into its .npy (or link the previous store's array if unchanged)."""
    path, name, dest, old_entry, old_array, skip_unreadable = job
    st = os.stat(path)
    entry = {"name": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path),
             "array": os.path.relpath(dest, Path(dest).parent.parent), "shape": None, "error": None}
    if old_entry and old_array and old_entry["sha256"] == entry["sha256"] and os.path.isfile(old_array):
        try:
            os.link(old_array, dest)
        except OSError:
            shutil.copyfile(old_array, dest)
        return {**entry, "shape": old_entry["shape"]}
    try:
        arr = read_rgb(path)
    except ImageDecodeError as exc:
        if not skip_unreadable:
            raise
        return {**entry, "array": None, "error": str(exc)}
    with open(dest, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())  # data on disk before the marker that vouches for it
    return {**entry, "shape": list(arr.shape)}


def build_store(source_dir: str, location: str, workers: int = 1, skip_unreadable: bool = False,
                reuse: dict[str, Any] | None = None) -> str:
    """Decode every image under `source_dir` into a new store at `location` (replacing one there).

    reuse: the manifest of the store being replaced; its arrays for unchanged sources (same name
    and sha256) are hard-linked instead of decoded again.
    """
    paths, names = _names(source_dir)
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
    old = {e["name"]: e for e in (reuse or {}).get("images", [])}
    try:
        (tmp / ARRAYS).mkdir()
        jobs = []
        for i, (path, name) in enumerate(zip(paths, names)):
            e = old.get(name)
            old_array = str(target / e["array"]) if e and e.get("array") else None
            jobs.append((path, name, str(tmp / ARRAYS / f"{i:06d}.npy"), e, old_array, skip_unreadable))
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                entries = list(pool.map(_prepare_one, jobs, chunksize=4))
        else:
            entries = [_prepare_one(j) for j in jobs]
        manifest = {"format": FORMAT, "version": VERSION, "source": source_dir, "created": time.time(),
                    "images": entries}
        raw = json.dumps(manifest, indent=1).encode()
        (tmp / MANIFEST).write_bytes(raw)
        (tmp / MARKER).write_text(hashlib.sha256(raw).hexdigest() + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if target.exists():  # swap: readers holding memmaps of the old arrays keep them
            trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.rename(target, trash / "store")
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    skipped = sum(e["array"] is None for e in entries)
    log.info("built SR store %s: %d images%s", location, len(entries), f", {skipped} unreadable skipped" * bool(skipped))
    return location


# ---------------------------------------------------------------------------------------------
# S3 boundary: the only functions that talk to S3 (through raygrid.io)
# ---------------------------------------------------------------------------------------------


def _mirror_dir(uri: str) -> str:
    from raygrid.io import mirror_dir

    return mirror_dir(uri)


def fetch_store(uri: str, endpoint_url: str | None = None) -> str | None:
    """Mirror the store at an s3:// URI into the local cache; None if the prefix holds nothing."""
    from raygrid.io import ensure_local

    try:
        return ensure_local(uri, endpoint_url)
    except FileNotFoundError:
        return None


def publish_store(local: str, uri: str, endpoint_url: str | None = None) -> bool:
    """Upload a complete local store to an s3:// prefix unless the same store (same marker) is
    there already; returns whether it uploaded. The old marker goes first and the new one last,
    so a reader syncing meanwhile sees an incomplete store, never a mixed one; objects of an
    older store that this one lacks are deleted."""
    from raygrid import io

    marker = Path(local, MARKER).read_bytes()
    if io.read_bytes(io.join(uri, MARKER), endpoint_url) == marker:
        return False
    io.publish(local, uri, endpoint_url, last=MARKER)
    return True


# ---------------------------------------------------------------------------------------------
# `raygrid data prepare`
# ---------------------------------------------------------------------------------------------


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="SR training set name (e.g. df2k) or folder / s3:// prefix of HR images")
    p.add_argument("--out", help="store location (folder or s3:// prefix); default <source>.srstore")
    p.add_argument("--data-root", default=None, help="root that set names resolve under")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="decoding processes")
    p.add_argument("--skip-unreadable", action="store_true", help="record undecodable files instead of failing")
    p.add_argument("--force", action="store_true", help="rebuild even if the store matches its sources")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (MinIO, moto); default from the environment")


def prepare(source: str, out: str | None = None, data_root: str | None = None, workers: int = 1,
            skip_unreadable: bool = False, force: bool = False, endpoint_url: str | None = None) -> str:
    """Build (or confirm up to date) the store of an SR training set; returns its location.

    An s3:// source is synced to the local cache first; an s3:// `out` is built in the local
    cache and published (only if what is there differs).
    """
    from raygrid import io
    from raygrid.data.sr import resolve_sr_root

    root = resolve_sr_root(source, io.data_root(data_root))
    out = out or default_store_location(root)
    if not root.startswith("s3://") and not os.path.isdir(root):
        raise DatasetRootError(f"SR training set: dataset root does not exist: {root}")
    source_dir = io.ensure_local(root, endpoint_url)
    remote = out.startswith("s3://")
    local = _mirror_dir(out) + ".publish" if remote else out
    t0 = time.time()
    with _locked(local):
        manifest, why = _diagnose(local, source_dir, "stat")
        if force or why is not None:
            build_store(source_dir, local, workers=workers, skip_unreadable=skip_unreadable, reuse=manifest)
            manifest, built = _read_manifest(local), True
        else:
            built = False
    published = publish_store(local, out, endpoint_url) if remote else False
    images = manifest["images"]
    gbytes = sum(int(np.prod(e["shape"])) for e in images if e["shape"]) / 1e9
    what = "prepared" if built else "up to date:"
    where = f"{out} (uploaded from {local})" if published else out
    print(f"{what} {len(images)} images ({gbytes:.2f} GB uncompressed) from {root} in {where} "
          f"[{time.time() - t0:.1f} s]")
    return out


def run_prepare(args: argparse.Namespace) -> int:
    """`raygrid data prepare`; exit 2 with one line on bad input."""
    try:
        prepare(args.source, args.out, args.data_root, args.workers, args.skip_unreadable, args.force,
                args.endpoint_url)
    except (DatasetRootError, ImageDecodeError, StoreError, ValueError) as exc:
        print(f"raygrid data prepare: {exc}", file=sys.stderr)
        return 2
    return 0

