"""jobs/demo.py deletes nothing it did not make, and checks every flag before any work (no Ray needed: every
case here stops before the first stage, or runs only claim_workdir)."""

from __future__ import annotations

import json
import os

import pytest

from jobs import demo


def _tree(root) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def test_a_directory_with_a_user_file_is_refused_and_left_untouched(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    (work / "archive").mkdir()
    (work / "archive" / "real_shard.tar.gz").write_bytes(b"not the demo's")
    assert demo.main(["--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tilescope demo: error: --workdir ")
    assert "archive, notes.txt" in err and "--force" in err and demo.MARKER in err
    assert _tree(work) == {"notes.txt": b"mine", "archive/real_shard.tar.gz": b"not the demo's"}


def test_the_checkout_itself_is_refused(capsys):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    before = sorted(os.listdir(repo))
    assert demo.main(["--workdir", repo]) == 2
    assert "holds files the demo did not make" in capsys.readouterr().err
    assert sorted(os.listdir(repo)) == before


def test_force_replaces_only_the_demos_own_entries(tmp_path):
    work = tmp_path / "work"
    (work / "scores").mkdir(parents=True)
    (work / "scores" / "old.parquet").write_bytes(b"old rows")
    (work / "ensemble.work").mkdir()
    (work / "notes.txt").write_text("mine")
    (work / "archive.bak").write_text("also mine")
    root = demo.claim_workdir(demo.DemoConfig(workdir=str(work), force=True))
    assert root.path == str(work)
    assert set(os.listdir(work)) == {"notes.txt", "archive.bak", demo.MARKER}
    assert (work / "notes.txt").read_text() == "mine"
    marker = json.loads((work / demo.MARKER).read_text())
    assert marker["made_by"] == "tilescope demo" and marker["entries"] == list(demo.ENTRIES)


def test_a_directory_marked_by_an_earlier_demo_is_reused_without_force(tmp_path):
    work = tmp_path / "work"
    demo.claim_workdir(demo.DemoConfig(workdir=str(work)))  # new: created and marked
    assert os.listdir(work) == [demo.MARKER]
    (work / "report").mkdir()
    (work / "report" / "report.html").write_text("<html>")
    (work / "notes.txt").write_text("added later by the user")
    demo.claim_workdir(demo.DemoConfig(workdir=str(work)))
    assert sorted(os.listdir(work)) == sorted([demo.MARKER, "notes.txt"])
    (work / demo.MARKER).write_text("{}")  # a marker that is not the demo's does not count
    with pytest.raises(ValueError, match="holds files the demo did not make"):
        demo.claim_workdir(demo.DemoConfig(workdir=str(work)))


def test_an_empty_directory_is_taken_and_a_file_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    demo.claim_workdir(demo.DemoConfig(workdir=str(empty)))
    assert os.listdir(empty) == [demo.MARKER]
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        demo.claim_workdir(demo.DemoConfig(workdir=str(afile), force=True))
    assert afile.read_text() == "x"


def test_every_flag_is_checked_before_anything_is_written(tmp_path, capsys):
    work = tmp_path / "new"
    rc = demo.main(["--workdir", str(work), "--n-images", "20", "--input-size", "16", "--epochs", "0",
                    "--tile-size", "0", "--shards", "30"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("tilescope demo: error: invalid configuration")
    for problem in ("--n-images must be at least 50", "--tile-size must be in [1, --size 512], got 0",
                    "--shards 30 exceeds --n-images 20; a shard cannot be empty (in the synth stage)",
                    "--input-size 16 is below 32 pixels (in the train stage)",
                    "--epochs must be at least 1 (in the train stage)",
                    "--epochs must be at least 1 (in the train-tiles stage)"):
        assert problem in err, problem
    assert not work.exists()


def test_old_model_flag_warns_and_sets_the_backbone(tmp_path, capsys):
    assert demo.main(["--workdir", str(tmp_path / "w"), "--model", "resnet18", "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "tilescope demo: warning: --model is now --backbone" in captured.err
    assert "\nbackbone: resnet18\n" in captured.out
    assert not (tmp_path / "w").exists()  # --print-config runs nothing
