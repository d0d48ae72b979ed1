"""The demo's --workdir on S3 (the moto server on loopback): a prefix holding someone else's objects is refused,
and --force replaces only the demo's own entries there."""

from __future__ import annotations

import boto3
import pytest

from jobs import demo


def _keys(endpoint: str, bucket: str) -> set[str]:
    """Every object, less pyarrow's empty directory markers (`demo/`: it keeps a parent "directory" after a
    delete under it)."""
    listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return {o["Key"] for o in listed.get("Contents", []) if not (o["Key"].endswith("/") and o["Size"] == 0)}


def test_s3_workdir_keeps_what_the_demo_did_not_make(s3_endpoint, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="demo/notes.txt", Body=b"mine")
    s3.put_object(Bucket=s3_bucket, Key="demo/scores/old/part-0.parquet", Body=b"an earlier demo's rows")
    s3.put_object(Bucket=s3_bucket, Key="elsewhere/archive/images_001.tar.gz", Body=b"not under --workdir")
    cfg = demo.DemoConfig(workdir=f"s3://{s3_bucket}/demo", s3_endpoint=s3_endpoint)
    with pytest.raises(ValueError, match=r"holds files the demo did not make \(notes.txt, scores\)"):
        demo.claim_workdir(cfg)
    assert _keys(s3_endpoint, s3_bucket) == {"demo/notes.txt", "demo/scores/old/part-0.parquet",
                                             "elsewhere/archive/images_001.tar.gz"}
    demo.claim_workdir(demo.DemoConfig(workdir=cfg.workdir, s3_endpoint=s3_endpoint, force=True))
    assert _keys(s3_endpoint, s3_bucket) == {"demo/notes.txt", f"demo/{demo.MARKER}",
                                             "elsewhere/archive/images_001.tar.gz"}
    demo.claim_workdir(cfg)  # marked now: taken again without --force
    new = demo.DemoConfig(workdir=f"s3://{s3_bucket}/fresh", s3_endpoint=s3_endpoint)
    demo.claim_workdir(new)  # a prefix with nothing under it is new
    assert f"fresh/{demo.MARKER}" in _keys(s3_endpoint, s3_bucket)
