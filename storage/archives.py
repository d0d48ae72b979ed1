"""Image archives as NIH publishes them: tar / tar.gz shards, or a directory (or S3 prefix) of images.

Shards are streamed (tarfile's 'r|*' stream mode over a pyarrow input stream): nothing from an archive is
ever extracted to disk, and a member is read into memory only when it is yielded. Every member is
accounted for: an unsafe path, a non-regular member or a shard cut off anywhere (mid-gzip, mid-member or
at a header boundary) each yields a Member whose `error` says why, and the caller turns it into an error row.
`fetch_images` reads back the few images a report draws, by the `source` its run recorded.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from storage.fs import Location, StorageError, resolve, uri_of
from storage.gzip_members import GzipMembers, inflater_module

SHARD_SUFFIXES = (".tar.gz", ".tgz", ".tar")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A 1024x1024 8-bit PNG is ~0.5-1 MB; 256 MB is far above any real radiograph and bounds memory per member.
MAX_MEMBER_BYTES = 256 * 1024 * 1024
# Loose image files are grouped into pseudo-shards so that listing a million files gives few read tasks.
FILES_PER_GROUP = 512


@dataclass(frozen=True)
class Shard:
    """One unit of reading: a tar(.gz) file, or a group of loose image files.

    `name` is the shard's path relative to the archive root (`images_001.tar.gz`, `batch2/images_001.tar.gz`;
    `files-NNNNN` for a group of loose files): its identity everywhere, in chunk file names and in `source`.
    `fingerprint` changes when the shard's content may have (size and modification time of a tar shard; the
    relative paths and sizes of a group's files), so a resumed run can tell a changed shard from a new one.
    """

    name: str
    uri: str
    kind: str  # "tar", "tar.gz" or "files"
    files: tuple[str, ...] = ()  # URIs, for kind == "files"
    fingerprint: str = ""
    root: str = ""  # the archive root's path inside the filesystem (loose files are confined to it)
    listing: tuple[str, ...] = ()
    """kind == "files": `<relative path>\t<size>` of each file, what the fingerprint hashes (a resumed run's claim
    keeps it, to name the files that changed)."""


@dataclass(frozen=True)
class Member:
    """One input image: its id (file name as in Data_Entry_2017.csv), where it came from, bytes or error."""

    image_id: str
    source: str
    data: bytes | None
    error: str | None = None


def _shard_kind(name: str) -> str | None:
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    return None


def _relative(root: str, path: str) -> str:
    return posixpath.relpath(path, root) if root else path


def _fingerprint(info: pafs.FileInfo) -> str:
    mtime = info.mtime_ns if info.mtime_ns is not None else ""
    return f"size={info.size} mtime={mtime}"


def _list_entries(loc: Location) -> list[tuple[str, int | None, int | str]]:
    """(path, size, mtime) of everything under loc that could be a shard or an image, sorted by path.

    Locally the tree is walked without following links, and a link, FIFO or other special file with an image
    name is listed too (its size None): reading it yields an error row instead of silently dropping the image
    (_iter_files). pyarrow's listing would follow links out of the archive and drop dangling ones.
    """
    if loc.is_s3:
        try:
            infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise StorageError(f"{loc.uri}: cannot list ({exc})") from exc
        return sorted((i.path, i.size, i.mtime_ns or "") for i in infos if i.type == pafs.FileType.File)
    out = []
    for top, dirs, names in os.walk(loc.path, followlinks=False):
        dirs.sort()
        for name in names:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                out.append((path, st.st_size, st.st_mtime_ns))
            elif name.lower().endswith(IMAGE_SUFFIXES + SHARD_SUFFIXES):
                out.append((path, None, st.st_mtime_ns))
    return sorted(out)


def list_shards(uri: str, endpoint: str | None = None) -> list[Shard]:
    """The shards of an archive URI, sorted by name. Raises StorageError when there is nothing to read."""
    loc = resolve(uri, endpoint)
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: archive not found")
    if info.type == pafs.FileType.File:
        kind = _shard_kind(loc.path)
        if kind is None:
            raise StorageError(f"{uri}: not a tar or tar.gz shard (expected one of {SHARD_SUFFIXES})")
        return [Shard(posixpath.basename(loc.path), loc.uri, kind, fingerprint=_fingerprint(info),
                      root=posixpath.dirname(loc.path))]
    entries = _list_entries(loc)
    shards = [
        Shard(_relative(loc.path, p), uri_of(loc, p), kind, fingerprint=f"size={size} mtime={mtime}", root=loc.path)
        for p, size, mtime in entries
        if (kind := _shard_kind(p)) is not None
    ]
    images = [(p, size) for p, size, _ in entries if p.lower().endswith(IMAGE_SUFFIXES)]
    for g in range(0, len(images), FILES_PER_GROUP):
        group = images[g : g + FILES_PER_GROUP]
        listing = tuple(f"{_relative(loc.path, p)}\t{size}" for p, size in group)
        digest = hashlib.sha256("\n".join(listing).encode())
        shards.append(Shard(f"files-{g // FILES_PER_GROUP:05d}", loc.uri, "files",
                            tuple(uri_of(loc, p) for p, _ in group), digest.hexdigest()[:16], loc.path, listing))
    if not shards:
        raise StorageError(f"{uri}: no tar/tar.gz shards or .png/.jpg images found")
    return shards


def unsafe_member_reason(name: str) -> str | None:
    """Why a tar member path must not be trusted, or None. Absolute paths and '..' parts are refused."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"unsafe member path {name!r} (absolute)"
    if ".." in name.replace("\\", "/").split("/"):
        return f"unsafe member path {name!r} (contains '..')"
    return None


