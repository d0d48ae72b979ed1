"""Archive, model and results on a real S3 server (moto on loopback); polars reads the rows straight from it."""

from __future__ import annotations

import json
import os

import boto3
import polars as pl
import pytest

from jobs import score, synth
from storage.artifacts import open_artifact


def upload_dir(local: str, bucket: str, prefix: str, endpoint: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    for name in os.listdir(local):
        path = os.path.join(local, name)
        if os.path.isdir(path):
            upload_dir(path, bucket, f"{prefix}/{name}", endpoint)
        else:
            client.upload_file(path, bucket, f"{prefix}/{name}")


def test_score_s3_to_s3_and_read_with_polars(local_ray, tiny_models, s3_endpoint, s3_bucket):
    archive = f"s3://{s3_bucket}/nih"
    synth.run(synth.SynthConfig(out=archive, n_images=60, size=128, shards=2, seed=5, s3_endpoint=s3_endpoint))
    upload_dir(tiny_models["models"][0], s3_bucket, "models/tiny", s3_endpoint)
    model = f"s3://{s3_bucket}/models/tiny"
    summary = score.run(score.ScoreConfig(archive=archive, model=model, out=f"s3://{s3_bucket}/scores",
                                          metadata=f"{archive}/Data_Entry_2017.csv", chunk_size=8,
                                          s3_endpoint=s3_endpoint))
    assert summary.results_uri.startswith(f"s3://{s3_bucket}/scores/dwsep_cnn-")
    assert summary.rows == 60 and summary.ok == 60

    frame = pl.read_parquet(f"{summary.results_uri}/*.parquet", storage_options={
        "aws_endpoint_url": s3_endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
        "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
    })
    assert frame.height == 60 and frame["image_id"].n_unique() == 60
    assert frame["artifact_sha256"].unique().to_list() == [open_artifact(model, s3_endpoint).sha256]
    assert frame["prob_Pleural_Thickening"].dtype == pl.Float32
    assert frame["prob_Nodule"].min() >= 0.0 and frame["prob_Nodule"].max() <= 1.0

    # The manifest is the commit marker; no credential appears in anything written.
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    key = summary.results_uri.split("/", 3)[3] + "/_manifest.json"
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    assert manifest["rows"] == 60 and manifest["missing_from_archive"] == 0
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for obj in client.list_objects_v2(Bucket=s3_bucket, Prefix="scores/")["Contents"]:
        assert secret.encode() not in client.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read()


def test_unreachable_endpoint_fails_before_work(tiny_models, tmp_path):
    with pytest.raises(OSError, match="cannot reach"):
        score.run(score.ScoreConfig(archive=tiny_models["archive"], model=tiny_models["models"][0],
                                    out="s3://nobucket/out", s3_endpoint="http://127.0.0.1:9"))
