"""Shared helpers of the reliability suite: small archives, a run's rows read back, and a census of files."""

from __future__ import annotations

import glob
import os
import shutil

import pyarrow.dataset as pads

from jobs import score, synth


def make_archive(path: str, n_images: int = 24, shards: int = 2, seed: int = 5) -> str:
    synth.run(synth.SynthConfig(out=path, n_images=n_images, size=96, shards=shards, seed=seed))
    return path


def config(archive: str, model: str, out: str, **kw) -> score.ScoreConfig:
    return score.ScoreConfig(archive=archive, model=model, out=out, chunk_size=kw.pop("chunk_size", 4),
                             actors=1, progress_every_s=60.0, **kw)


def rows(results_uri: str) -> list[dict]:
    """Every row of a run (image_id, source, status), read through the documented glob."""
    files = sorted(glob.glob(os.path.join(results_uri, "part-*.parquet")))
    return pads.dataset(files, format="parquet").to_table(columns=["image_id", "source", "status"]).to_pylist()


def assert_exactly_once(results_uri: str, expected: int) -> list[dict]:
    got = rows(results_uri)
    sources = [r["source"] for r in got]
    assert len(got) == expected, f"{len(got)} rows, expected {expected}"
    assert len(set(sources)) == expected, "a source has two rows"
    return got


def files_under(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}


def copy_shard(src_archive: str, name: str, dst_archive: str, new_name: str) -> None:
    os.makedirs(os.path.dirname(os.path.join(dst_archive, new_name)), exist_ok=True)
    shutil.copyfile(os.path.join(src_archive, name), os.path.join(dst_archive, new_name))