class _EndMarkerTarInfo(tarfile.TarInfo):
    """Notes on the TarFile when its end-of-archive marker (a zero block) is read.

    tarfile's stream mode ends iteration without an error at a missing, cut or garbled header, so a shard cut
    at a header boundary would otherwise lose its remaining members silently.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.EOFHeaderError:
            tarfile_.reached_end_marker = True  # type: ignore[attr-defined]
            raise


def _iter_tar(shard: Shard, endpoint: str | None) -> Iterator[Member]:
    loc = resolve(shard.uri, endpoint)
    count = 0  # members yielded so far
    try:
        with (
            loc.fs.open_input_stream(loc.path, compression=None) as raw,
            # Every gzip member, not only the first (tarfile's 'r|gz' stops there): storage/gzip_members.py.
            tarfile.open(fileobj=GzipMembers(raw, inflater_module()) if shard.kind == "tar.gz" else raw,
                         mode="r|", tarinfo=_EndMarkerTarInfo) as tar,
        ):
            for info in tar:
                if info.isdir():
                    continue
                image_id = posixpath.basename(info.name.rstrip("/"))
                source = f"{shard.name}:{info.name}"
                reason = unsafe_member_reason(info.name)
                if reason is None and not info.isfile():
                    reason = f"member is not a regular file (tar type {info.type!r})"
                if reason is None and info.size > MAX_MEMBER_BYTES:
                    reason = f"member is {info.size} bytes, above the {MAX_MEMBER_BYTES} byte limit"
                if reason is not None:
                    count += 1
                    yield Member(image_id, source, None, reason)
                    continue
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                count += 1
                yield Member(image_id, source, data)
            if not getattr(tar, "reached_end_marker", False):
                raise tarfile.ReadError("no end-of-archive marker (cut off or garbled header)")
    except FileNotFoundError as exc:
        raise StorageError(f"{shard.uri}: shard not found") from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        yield Member(
            shard.name,
            shard.name,
            None,
            f"shard {shard.name} unreadable after {count} members: {type(exc).__name__}: {exc}",
        )


def local_problem(path: str, root: str, max_bytes: int | None = MAX_MEMBER_BYTES) -> str | None:
    """Why a local archive entry must not be read, or None: links that leave the archive root or lead nowhere,
    and anything but a regular file (a FIFO would block a reader forever). Never names a link's target."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "cannot read (not found: removed after listing?)"
    except OSError as exc:
        return f"cannot read ({type(exc).__name__})"
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            return "dangling symbolic link"
        real_root = os.path.realpath(root)
        if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
            return "symbolic link to a file outside the archive (not followed)"
    if not stat.S_ISREG(st.st_mode):
        kind = "directory" if stat.S_ISDIR(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
        return f"not a regular file ({kind})"
    if max_bytes is not None and st.st_size > max_bytes:
        return f"file is {st.st_size} bytes, above the {max_bytes} byte limit"
    return None


def _iter_files(shard: Shard, endpoint: str | None) -> Iterator[Member]:
    for uri in shard.files:
        loc = resolve(uri, endpoint)
        image_id = posixpath.basename(loc.path)
        source = _relative(shard.root, loc.path)
        problem = None if loc.is_s3 else local_problem(loc.path, shard.root)
        if problem is not None:
            yield Member(image_id, source, None, problem)
            continue
        try:
            with loc.fs.open_input_stream(loc.path, compression=None) as f:
                data = f.read()
        except OSError as exc:
            yield Member(image_id, source, None, f"cannot read ({type(exc).__name__})")
            continue
        yield Member(image_id, source, data)


def iter_members(shard: Shard, endpoint: str | None = None) -> Iterator[Member]:
    """Stream the members of one shard in archive order."""
    if shard.kind == "files":
        return _iter_files(shard, endpoint)
    loc = resolve(shard.uri, endpoint)
    exists = loc.is_s3 or os.path.lexists(loc.path)  # a removed shard: _iter_tar raises StorageError
    problem = None if loc.is_s3 or not shard.root or not exists else local_problem(loc.path, shard.root, None)
    if problem is not None:
        return iter([Member(shard.name, shard.name, None, f"shard {shard.name}: {problem}")])
    return _iter_tar(shard, endpoint)


def fetch_images(archive: str, sources: dict[str, str], endpoint: str | None = None) -> dict[str, bytes]:
    """image id -> encoded bytes for the images named in `sources` (image id -> the run's `source` column).

    Reads only the shards that hold them (a `shard:member` source names its shard) and stops reading a
    shard once its images are found; loose files are read directly. Ids not found are left out.
    """
    found: dict[str, bytes] = {}
    shards = list_shards(archive, endpoint)
    by_shard: dict[str, set[str]] = {}
    for image_id, source in sources.items():
        by_shard.setdefault(source.split(":", 1)[0] if ":" in source else "", set()).add(image_id)
    for shard in shards:
        if shard.kind == "files":
            for member in _iter_files(shard, endpoint):
                if member.image_id in sources and member.image_id not in found and member.data is not None:
                    found[member.image_id] = member.data
            continue
        wanted = by_shard.get(shard.name, set()) - found.keys()
        for member in iter_members(shard, endpoint) if wanted else ():
            if member.image_id in wanted and member.data is not None:
                found[member.image_id] = member.data
                wanted.discard(member.image_id)
                if not wanted:
                    break
    return found
