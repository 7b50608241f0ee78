"""Where trial state lives: a local folder or an S3 prefix, through pyarrow's filesystems.

Ray Tune/Train write to `storage_path` with a pyarrow filesystem; raygrid reads checkpoints back
the same way (MLflow artifacts, transfer initialisation), so an S3-compatible endpoint (MinIO,
moto) is configured once here. Credentials come from the usual AWS environment variables or the
instance profile, never from raygrid's files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def is_s3(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("s3://")


def endpoint_from_env(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("RAYGRID_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL")


def filesystem(uri: str, endpoint_url: str | None = None):
    """(pyarrow filesystem, path inside it) for a local path or an s3:// URI."""
    import pyarrow.fs

    if not is_s3(uri):
        return pyarrow.fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    endpoint = endpoint_from_env(endpoint_url)
    kwargs = {"region": os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1"))}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    return pyarrow.fs.S3FileSystem(**kwargs), uri[len("s3://"):].rstrip("/")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]]) if is_s3(base) else str(Path(base, *parts))


def fetch(uri: str, dest_dir: str, endpoint_url: str | None = None, fs=None) -> str:
    """Copy a file or folder (local path, s3:// URI, or a path inside `fs`) into dest_dir."""
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
        files = [f for f in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
                 if f.type == pyarrow.fs.FileType.File]
        for f in files:
            _copy(fs, f.path, dest / Path(f.path).relative_to(path))
    else:
        _copy(fs, path, dest)
    return str(dest)


def _copy(fs, src_path: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(src_path) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
