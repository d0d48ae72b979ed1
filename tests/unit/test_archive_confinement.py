"""Loose-file archives stay inside their root, every listed image is accounted for, and a shard is known by
its path relative to the archive root (so same-named shards in two folders never collide)."""

from __future__ import annotations

import os

from storage.archives import iter_members, list_shards
from tests.unit.test_archives import images, tar_bytes, write


def _rows(archive: str) -> dict[str, tuple[str, str | None, bool]]:
    """source -> (image id, error, has bytes) over every member of the archive."""
    return {m.source: (m.image_id, m.error, m.data is not None)
            for s in list_shards(archive) for m in iter_members(s)}


def test_links_out_of_the_archive_dangling_links_and_fifos_become_error_rows(tmp_path):
    root = tmp_path / "archive"
    write(root / "ok.png", b"\x89PNG fine")
    write(tmp_path / "outside" / "secret.png", b"root:x:0:0")
    os.symlink(tmp_path / "outside" / "secret.png", root / "escape.png")
    os.symlink(root / "ok.png", root / "inside.png")
    os.symlink(tmp_path / "nowhere.png", root / "dangling.png")
    os.mkfifo(root / "pipe.png")
    rows = _rows(str(root))  # must not block on the FIFO
    assert rows["ok.png"] == ("ok.png", None, True)
    assert rows["inside.png"] == ("inside.png", None, True)
    assert rows["escape.png"] == ("escape.png", "symbolic link to a file outside the archive (not followed)", False)
    assert rows["dangling.png"] == ("dangling.png", "dangling symbolic link", False)
    assert rows["pipe.png"] == ("pipe.png", "not a regular file (FIFO)", False)
    assert not any("root:x" in (error or "") for _, error, _ in rows.values())


def test_a_tar_shard_linked_from_outside_the_archive_is_not_read(tmp_path):
    write(tmp_path / "elsewhere" / "images_009.tar", tar_bytes(images(2), gz=False))
    (tmp_path / "archive").mkdir()
    os.symlink(tmp_path / "elsewhere" / "images_009.tar", tmp_path / "archive" / "images_009.tar")
    (member,) = [m for s in list_shards(str(tmp_path / "archive")) for m in iter_members(s)]
    assert member.error == "shard images_009.tar: symbolic link to a file outside the archive (not followed)"


def test_same_named_shards_in_two_folders_are_two_shards_with_their_own_sources(tmp_path):
    write(tmp_path / "a" / "images_001.tar.gz", tar_bytes(images(2), gz=True))
    write(tmp_path / "b" / "images_001.tar.gz", tar_bytes(images(3, start=10), gz=True))
    shards = list_shards(str(tmp_path))
    assert [s.name for s in shards] == ["a/images_001.tar.gz", "b/images_001.tar.gz"]
    sources = [m.source for s in shards for m in iter_members(s)]
    assert len(sources) == len(set(sources)) == 5
    assert sources[0] == "a/images_001.tar.gz:images/00000000_000.png"


def test_fingerprints_change_with_content_and_stay_with_it(tmp_path):
    write(tmp_path / "images_001.tar", tar_bytes(images(2), gz=False))
    write(tmp_path / "x.png", b"one")
    before = {s.name: s.fingerprint for s in list_shards(str(tmp_path))}
    assert before == {s.name: s.fingerprint for s in list_shards(str(tmp_path))}
    write(tmp_path / "images_001.tar", tar_bytes(images(3), gz=False))
    write(tmp_path / "x.png", b"three")
    after = {s.name: s.fingerprint for s in list_shards(str(tmp_path))}
    assert set(after) == set(before) == {"images_001.tar", "files-00000"}
    assert all(after[name] != before[name] for name in before)
