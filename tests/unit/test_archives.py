"""storage.archives on local files: shard listing, streamed members, unsafe and damaged archives.

Fixtures are tar / tar.gz files built in memory with tarfile and written into tmp_path.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import shutil
import subprocess
import tarfile
import zlib

import numpy as np
import pytest

import storage.archives as archives
import storage.gzip_members as gzip_members
from storage.archives import Member, Shard, iter_members, list_shards, unsafe_member_reason
from storage.fs import StorageError


def payload(i: int, size: int = 3000) -> bytes:
    """Incompressible bytes, different for every i, so that a cut lands inside member data."""
    return np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8).tobytes()


def tar_bytes(members: list[tuple[str, bytes]], gz: bool, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def images(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"images/{i:08d}_000.png", payload(i)) for i in range(start, start + n)]


def tree(root) -> dict[str, tuple[int, int]]:
    """Every file and directory under root with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture()
def no_extraction(monkeypatch):
    """Any attempt by tarfile to create a file, directory or link on disk fails the test."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("tarfile tried to extract to disk")

    for name in ("extract", "extractall", "_extract_member", "makefile", "makedir", "makelink"):
        monkeypatch.setattr(tarfile.TarFile, name, refuse)


# ---- list_shards -------------------------------------------------------------------------------------------


def test_list_shards_of_a_directory_of_shards(tmp_path):
    write(tmp_path / "images_002.tar.gz", tar_bytes(images(1), gz=True))
    write(tmp_path / "images_001.tar.gz", tar_bytes(images(1), gz=True))
    write(tmp_path / "extra.tgz", tar_bytes(images(1), gz=True))
    write(tmp_path / "plain.tar", tar_bytes(images(1), gz=False))
    write(tmp_path / "Data_Entry_2017.csv", b"Image Index\n")
    write(tmp_path / "README.txt", b"not a shard")
    shards = list_shards(str(tmp_path))
    assert [s.name for s in shards] == ["extra.tgz", "images_001.tar.gz", "images_002.tar.gz", "plain.tar"]
    assert [s.kind for s in shards] == ["tar.gz", "tar.gz", "tar.gz", "tar"]
    assert shards[1].uri == str(tmp_path / "images_001.tar.gz")
    assert all(s.files == () for s in shards)


def test_list_shards_finds_shards_in_subdirectories(tmp_path):
    write(tmp_path / "part1" / "images_001.tar.gz", tar_bytes(images(1), gz=True))
    shards = list_shards(str(tmp_path))
    assert [(s.name, s.uri) for s in shards] == [
        ("part1/images_001.tar.gz", str(tmp_path / "part1" / "images_001.tar.gz"))]


def test_list_shards_of_a_single_shard_file(tmp_path):
    path = write(tmp_path / "images_007.tar.gz", tar_bytes(images(2), gz=True))
    (shard,) = list_shards(path)
    assert (shard.name, shard.uri, shard.kind, shard.root) == ("images_007.tar.gz", path, "tar.gz", str(tmp_path))
    assert shard.fingerprint == f"size={os.path.getsize(path)} mtime={os.stat(path).st_mtime_ns}"
    plain = write(tmp_path / "x.tar", tar_bytes(images(2), gz=False))
    assert [(s.name, s.uri, s.kind) for s in list_shards("file://" + plain)] == [("x.tar", plain, "tar")]


def test_list_shards_of_a_single_file_that_is_not_a_shard(tmp_path):
    path = write(tmp_path / "Data_Entry_2017.csv", b"x")
    with pytest.raises(StorageError, match="not a tar or tar.gz shard"):
        list_shards(path)


def test_list_shards_groups_loose_images(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "FILES_PER_GROUP", 2)
    for name in ("c.png", "a.png", "b.PNG", "d.jpg", "e.jpeg"):
        write(tmp_path / "images" / name, b"data of " + name.encode())
    write(tmp_path / "images" / "notes.txt", b"ignored")
    shards = list_shards(str(tmp_path))
    assert [s.name for s in shards] == ["files-00000", "files-00001", "files-00002"]
    assert all(s.kind == "files" and s.uri == str(tmp_path) for s in shards)
    d = str(tmp_path / "images")
    assert [s.files for s in shards] == [
        (f"{d}/a.png", f"{d}/b.PNG"), (f"{d}/c.png", f"{d}/d.jpg"), (f"{d}/e.jpeg",)]


def test_list_shards_default_group_size_puts_few_images_in_one_group(tmp_path):
    for i in range(5):
        write(tmp_path / f"{i}.png", b"x")
    shards = list_shards(str(tmp_path))
    assert len(shards) == 1 and len(shards[0].files) == 5


def test_list_shards_of_a_mixed_directory_lists_shards_then_image_groups(tmp_path):
    write(tmp_path / "z.png", b"x")
    write(tmp_path / "images_001.tar", tar_bytes(images(1), gz=False))
    shards = list_shards(str(tmp_path))
    assert [(s.name, s.kind) for s in shards] == [("images_001.tar", "tar"), ("files-00000", "files")]
    assert shards[1].files == (str(tmp_path / "z.png"),)


def test_list_shards_missing_path(tmp_path):
    with pytest.raises(StorageError, match="archive not found"):
        list_shards(str(tmp_path / "nope"))


def test_list_shards_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="no tar/tar.gz shards or .png/.jpg images found"):
        list_shards(str(tmp_path / "empty"))
    write(tmp_path / "other" / "notes.txt", b"x")
    with pytest.raises(StorageError, match="no tar/tar.gz shards"):
        list_shards(str(tmp_path / "other"))


def test_list_shards_unsupported_scheme():
    with pytest.raises(StorageError, match="unsupported scheme 'gs'"):
        list_shards("gs://bucket/nih")


# ---- iter_members ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_iter_members_yields_ids_sources_and_bytes_in_archive_order(tmp_path, gz, no_extraction):
    members = images(4)
    name = "images_001.tar.gz" if gz else "images_001.tar"
    folder = tarfile.TarInfo("images")
    folder.type = tarfile.DIRTYPE
    write(tmp_path / name, tar_bytes(members, gz=gz, extra=[folder]))
    (shard,) = list_shards(str(tmp_path))
    before = tree(tmp_path)
    got = list(iter_members(shard))
    assert got == [
        Member(f"{i:08d}_000.png", f"{name}:images/{i:08d}_000.png", payload(i)) for i in range(4)
    ]
    assert tree(tmp_path) == before  # nothing was extracted, nothing was written


def test_iter_members_directory_entries_are_skipped(tmp_path):
    d = tarfile.TarInfo("images/")
    d.type = tarfile.DIRTYPE
    write(tmp_path / "s.tar", tar_bytes(images(1), gz=False, extra=[d]))
    got = list(iter_members(list_shards(str(tmp_path / "s.tar"))[0]))
    assert [m.image_id for m in got] == ["00000000_000.png"]


def test_iter_members_of_loose_files(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "FILES_PER_GROUP", 2)
    for i in range(3):
        write(tmp_path / f"img{i}.png", payload(i, 100))
    shards = list_shards(str(tmp_path))
    before = tree(tmp_path)
    got = [m for s in shards for m in iter_members(s)]
    assert got == [Member(f"img{i}.png", f"img{i}.png", payload(i, 100)) for i in range(3)]
    assert tree(tmp_path) == before


def test_loose_file_removed_after_listing_becomes_an_error_member(tmp_path):
    write(tmp_path / "a.png", b"a")
    write(tmp_path / "b.png", b"b")
    (shard,) = list_shards(str(tmp_path))
    os.remove(tmp_path / "a.png")
    got = list(iter_members(shard))
    assert [(m.image_id, m.data) for m in got] == [("a.png", None), ("b.png", b"b")]
    assert got[0].error.startswith("cannot read")
    assert got[1].error is None


@pytest.mark.parametrize("gz", [True, False])
def test_unsafe_member_paths_become_error_members(tmp_path, gz, no_extraction):
    members = [("../evil.png", b"evil"), ("images/ok1.png", b"ok1"), ("/abs.png", b"abs"),
               ("images/../../up.png", b"up"), ("images/ok2.png", b"ok2")]
    write(tmp_path / "s.tar.gz", tar_bytes(members, gz=True))
    before = tree(tmp_path.parent)
    got = list(iter_members(list_shards(str(tmp_path / "s.tar.gz"))[0]))
    assert [m.image_id for m in got] == ["evil.png", "ok1.png", "abs.png", "up.png", "ok2.png"]
    assert [m.source for m in got] == ["s.tar.gz:" + n for n, _ in members]
    assert [m.data for m in got] == [None, b"ok1", None, None, b"ok2"]
    assert got[0].error == "unsafe member path '../evil.png' (contains '..')"
    assert got[2].error == "unsafe member path '/abs.png' (absolute)"
    assert "unsafe member path" in got[3].error
    assert got[1].error is None and got[4].error is None
    assert tree(tmp_path.parent) == before
    assert not (tmp_path.parent / "evil.png").exists() and not os.path.exists("/abs.png")


def test_unsafe_member_reason():
    assert unsafe_member_reason("images/00000001_000.png") is None
    assert unsafe_member_reason("a..b.png") is None  # '..' inside a name is harmless
    assert "absolute" in unsafe_member_reason("/etc/passwd")
    assert "absolute" in unsafe_member_reason("C:/x.png")
    assert "'..'" in unsafe_member_reason("..\\x.png")
    assert "'..'" in unsafe_member_reason("a/../../x.png")


def test_links_and_devices_become_error_members(tmp_path, no_extraction):
    sym = tarfile.TarInfo("images/link.png")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("images/hard.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "images/00000000_000.png"
    fifo = tarfile.TarInfo("images/fifo.png")
    fifo.type = tarfile.FIFOTYPE
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in images(1):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in (sym, hard, fifo):
            tar.addfile(info)
        info = tarfile.TarInfo("images/last.png")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"last"))
    write(tmp_path / "s.tar.gz", buf.getvalue())
    before = tree(tmp_path)
    got = list(iter_members(list_shards(str(tmp_path))[0]))
    assert [m.image_id for m in got] == ["00000000_000.png", "link.png", "hard.png", "fifo.png", "last.png"]
    assert got[0].data == payload(0) and got[4].data == b"last"
    assert got[1].error == "member is not a regular file (tar type b'2')"
    assert got[2].error == "member is not a regular file (tar type b'1')"
    assert got[3].error == "member is not a regular file (tar type b'6')"
    assert all(m.data is None for m in got[1:4])
    assert tree(tmp_path) == before


def test_oversized_member_becomes_an_error_and_the_next_one_is_still_read(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "MAX_MEMBER_BYTES", 1000)
    members = [("a.png", payload(1, 999)), ("b.png", payload(2, 1001)), ("c.png", payload(3, 1000))]
    write(tmp_path / "s.tar.gz", tar_bytes(members, gz=True))
    got = list(iter_members(list_shards(str(tmp_path))[0]))
    assert [m.data for m in got] == [payload(1, 999), None, payload(3, 1000)]
    assert got[1].error == "member is 1001 bytes, above the 1000 byte limit"


def test_tar_gz_truncated_at_half_yields_the_members_before_and_one_error(tmp_path, no_extraction, inflater):
    members = images(10)
    data = tar_bytes(members, gz=True)
    write(tmp_path / "images_003.tar.gz", data[: len(data) // 2])
    before = tree(tmp_path)
    got = list(iter_members(list_shards(str(tmp_path))[0]))
    good, last = got[:-1], got[-1]
    assert 2 <= len(good) < 10
    assert good == [Member(f"{i:08d}_000.png", f"images_003.tar.gz:images/{i:08d}_000.png", payload(i))
                    for i in range(len(good))]
    assert last.data is None
    assert last.image_id == "images_003.tar.gz" and last.source == "images_003.tar.gz"
    assert last.error.startswith(f"shard images_003.tar.gz unreadable after {len(good)} members: ")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("gz", [True, False])
def test_every_truncation_point_is_reported(tmp_path, gz, inflater):
    """Wherever a shard is cut, either all members come back or the last one is an error: none is lost
    silently. (tarfile's stream mode ends quietly at a missing or garbled header.)"""
    members = images(4, start=20)
    data = tar_bytes(members, gz=gz)
    name = "s.tar.gz" if gz else "s.tar"
    path = tmp_path / name
    block = 512
    # Cuts at every header boundary and just inside it, plus points inside member data.
    cuts = sorted({c for k in range(1, len(data) // block) for c in (k * block, k * block + 100)} | {
        len(data) // 3, len(data) // 2})
    for cut in cuts:
        if cut >= len(data):
            continue
        write(path, data[:cut])
        got = list(iter_members(Shard(name, str(path), "tar.gz" if gz else "tar")))
        errors = [m for m in got if m.error is not None]
        if len(got) == 4 and not errors:
            continue  # only the end-of-archive padding was cut off: every member is intact
        assert errors == [got[-1]], f"cut at {cut}: {[(m.image_id, m.error) for m in got]}"
        assert got[-1].image_id == name
        assert [m.data for m in got[:-1]] == [d for _, d in members[: len(got) - 1]], f"cut at {cut}"
        assert f"unreadable after {len(got) - 1} members" in got[-1].error, f"cut at {cut}"


def test_garbage_shard_yields_one_error_member(tmp_path, inflater):
    write(tmp_path / "bad.tar.gz", b"this is not gzip data at all" * 10)
    write(tmp_path / "empty.tar", b"")
    got = [m for s in list_shards(str(tmp_path)) for m in iter_members(s)]
    assert [(m.image_id, m.data) for m in got] == [("bad.tar.gz", None), ("empty.tar", None)]
    assert got[0].error.startswith("shard bad.tar.gz unreadable after 0 members: ReadError")
    assert got[1].error.startswith("shard empty.tar unreadable after 0 members")


def test_shard_removed_after_listing_raises_storage_error(tmp_path):
    write(tmp_path / "s.tar", tar_bytes(images(1), gz=False))
    (shard,) = list_shards(str(tmp_path))
    os.remove(tmp_path / "s.tar")
    with pytest.raises(StorageError, match="shard not found"):
        list(iter_members(shard))


def test_complete_gzip_of_a_tar_cut_at_a_header_boundary_is_reported(tmp_path):
    """The gzip stream is intact but the tar inside stops where the third header should start."""
    members = images(4)
    plain = tar_bytes(members, gz=False)
    cut = 2 * (512 + 3072)  # two headers with their padded data
    write(tmp_path / "s.tar.gz", gzip.compress(plain[:cut], mtime=0))
    got = list(iter_members(list_shards(str(tmp_path))[0]))
    assert [m.data for m in got[:2]] == [payload(0), payload(1)]
    assert len(got) == 3
    assert got[2].error == ("shard s.tar.gz unreadable after 2 members: ReadError: no end-of-archive marker "
                            "(cut off or garbled header)")


def test_garbled_header_mid_archive_is_reported(tmp_path):
    plain = bytearray(tar_bytes(images(3), gz=False))
    second = 512 + 3072
    plain[second : second + 512] = b"\xff" * 512  # the second header: not a zero block, bad checksum
    write(tmp_path / "s.tar", bytes(plain))
    got = list(iter_members(list_shards(str(tmp_path))[0]))
    assert [m.data for m in got[:1]] == [payload(0)]
    assert len(got) == 2
    assert "unreadable after 1 members" in got[1].error


# ---- gzip members (storage/gzip_members.py) -----------------------------------------------------------------

INFLATERS = [name for name in gzip_members.INFLATERS if importlib.util.find_spec(
    gzip_members.INFLATERS[name].split(".")[0]) is not None]


@pytest.fixture(params=INFLATERS)
def inflater(request, monkeypatch):
    """Each gzip inflater the machine has: every shard must read the same with each."""
    monkeypatch.setattr(gzip_members, "DEFAULT_INFLATER", request.param)
    return request.param


def multi_member(plain: bytes, cuts: list[int], padding: bytes = b"") -> bytes:
    """The tar bytes gzip-compressed as one member per piece between cuts (as pigz -i / bgzip / cat write)."""
    edges = [0, *cuts, len(plain)]
    return padding.join(gzip.compress(plain[a:b], mtime=0) for a, b in zip(edges, edges[1:], strict=False))


def test_inflater_default_and_unknown():
    assert gzip_members.inflater_module("zlib") is zlib
    with pytest.raises(ValueError, match="unknown gzip inflater 'brotli'"):
        gzip_members.inflater_module("brotli")


def test_multi_member_gzip_shard_is_read_whole(tmp_path, inflater, no_extraction):
    members = images(6)
    plain = tar_bytes(members, gz=False)
    # Cuts inside headers, inside member data and on block boundaries: members do not align with tar members.
    data = multi_member(plain, [100, 512 + 1500, 3 * 3584, 3 * 3584 + 7000])
    path = write(tmp_path / "images_001.tar.gz", data)
    if shutil.which("tar"):  # the file is valid gzip: GNU tar lists every member
        listing = subprocess.run(["tar", "tzf", path], capture_output=True, text=True, check=True).stdout.split()
        assert listing == [name for name, _ in members]
    got = list(iter_members(list_shards(path)[0]))
    assert got == [Member(f"{i:08d}_000.png", f"images_001.tar.gz:images/{i:08d}_000.png", payload(i))
                   for i in range(6)]


def test_zero_padding_between_and_after_members_is_skipped(tmp_path, inflater):
    plain = tar_bytes(images(3), gz=False)
    data = multi_member(plain, [2000], padding=b"\0" * 700) + b"\0" * 1024
    got = list(iter_members(Shard("s.tar.gz", write(tmp_path / "s.tar.gz", data), "tar.gz")))
    assert [m.data for m in got] == [payload(i) for i in range(3)]
    assert all(m.error is None for m in got)


def test_every_cut_of_a_multi_member_shard_is_reported(tmp_path, inflater):
    """Truncated anywhere, a multi-member shard gives its readable members and then one error, as a
    single-member shard does: with every inflater alike."""
    members = images(3, start=40)
    data = multi_member(tar_bytes(members, gz=False), [1000, 4500, 8000])
    path = tmp_path / "s.tar.gz"
    for cut in range(1, len(data), 97):
        write(path, data[:cut])
        got = list(iter_members(Shard("s.tar.gz", str(path), "tar.gz")))
        errors = [m for m in got if m.error is not None]
        if len(got) == 3 and not errors:
            assert cut > len(data) - 1024, cut  # only end-of-archive padding was cut off, as with one member
            continue
        assert errors == [got[-1]], f"cut at {cut}: {[(m.image_id, m.error) for m in got]}"
        assert [m.data for m in got[:-1]] == [d for _, d in members[: len(got) - 1]], f"cut at {cut}"
        assert got[-1].error.startswith(f"shard s.tar.gz unreadable after {len(got) - 1} members: "), cut


def test_cut_inside_a_member_names_the_gzip_member(tmp_path, inflater):
    data = multi_member(tar_bytes(images(4), gz=False), [5000])
    path = write(tmp_path / "s.tar.gz", data[: len(data) - 300])
    got = list(iter_members(Shard("s.tar.gz", path, "tar.gz")))
    assert got[-1].error.endswith("EOFError: gzip data ends inside member 2 (cut off)")


def test_garbage_after_a_gzip_member_is_an_error_after_its_members(tmp_path, inflater):
    plain = tar_bytes(images(2), gz=False)
    data = gzip.compress(plain[:4000], mtime=0) + b"this is not gzip" + gzip.compress(plain[4000:], mtime=0)
    got = list(iter_members(Shard("s.tar.gz", write(tmp_path / "s.tar.gz", data), "tar.gz")))
    assert [m.data for m in got[:-1]] == [payload(0)]
    assert got[-1].error == ("shard s.tar.gz unreadable after 1 members: ReadError: bytes after gzip member 1 "
                             "are not gzip data")


def test_wrong_gzip_crc_is_an_error(tmp_path, inflater):
    data = bytearray(gzip.compress(tar_bytes(images(2), gz=False), mtime=0))
    data[-8] ^= 0x01  # the member's CRC-32 trailer
    got = list(iter_members(Shard("s.tar.gz", write(tmp_path / "s.tar.gz", bytes(data)), "tar.gz")))
    assert got[-1].data is None
    assert "ReadError: corrupt gzip data in member 1" in got[-1].error
    assert all(m.error is None for m in got[:-1])


def test_empty_tar_gz_is_an_error(tmp_path, inflater):
    got = list(iter_members(Shard("e.tar.gz", write(tmp_path / "e.tar.gz", b""), "tar.gz")))
    assert [(m.image_id, m.error) for m in got] == [
        ("e.tar.gz", "shard e.tar.gz unreadable after 0 members: ReadError: empty file (no gzip data)")]


@pytest.mark.skipif(shutil.which("pigz") is None, reason="pigz is not installed")
def test_shards_written_by_pigz(tmp_path):
    """pigz -i (independent blocks, one member) and two pigz outputs appended (two members), as parallel
    archivers write them: every image comes back, and `tar tzf` agrees."""
    plain = tar_bytes(images(8), gz=False)
    whole = write(tmp_path / "whole.tar", plain)
    subprocess.run(["pigz", "-i", "-b", "32", "-k", whole], check=True)  # 32 KiB independent blocks
    halves = [write(tmp_path / f"half{k}", part) for k, part in enumerate((plain[:10_000], plain[10_000:]))]
    appended = tmp_path / "appended.tar.gz"
    with open(appended, "wb") as out:
        for half in halves:
            out.write(subprocess.run(["pigz", "-c", half], check=True, capture_output=True).stdout)
    for shard in (whole + ".gz", str(appended)):
        got = list(iter_members(Shard("s.tar.gz", shard, "tar.gz")))
        assert [m.data for m in got] == [payload(i) for i in range(8)], shard
        listing = subprocess.run(["tar", "tzf", shard], capture_output=True, text=True, check=True).stdout.split()
        assert len(listing) == 8
