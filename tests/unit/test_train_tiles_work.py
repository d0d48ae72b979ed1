"""train-tiles' work directory: checkpoints are resumed only under the settings that trained them."""

from __future__ import annotations

import json

import pytest

from jobs.train_tiles import WORK_CLAIM, TrainTilesConfig, claim_work


def test_the_work_claim_allows_a_resume_and_more_epochs_but_refuses_other_settings(tmp_path):
    cfg = TrainTilesConfig(archive="a", out=str(tmp_path / "ens"), image_size=256, tile_size=128, stride=128)
    claim_work(cfg)
    recorded = json.loads((tmp_path / "ens.work" / WORK_CLAIM).read_text())
    assert recorded["backbone"] == "resnet18" and recorded["tile_size"] == 128
    claim_work(cfg)  # the same settings: resume
    claim_work(TrainTilesConfig(**{**cfg.__dict__, "epochs": 9}))  # more epochs continue the checkpoints
    other = TrainTilesConfig(**{**cfg.__dict__, "backbone": "dwsep_cnn", "stride": 64})
    with pytest.raises(ValueError, match=r"--stride 64 \(was 128\), --backbone dwsep_cnn \(was resnet18\)"):
        claim_work(other)


def test_a_work_directory_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "notes.txt").write_text("mine")
    cfg = TrainTilesConfig(archive="a", out=str(tmp_path / "ens"), work=str(tmp_path / "w"))
    with pytest.raises(ValueError, match="holds files that train-tiles did not write"):
        claim_work(cfg)
    assert (tmp_path / "w" / "notes.txt").read_text() == "mine"
