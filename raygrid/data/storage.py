"""Mirror an S3 prefix into a local folder (boto3), so readers can treat it as a plain folder.

`sync_s3_prefix("s3://bucket/datasets/DIV2K", "/cache/s3/bucket/datasets/DIV2K")` downloads
every object under the prefix, keeping the key layout below the prefix. Objects already present
with the same size and ETag are skipped, so calling it from every worker of a job is cheap after
the first. Downloads go to a temporary file and are renamed into place, so concurrent callers
never see half-written files.

The endpoint (MinIO, moto, a non-AWS S3) comes from the argument, else `AWS_ENDPOINT_URL_S3`,
else `RAYGRID_S3_ENDPOINT_URL`; credentials come from boto3's usual chain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

# Per-folder record of the ETags we downloaded: a multipart ETag is not the file's MD5, so the
# only way to know a local file matches it is to remember what we fetched.
MANIFEST_NAME = ".raygrid-s3-manifest.json"
ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "RAYGRID_S3_ENDPOINT_URL")


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str  # without leading slash; "" for the whole bucket

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"S3 URI without a bucket: {uri!r}")
        return cls(bucket, prefix.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def is_s3_uri(path: str | os.PathLike) -> bool:
    return str(path).startswith("s3://")


def resolve_endpoint(endpoint_url: str | None = None) -> str | None:
    if endpoint_url:
        return endpoint_url
    for var in ENDPOINT_ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def default_cache_root() -> Path:
    return Path(os.environ.get("RAYGRID_CACHE") or Path.home() / ".cache" / "raygrid")


def local_mirror_dir(uri: str) -> str:
    """Where `ensure_local` mirrors an S3 prefix: <RAYGRID_CACHE>/s3/<bucket>/<prefix>."""
    s3 = S3Uri.parse(uri)
    return str(default_cache_root() / "s3" / s3.bucket / s3.prefix)


def ensure_local(path: str, endpoint_url: str | None = None) -> str:
    """A local folder for `path`: itself, or the synced mirror of an s3:// prefix."""
    if is_s3_uri(path):
        return sync_s3_prefix(path, local_mirror_dir(path), endpoint_url)
    return path


def _relative_key(key: str, prefix: str) -> str | None:
    """Key relative to the prefix, or None for keys that are not below it as a folder."""
    if not prefix:
        rel = key
    elif key.startswith(prefix + "/"):
        rel = key[len(prefix) + 1 :]
    else:
        return None  # "data/set5x" does not belong to the prefix "data/set5"
    parts = PurePosixPath(rel).parts
    if not rel or rel.endswith("/") or any(p in ("..", ".") for p in parts):
        return None  # folder markers and keys that would escape the target folder
    return rel


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_manifest(local_dir: Path) -> dict[str, str]:
    try:
        return json.loads((local_dir / MANIFEST_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _is_current(path: Path, size: int, etag: str, manifest: dict[str, str], rel: str) -> bool:
    if not path.is_file() or path.stat().st_size != size:
        return False
    if manifest.get(rel) == etag:
        return True
    # No record (e.g. files copied by hand): a single-part ETag is the MD5 of the content.
    return "-" not in etag and _md5(path) == etag


def sync_s3_prefix(uri: str, local_dir: str, endpoint_url: str | None = None) -> str:
    """Download every object under `uri` into `local_dir`; returns `local_dir`.

    Raises FileNotFoundError if the prefix holds no objects (a missing dataset root).
    """
    import boto3  # imported here: the package must import without boto3's start-up cost

    s3uri = S3Uri.parse(uri)
    target = Path(local_dir)
    target.mkdir(parents=True, exist_ok=True)
    client = boto3.client("s3", endpoint_url=resolve_endpoint(endpoint_url))
    manifest = _load_manifest(target)

    downloaded = skipped = 0
    seen = 0
    paginator = client.get_paginator("list_objects_v2")
    list_prefix = f"{s3uri.prefix}/" if s3uri.prefix else ""
    for page in paginator.paginate(Bucket=s3uri.bucket, Prefix=list_prefix):
        for obj in page.get("Contents", []):
            rel = _relative_key(obj["Key"], s3uri.prefix)
            if rel is None:
                continue
            seen += 1
            etag = obj["ETag"].strip('"')
            dest = target / rel
            if _is_current(dest, obj["Size"], etag, manifest, rel):
                skipped += 1
                manifest[rel] = etag
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            os.close(fd)
            try:
                client.download_file(s3uri.bucket, obj["Key"], tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            manifest[rel] = etag
            downloaded += 1

    if seen == 0:
        raise FileNotFoundError(f"no objects under {s3uri} (endpoint {resolve_endpoint(endpoint_url)})")

    # Write the manifest atomically too; concurrent writers each write a complete file.
    fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{MANIFEST_NAME}.")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=0, sort_keys=True)
    os.replace(tmp, target / MANIFEST_NAME)
    log.info("synced %s -> %s: %d downloaded, %d already present", s3uri, target, downloaded, skipped)
    return str(target)
