"""The one storage layer: local folders and S3 prefixes, through pyarrow's filesystems.

Ray Tune/Train write trial state with a pyarrow filesystem; raygrid reads checkpoints back, mirrors
datasets and resolves its folders through the same one, so every rule is written once here:

- the S3 endpoint (MinIO, moto, a non-AWS S3): the explicit argument, else $RAYGRID_S3_ENDPOINT_URL,
  else $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL (`endpoint`);
- the cache root: $RAYGRID_CACHE, else ~/.cache/raygrid (`cache_root`);
- the data root: the --data-root option, else the space's `data_root`, else $RAYGRID_DATA, else
  the cache root (`data_root`) — the runner, the train loops (through the root the runner hands
  them) and the report all use it.

Credentials come from the usual AWS environment variables or the instance profile, never from
raygrid's files. Nothing here imports pyarrow at module import (the dry run stays light).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

ENDPOINT_ENV_VARS = ("RAYGRID_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Per-folder record of the objects a mirror fetched (size, last-modified, ETag): a listing through
# pyarrow gives size and time only, so what a local file was fetched from has to be remembered.
MANIFEST_NAME = ".raygrid-s3-manifest.json"


def is_s3(uri: str | os.PathLike | None) -> bool:
    return bool(uri) and str(uri).startswith("s3://")


def parse_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b/' -> ('bucket', 'a/b'); the prefix is '' for a whole bucket."""
    if not is_s3(uri):
        raise ValueError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
    bucket, _, prefix = str(uri)[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


def endpoint(explicit: str | None = None) -> str | None:
    """The S3 endpoint URL to use, or None for AWS itself (see the module docstring)."""
    if explicit:
        return explicit
    return next((os.environ[v] for v in ENDPOINT_ENV_VARS if os.environ.get(v)), None)


def filesystem(uri: str, endpoint_url: str | None = None):
    """(pyarrow filesystem, path inside it) for a local path or an s3:// URI."""
    import pyarrow.fs

    if not is_s3(uri):
        return pyarrow.fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    url = endpoint(endpoint_url)
    kwargs = {"region": os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))}
    if url:
        scheme, _, host = url.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                      session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pyarrow.fs.S3FileSystem(**kwargs), str(uri)[len("s3://"):].rstrip("/")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]]) if is_s3(base) else str(Path(base, *parts))


def fetch(uri: str, dest_dir: str, endpoint_url: str | None = None, fs=None) -> str:
    """Copy a file or folder (local path, s3:// URI, or a path inside `fs`) into dest_dir; returns
    the copy's path."""
    import pyarrow.fs

    if fs is None:
        if not is_s3(uri):
            src = Path(uri).expanduser()
            if not src.exists():
                raise FileNotFoundError(f"{uri}: no such file or folder")
            dest = Path(dest_dir) / src.name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
            return str(dest)
        fs, path = filesystem(uri, endpoint_url)
    else:
        path = uri
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: not found in storage")
    dest = Path(dest_dir) / Path(path).name
    if info.type == pyarrow.fs.FileType.Directory:
        for f in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True)):
            if f.type == pyarrow.fs.FileType.File:
                copy(fs, f.path, dest / Path(f.path).relative_to(path))
    else:
        copy(fs, path, dest)
    return str(dest)


def copy(fs, src_path: str, dest: Path) -> dict[str, str]:
    """Copy one file of `fs` to the local path `dest` atomically (a temporary file renamed into
    place: concurrent readers never see half a file); returns the stream's metadata (S3: ETag,
    Last-Modified)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with fs.open_input_stream(src_path) as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            meta = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (src.metadata() or {}).items()}
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return meta


# ---------------------------------------------------------------------------------------------
# Folders: the cache root and the data root
# ---------------------------------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("RAYGRID_CACHE") or Path.home() / ".cache" / "raygrid").expanduser()


def data_root(explicit: str | None = None, space: str | None = None) -> str:
    """Where the datasets are: --data-root, else the space's data_root, else $RAYGRID_DATA, else the
    cache root (where the demo data is built)."""
    return explicit or space or os.environ.get("RAYGRID_DATA") or str(cache_root())


def local_root(root: str | None) -> str:
    """A local folder for data raygrid builds itself (the demo): `root` unless it is an S3 prefix or
    unset, then the cache root."""
    return str(cache_root()) if root is None or is_s3(root) else os.path.expanduser(root)


# ---------------------------------------------------------------------------------------------
# Mirroring an S3 prefix into the local cache
# ---------------------------------------------------------------------------------------------


def mirror_dir(uri: str) -> str:
    """Where `ensure_local` mirrors an S3 prefix: <cache root>/s3/<bucket>/<prefix>."""
    bucket, prefix = parse_s3(uri)
    return str(cache_root() / "s3" / bucket / prefix)


def ensure_local(path: str, endpoint_url: str | None = None) -> str:
    """A local folder for `path`: itself, or the mirror of an s3:// prefix."""
    return mirror(path, mirror_dir(path), endpoint_url) if is_s3(path) else path


