"""Every job probes the buckets of its s3:// URIs before any work: an endpoint nobody answers on, or a bucket that
does not exist, ends in one line naming the flag (exit 2), with nothing written and no read's retries first."""

from __future__ import annotations

import socket

import pytest

from jobs import import_model, quantize, report, score, synth, train, train_tiles


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


JOBS = [
    (synth.main, ["--out", "s3://nowhere/archive"], "--out"),
    (train.main, ["--archive", "s3://nowhere/nih", "--out", "LOCAL"], "--archive"),
    (quantize.main, ["--checkpoint", "s3://nowhere/ckpt", "--out", "LOCAL"], "--checkpoint"),
    (import_model.main, ["--onnx", "s3://nowhere/m.onnx", "--labels", "Mass", "--out", "LOCAL"], "--onnx"),
    (train_tiles.main, ["--archive", "s3://nowhere/nih", "--out", "LOCAL", "--image-size", "64", "--tile-size", "32",
                        "--stride", "32"], "--archive"),
    (score.main, ["--archive", "LOCAL", "--model", "s3://nowhere/model", "--out", "LOCAL"], "--model"),
    (report.main, ["--results", "s3://nowhere/scores", "--metadata", "LOCAL", "--out", "LOCAL"], "--results"),
]


@pytest.mark.parametrize(("main", "argv", "flag"), JOBS, ids=[m.__module__ for m, _, _ in JOBS])
def test_an_unreachable_endpoint_fails_first_naming_the_flag(tmp_path, capsys, main, argv, flag):
    argv = [str(tmp_path / "local") if a == "LOCAL" else a for a in argv]
    code = main([*argv, "--s3-endpoint", f"http://127.0.0.1:{_closed_port()}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("tilescope ") and f": error: {flag} s3://nowhere/" in err[0]
    assert "cannot reach the bucket" in err[0] and "--s3-endpoint" in err[0]
    assert not (tmp_path / "local").exists()


def test_a_missing_bucket_is_named_before_any_work(tmp_path, capsys, s3_endpoint, s3_bucket):
    archive = str(tmp_path / "archive")
    code = score.main(["--archive", archive, "--model", f"s3://{s3_bucket}/model", "--out",
                       "s3://no-such-bucket-here/scores", "--s3-endpoint", s3_endpoint])
    err = capsys.readouterr().err.strip().splitlines()
    expected = "--out s3://no-such-bucket-here/scores: s3://no-such-bucket-here: bucket does not exist"
    assert code == 2 and err[-1].endswith(expected), err
