"""storage.run_claim: a rerun resumes only what its claim allows, and says which flag or shard stops it."""

from __future__ import annotations

import pytest

from storage.archives import Shard
from storage.run_claim import Chunking, RunClaim, new_claim, reconcile

CHUNKING = Chunking(64, 8)


def _shards(**fingerprints: str) -> list[Shard]:
    return [Shard(name.replace("__", "/") + ".tar.gz", f"/a/{name}", "tar.gz", fingerprint=fp)
            for name, fp in fingerprints.items()]


def _claim(**fingerprints: str) -> RunClaim:
    return new_claim("run-1", "/a", "f" * 64, CHUNKING, _shards(**fingerprints), {"chunk_size": 64})


def test_claim_round_trips_and_an_unchanged_archive_resumes_with_nothing_new():
    claim = _claim(images_001="size=1", images_002="size=2")
    again = RunClaim.from_json(claim.to_json(), "x")
    assert again == claim
    now = _shards(images_001="size=1", images_002="size=2")
    checked = reconcile(again, "run-1", "/a", "f" * 64, CHUNKING, now, "o")
    assert checked.new_shards == () and checked.claim == claim


def test_a_new_shard_is_scored_and_added_to_the_claim():
    checked = reconcile(_claim(images_001="size=1"), "run-1", "/a", "f" * 64, CHUNKING,
                        _shards(images_001="size=1", sub__images_001="size=9"), "o")
    assert checked.new_shards == ("sub/images_001.tar.gz",)
    assert checked.claim.shards == {"images_001.tar.gz": "size=1", "sub/images_001.tar.gz": "size=9"}


@pytest.mark.parametrize(("now", "message"), [
    (dict(images_001="size=1"), r"removed: images_002.tar.gz"),
    (dict(images_001="size=1", images_002="size=3"), r"changed: images_002.tar.gz"),
])
def test_removed_or_changed_shards_are_refused_by_name(now, message):
    with pytest.raises(ValueError, match=message):
        reconcile(_claim(images_001="size=1", images_002="size=2"), "run-1", "/a", "f" * 64, CHUNKING,
                  _shards(**now), "o")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(chunking=Chunking(7, 8)), r"--chunk-size 7: run run-1 in o was started with --chunk-size 64"),
    (dict(chunking=Chunking(64, 1)), r"--chunk-mb 1: .* --chunk-mb 8"),
    (dict(archive="/b"), r"--archive /b: o holds run run-1 of archive /a"),
    (dict(artifact="e" * 64), r"--model: o holds run run-1 of artifact ffffffffffff"),
    (dict(run_id="run-2"), r"--run-id run-2: o already holds run run-1"),
])
def test_a_rerun_with_other_inputs_is_refused_naming_the_flag(kwargs, message):
    args = {"run_id": "run-1", "archive": "/a", "artifact": "f" * 64, "chunking": CHUNKING, **kwargs}
    with pytest.raises(ValueError, match=message):
        reconcile(_claim(images_001="size=1"), args["run_id"], args["archive"], args["artifact"], args["chunking"],
                  _shards(images_001="size=1"), "o")


def test_a_claim_without_the_archive_identity_cannot_be_resumed():
    with pytest.raises(ValueError, match="cannot be resumed safely. Score into a new --out"):
        RunClaim.from_json({"run_id": "r", "config": {}, "artifact_sha256": "f"}, "o/_run.json")


def test_changed_loose_files_are_named_not_their_group(tmp_path):
    from storage.archives import list_shards

    root = tmp_path / "loose"
    (root / "images").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png"):
        (root / "images" / name).write_bytes(b"\x89PNG" + name.encode())
    claim = new_claim("run-1", str(root), "f" * 64, CHUNKING, list_shards(str(root)), {})
    claim = RunClaim.from_json(claim.to_json(), "x")  # the listing survives the claim file
    assert claim.loose_files["files-00000"] == ("images/a.png\t9", "images/b.png\t9", "images/c.png\t9")
    (root / "images" / "b2.png").write_bytes(b"new")
    (root / "images" / "c.png").write_bytes(b"longer than before")
    (root / "images" / "a.png").unlink()
    with pytest.raises(ValueError) as exc:
        reconcile(claim, "run-1", str(root), "f" * 64, CHUNKING, list_shards(str(root)), "o")
    message = str(exc.value)
    assert "added 1: images/b2.png" in message and "gone 1: images/a.png" in message
    assert "resized 1: images/c.png" in message and "files-00000" not in message
    # unchanged files resume
    (root / "images" / "b2.png").unlink()
    (root / "images" / "c.png").write_bytes(b"\x89PNGc.png")
    (root / "images" / "a.png").write_bytes(b"\x89PNGa.png")
    assert reconcile(claim, "run-1", str(root), "f" * 64, CHUNKING, list_shards(str(root)), "o").new_shards == ()
