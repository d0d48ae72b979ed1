"""Failures a user meets end in one line that names the cause and the way out, never a traceback, and a job
writes nothing outside what it was told to (OpenVINO's telemetry is off)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from cli.job_main import job_main, remote_cause
from tests.conftest import REPO
from xray.metadata.nih import parse_data_entry


@dataclasses.dataclass(frozen=True)
class _Config:
    out: str
    """Where."""


def test_ctrl_c_ends_in_one_line_and_exit_130(capsys):
    def interrupted(_cfg):
        raise KeyboardInterrupt

    assert job_main(_Config, interrupted, "tilescope x", None, ["--out", "o"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tilescope x: interrupted; what was written is kept, and the same command resumes where it can"]


def test_an_error_raised_in_a_ray_task_is_reported_by_its_cause(capsys):
    class RemoteWrapper(ValueError):  # what ray.exceptions.RayTaskError(ValueError) looks like
        def __init__(self, cause: BaseException) -> None:
            super().__init__("Traceback (most recent call last):\n  File ...\n" + str(cause))
            self.cause = cause

    wrapped = RemoteWrapper(ValueError("[p003] checkpoint s3://b/w/p003/checkpoint.pt is unreadable"))
    assert remote_cause(wrapped) is wrapped.cause

    def failing(_cfg):
        raise wrapped

    assert job_main(_Config, failing, "tilescope train-tiles", None, ["--out", "o"]) == 2
    assert capsys.readouterr().err == ("tilescope train-tiles: error: [p003] checkpoint s3://b/w/p003/checkpoint.pt "
                                       "is unreadable\n")


def test_non_utf8_metadata_names_the_file_and_the_line():
    body = b"Image Index,Finding Labels\n" + b"00000001_000.png,Nodule\xff\n"
    with pytest.raises(ValueError, match=r"s3://b/Data_Entry_2017.csv: not UTF-8 text \(byte 0xff at line 2\)"):
        parse_data_entry(body, source="s3://b/Data_Entry_2017.csv")


def test_a_poisoned_tile_checkpoint_names_itself_and_the_way_out(tmp_path):
    from actors.tile_trainer import PositionPlan, TileTrainer
    from xray.metadata.labels import LABELS
    from xray.tiles.grid import TileGrid

    plan = PositionPlan(position=3, grid=TileGrid(64, 32, 32), backbone="dwsep_cnn", labels=LABELS, epochs=2,
                        batch_size=4, lr=1e-3, seed=0, calibration_size=4, preset="performance",
                        work_uri=str(tmp_path / "work"))
    (tmp_path / "work" / "p003").mkdir(parents=True)
    (tmp_path / "work" / "p003" / "checkpoint.pt").write_bytes(b"\x80\x04 not a checkpoint")
    trainer = TileTrainer(threads=torch.get_num_threads())
    with pytest.raises(ValueError, match=r"\[p003\] checkpoint .*p003/checkpoint.pt is unreadable "
                                         r"\(\w+\); delete it to train this position again"):
        trainer._state(plan, 1)


def test_openvino_writes_no_telemetry_under_home(tmp_path):
    code = ("import actors.openvino_ir as ir, numpy as np, openvino as ov\n"
            "from xray.models.registry import build_model\nfrom xray.metadata.manifests import ModelSpec\n"
            "from xray.metadata.labels import LABELS\n"
            "m = ir.export_fp32(build_model(ModelSpec('dwsep_cnn', LABELS, 32)).eval(), 32)\n"
            "print(ir.infer_probs(m, np.zeros((2, 1, 32, 32), np.uint8)).shape)\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "(2, 14)"
    assert os.listdir(tmp_path) == []  # no ~/intel/openvino_ga_cid, no stats


def test_progress_never_reads_above_100_percent_when_the_archive_holds_unlisted_images():
    import io

    from jobs.score_stages import ProgressLine

    now = [100.0]
    line = ProgressLine(total=55, every_s=1e9, stream=io.StringIO(), clock=lambda: now[0])
    line.update(rows=10, errors=0)  # the first chunk starts the rate's window
    now[0] = 108.0
    line.update(rows=40, errors=1)
    assert line.render(110.0) == "[score] 50/55 images (90.9%)  4.0 images/s  errors 1  ETA 1s"
    now[0] = 112.0
    line.update(rows=10, errors=0)
    assert line.render(112.0) == "[score] 60 images (55 listed)  4.2 images/s  errors 1  ETA ?"


def test_a_storage_failure_wrapped_by_ray_data_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    class UserCodeException(Exception):  # Ray Data's wrapper around an exception of a map task
        pass

    def outage(_cfg):
        try:
            raise OSError("s3://b/scores/part-images_001.tar.gz-00003.parquet: cannot write (AWS Error NETWORK)")
        except OSError as exc:
            raise UserCodeException("map task failed") from exc

    assert job_main(_Config, outage, "tilescope score", None, ["--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == ("tilescope score: error: s3://b/scores/part-images_001.tar.gz-00003"
                                               ".parquet: cannot write (AWS Error NETWORK)")

    def bug(_cfg):
        raise KeyError("labels")

    with pytest.raises(KeyError):
        job_main(_Config, bug, "tilescope score", None, ["--out", "o"])
