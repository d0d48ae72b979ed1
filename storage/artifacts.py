"""Artifacts: a directory (local or S3) of files plus manifest.json listing the sha256 of every file.

Atomicity: locally the files are written into a hidden temporary sibling directory that is renamed into
place in one step. On S3 (no rename) the files are uploaded first and manifest.json last; a reader
requires the manifest and verifies every file's sha256 against it, so it never uses half an artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass

from storage.fs import Location, StorageError, check_reachable, exists, read_bytes, resolve, write_bytes_atomic
from xray.metadata.manifests import MANIFEST_SCHEMA_VERSION, ArtifactKind, Manifest, manifest_from_json

MANIFEST = "manifest.json"
ARTIFACT_SCHEMA_VERSION = MANIFEST_SCHEMA_VERSION


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its manifest and the sha256 of the manifest (the artifact's identity)."""

    uri: str
    manifest: dict
    sha256: str
    endpoint: str | None = None

    def parsed(self) -> Manifest:
        """The typed manifest (xray.metadata.manifests); ManifestError (a ValueError) names the artifact and the key."""
        return manifest_from_json(self.manifest, self.uri)

    def verify_files(self) -> None:
        """Read every file and check it against the manifest: a tampered or missing file fails here, on the
        driver, before any work (StorageError naming the file), not later inside an actor."""
        for relpath in sorted(self.manifest["files"]):
            self.read(relpath)

    def read(self, relpath: str) -> bytes:
        """A file of the artifact, verified against the manifest."""
        expected = self.manifest["files"].get(relpath)
        parts = relpath.split("/")
        if relpath.startswith("/") or ".." in parts or "" in parts:
            raise StorageError(f"{self.uri}: manifest names a file outside the artifact ({relpath!r})")
        if expected is None:
            raise StorageError(f"{self.uri}: artifact has no file {relpath!r}")
        data = read_bytes(resolve(self.uri, self.endpoint).join(relpath))
        if sha256_hex(data) != expected:
            raise StorageError(f"{self.uri}/{relpath}: sha256 mismatch with the manifest (corrupt or partial)")
        return data


def require_new(uri: str, endpoint: str | None, what: str = "an artifact") -> Location:
    """The location for a new artifact, checked before any work: reachable, and no artifact there yet (artifacts
    are immutable). FileExistsError names --out."""
    loc = resolve(uri, endpoint)
    check_reachable(loc)
    if exists(loc.join(MANIFEST)):
        raise FileExistsError(f"--out {uri}: {what} already exists there; choose a new --out")
    return loc


def write_artifact(uri: str, files: dict[str, bytes], manifest: Manifest | dict, endpoint: str | None = None) -> str:
    """Write files and the manifest (with schema version and file hashes added); returns the artifact sha.

    Refuses to overwrite an existing artifact: artifacts are immutable, their sha goes into result rows.
    """
    if not isinstance(manifest, dict):
        manifest = manifest.to_json()
    loc = resolve(uri, endpoint)
    if exists(loc.join(MANIFEST)):
        raise StorageError(f"{uri}: an artifact already exists here; artifacts are immutable, choose a new --out")
    full = {
        "schema_version": ARTIFACT_SCHEMA_VERSION,
        **manifest,
        "files": {name: sha256_hex(data) for name, data in sorted(files.items())},
    }
    body = json.dumps(full, indent=2, sort_keys=True).encode()
    if loc.is_s3:
        for name, data in sorted(files.items()):
            write_bytes_atomic(loc.join(name), data)
        write_bytes_atomic(loc.join(MANIFEST), body)
    else:
        _write_local_dir(loc, {**files, MANIFEST: body})
    return sha256_hex(body)


def _write_local_dir(loc: Location, files: dict[str, bytes]) -> None:
    parent = os.path.dirname(loc.path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(loc.path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        for name, data in files.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        if os.path.isdir(loc.path) and not os.listdir(loc.path):
            os.rmdir(loc.path)
        os.rename(tmp, loc.path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"{loc.uri}: cannot write artifact ({exc})") from exc


def open_artifact(uri: str, endpoint: str | None = None) -> Artifact:
    """Read and check an artifact's manifest. Raises StorageError when absent or incomplete."""
    loc = resolve(uri, endpoint)
    man_loc = loc.join(MANIFEST)
    if not exists(man_loc):
        raise StorageError(f"{uri}: no {MANIFEST}: not an artifact, or one still being written")
    body = read_bytes(man_loc)
    try:
        manifest = json.loads(body)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}/{MANIFEST}: not valid JSON ({exc})") from exc
    if "files" not in manifest:
        raise StorageError(f"{uri}/{MANIFEST}: no 'files' section")
    return Artifact(uri=loc.uri, manifest=manifest, sha256=sha256_hex(body), endpoint=endpoint)


def open_typed(uri: str, endpoint: str | None, flag: str, *kinds: ArtifactKind,
               verify: bool = False) -> tuple[Artifact, Manifest]:
    """open_artifact + its typed manifest, checked to be one of `kinds`; errors name `flag` (e.g. --model).
    verify: also check every file's sha256 now (Artifact.verify_files)."""
    artifact = open_artifact(uri, endpoint)
    manifest = artifact.parsed()
    if verify:
        artifact.verify_files()
    if manifest.kind not in kinds:
        wanted = " or ".join(k.value for k in kinds)
        raise ValueError(f"{flag} {uri}: is a {manifest.kind.value} artifact, this job needs a {wanted} artifact")
    return artifact, manifest