def _relative_key(key: str, prefix: str) -> str | None:
    """Key relative to the prefix, or None for keys that are not below it as a folder."""
    if not prefix:
        rel = key
    elif key.startswith(prefix + "/"):
        rel = key[len(prefix) + 1:]
    else:
        return None  # "data/set5x" does not belong to the prefix "data/set5"
    if not rel or rel.endswith("/") or any(p in ("..", ".") for p in PurePosixPath(rel).parts):
        return None  # folder markers and keys that would escape the target folder
    return rel


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_manifest(local_dir: Path) -> dict[str, dict]:
    try:
        data = json.loads((local_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _is_current(fs, key_path: str, dest: Path, size: int, mtime_ns: int, record: dict | None) -> bool:
    if not dest.is_file() or dest.stat().st_size != size:
        return False
    if record is not None:
        return record.get("size") == size and record.get("mtime_ns") == mtime_ns
    # No record (e.g. files copied by hand): a single-part ETag is the MD5 of the content.
    with fs.open_input_file(key_path) as f:
        etag = (f.metadata() or {}).get("ETag", b"").decode().strip('"')
    return bool(etag) and "-" not in etag and _md5(dest) == etag


def mirror(uri: str, local_dir: str, endpoint_url: str | None = None) -> str:
    """Fetch every object under the S3 prefix `uri` into `local_dir`, keeping the key layout below
    the prefix; returns `local_dir`.

    An object is fetched again when its size or last-modified time (S3 keeps it to the second)
    differs from what the manifest recorded, so calling this from every worker of a job is cheap
    after the first. Files land atomically. Raises FileNotFoundError if the prefix holds no objects
    (a missing dataset root).
    """
    import pyarrow.fs

    bucket, prefix = parse_s3(uri)
    fs, _ = filesystem(uri, endpoint_url)
    target = Path(local_dir)
    target.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(target)
    listing = fs.get_file_info(pyarrow.fs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True,
                                                       allow_not_found=True))
    downloaded = skipped = 0
    for info in listing:
        if info.type != pyarrow.fs.FileType.File:
            continue
        rel = _relative_key(info.path[len(bucket) + 1:], prefix)
        if rel is None:
            continue
        dest, mtime_ns = target / rel, int(info.mtime_ns or 0)
        if _is_current(fs, info.path, dest, info.size, mtime_ns, manifest.get(rel)):
            skipped += 1
        else:
            meta = copy(fs, info.path, dest)
            downloaded += 1
            manifest[rel] = {"size": info.size, "mtime_ns": mtime_ns, "etag": meta.get("ETag", "").strip('"')}
        manifest.setdefault(rel, {"size": info.size, "mtime_ns": mtime_ns})
    if downloaded + skipped == 0:
        raise FileNotFoundError(f"no objects under s3://{bucket}/{prefix} (endpoint {endpoint(endpoint_url)})")
    # The manifest is written atomically too; concurrent writers each write a complete file.
    fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{MANIFEST_NAME}.")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=0, sort_keys=True)
    os.replace(tmp, target / MANIFEST_NAME)
    log.info("mirrored s3://%s/%s -> %s: %d downloaded, %d already present", bucket, prefix, target, downloaded, skipped)
    return str(target)


# ---------------------------------------------------------------------------------------------
# Publishing a local folder to an S3 prefix
# ---------------------------------------------------------------------------------------------


def exists(uri: str, endpoint_url: str | None = None) -> bool:
    """A file or folder at a local path or s3:// URI exists."""
    import pyarrow.fs

    fs, path = filesystem(uri, endpoint_url)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(uri: str, endpoint_url: str | None = None) -> bytes | None:
    """The content of one object (or local file); None if it does not exist."""
    import pyarrow.fs

    fs, path = filesystem(uri, endpoint_url)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def publish(local_dir: str, uri: str, endpoint_url: str | None = None, last: str | None = None) -> None:
    """Upload the files of `local_dir` under the S3 prefix `uri` and delete the objects below it
    that the folder lacks. `last` (a relative path, e.g. a completion marker) is removed first and
    uploaded last, so a reader mirroring meanwhile sees an incomplete tree, never a mixed one."""
    import pyarrow.fs

    fs, base = filesystem(uri, endpoint_url)
    root = Path(local_dir)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if last is not None and fs.get_file_info(f"{base}/{last}").type == pyarrow.fs.FileType.File:
        fs.delete_file(f"{base}/{last}")
    for rel in [f for f in files if f != last] + ([last] if last in files else []):
        with open(root / rel, "rb") as src, fs.open_output_stream(f"{base}/{rel}") as out:
            shutil.copyfileobj(src, out)
    keep = {f"{base}/{rel}" for rel in files}
    listing = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True))
    for info in listing:
        if info.type == pyarrow.fs.FileType.File and info.path not in keep:
            fs.delete_file(info.path)
