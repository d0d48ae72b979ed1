"""One filesystem layer for local paths, file:// URIs and s3:// (AWS, MinIO, Ceph, moto).

pyarrow ignores AWS_ENDPOINT_URL, so the endpoint is passed explicitly: the `--s3-endpoint` flag,
else TILESCOPE_S3_ENDPOINT, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Credentials come from the
standard AWS chain (env, profile, instance profile) and are never printed, logged or stored here.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

ENDPOINT_ENV_VARS = ("TILESCOPE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StorageError(OSError):
    """A storage location cannot be read or written; the message names the URI and the cause."""


def s3_endpoint(explicit: str | None = None) -> str | None:
    """The S3 endpoint to use: the explicit value, else the first endpoint environment variable set."""
    if explicit:
        return explicit
    for name in ENDPOINT_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


@dataclass(frozen=True)
class Location:
    """A resolved URI: the pyarrow filesystem and the path inside it (bucket/key for S3)."""

    fs: pafs.FileSystem
    path: str
    uri: str
    endpoint: str | None = None  # the S3 endpoint the filesystem was built for (None: AWS or local)

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        sep = "" if self.uri.endswith("/") else "/"
        return Location(self.fs, path, self.uri + sep + "/".join(parts), self.endpoint)


def _s3_filesystem(endpoint: str | None, attempts: int = 8) -> pafs.S3FileSystem:
    kwargs: dict = {
        # Transient S3 errors (throttling, 5xx, resets) are retried with backoff by the AWS SDK.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        "connect_timeout": 5,
        "request_timeout": 60,
    }
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else "https://" + endpoint)
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
        # MinIO/Ceph/moto speak path-style; AWS accepts it too.
        kwargs["force_virtual_addressing"] = False
        kwargs.setdefault("region", "us-east-1")
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str, endpoint: str | None = None) -> Location:
    """Map a local path, file:// URI or s3://bucket/key URI to a Location.

    Raises StorageError for an unsupported scheme.
    """
    if uri.startswith("s3://"):
        rest = uri[len("s3://") :].rstrip("/")
        if not rest:
            raise StorageError(f"{uri}: an s3:// URI needs a bucket, e.g. s3://bucket/prefix")
        resolved = s3_endpoint(endpoint)
        return Location(_s3_filesystem(resolved), rest, "s3://" + rest, resolved)
    if uri.startswith("file://"):
        path = urlparse(uri).path
    elif "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StorageError(f"{uri}: unsupported scheme {scheme!r}; use a local path, file:// or s3://")
    else:
        path = uri
    path = os.path.abspath(os.path.expanduser(path))
    return Location(pafs.LocalFileSystem(), path, path)


def check_reachable(loc: Location) -> None:
    """Fail before any work starts when an S3 endpoint is unreachable or credentials are refused."""
    if not loc.is_s3:
        return
    bucket = loc.path.split("/", 1)[0]
    # A probe with two attempts: a wrong endpoint should fail in seconds, not after eight backoffs.
    probe = _s3_filesystem(loc.endpoint, attempts=2)
    try:
        info = probe.get_file_info(bucket)
    except OSError as exc:
        raise StorageError(f"s3://{bucket}: cannot reach the bucket ({_short(exc)}); "
                           "check the endpoint (--s3-endpoint) and AWS credentials") from exc
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"s3://{bucket}: bucket does not exist")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def read_bytes(loc: Location) -> bytes:
    try:
        with loc.fs.open_input_stream(loc.path, compression=None) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise StorageError(f"{loc.uri}: not found") from exc
    except OSError as exc:
        raise StorageError(f"{loc.uri}: cannot read ({_short(exc)})") from exc


def write_bytes_atomic(loc: Location, data: bytes) -> None:
    """Write a whole object so that readers see either nothing or all of it.

    S3 PUTs are atomic by themselves; locally we write a temporary sibling and rename it.
    """
    try:
        if loc.is_s3:
            with loc.fs.open_output_stream(loc.path, compression=None) as f:
                f.write(data)
            return
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        # A leading dot: dataset readers (pyarrow, polars globs) skip it if a crash leaves it behind.
        tmp = os.path.join(os.path.dirname(loc.path), f".{os.path.basename(loc.path)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, loc.path)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk must not also keep the half-written file
                os.remove(tmp)
            raise
    except OSError as exc:
        raise StorageError(f"{loc.uri}: cannot write ({_short(exc)})") from exc


def write_json(loc: Location, name: str, body: dict) -> None:
    """loc/name as indented, key-sorted JSON, atomically."""
    write_bytes_atomic(loc.join(name), json.dumps(body, indent=2, sort_keys=True, default=str).encode())


def read_json(loc: Location, name: str) -> dict | None:
    """loc/name parsed, or None when it does not exist."""
    target = loc.join(name)
    return json.loads(read_bytes(target)) if exists(target) else None


def list_files(loc: Location, recursive: bool = True) -> list[str]:
    """Paths (inside loc.fs) of the regular files under loc, sorted; [] when loc does not exist."""
    selector = pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True)
    try:
        infos = loc.fs.get_file_info(selector)
    except OSError as exc:
        raise StorageError(f"{loc.uri}: cannot list ({_short(exc)})") from exc
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def uri_of(loc: Location, path: str) -> str:
    """The URI of another path on the same filesystem as loc."""
    return "s3://" + path if loc.is_s3 else path
