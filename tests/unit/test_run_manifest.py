"""The scoring run's typed `_manifest.json`: a round trip, older manifests read, newer and broken ones refused."""

from __future__ import annotations

import json

import pytest

from storage.fs import resolve
from storage.results import RESULTS_SCHEMA_VERSION, RUN_MANIFEST
from storage.run_manifest import RunManifest, read_manifest, write_manifest


def _manifest() -> RunManifest:
    return RunManifest(run_id="nih-v1", rows=10, ok=9, errors=1, files=2, error_reasons={"truncated": 1},
                       missing_from_archive=0, scored_this_attempt=10, seconds_this_attempt=1.5,
                       pipeline_seconds_this_attempt=1.0, images_per_s=10.0, cost={"core_ms_per_image": 12.5},
                       model="dwsep_cnn", artifact_uri="/m", artifact_sha256="ab" * 32, precision="int8",
                       requested_precision="int8", ran=({"precision": "int8", "cpu_isa": "avx2", "rows": 9},),
                       labels=("Mass", "Nodule"), shards=("images_001.tar.gz",), config={"chunk_size": 64},
                       versions={"tilescope": "0.1.0"})


def test_round_trip_through_the_file(tmp_path):
    run = resolve(str(tmp_path))
    write_manifest(run, _manifest())
    body = json.loads((tmp_path / RUN_MANIFEST).read_text())
    assert body["results_schema_version"] == RESULTS_SCHEMA_VERSION
    assert body["ran"] == [{"precision": "int8", "cpu_isa": "avx2", "rows": 9}] and body["labels"] == ["Mass", "Nodule"]
    assert read_manifest(run) == _manifest()


def test_an_uncommitted_run_has_none(tmp_path):
    assert read_manifest(resolve(str(tmp_path))) is None


def test_an_older_manifest_reads_with_what_it_lacks_as_none():
    old = RunManifest.from_json({"results_schema_version": 1, "run_id": "r", "rows": 3, "ok": 3, "errors": 0,
                                 "model": "m", "unknown_later_key": 1}, "old/_manifest.json")
    assert (old.results_schema_version, old.model, old.precision, old.cost) == (1, "m", None, {})


@pytest.mark.parametrize(("body", "message"), [
    ({"results_schema_version": RESULTS_SCHEMA_VERSION + 1, "run_id": "r", "rows": 1, "ok": 1, "errors": 0},
     "newer than this tilescope reads"),
    ({"run_id": "r", "rows": 1}, "missing ok, errors"),
    ({"run_id": "r", "rows": "12", "ok": 1, "errors": 0}, "rows must be an integer"),
    (["not", "an", "object"], "a JSON object was expected"),
])
def test_broken_manifests_are_refused_naming_file_and_key(body, message):
    with pytest.raises(ValueError, match=message) as info:
        RunManifest.from_json(body, "s3://b/run/_manifest.json")
    assert "s3://b/run/_manifest.json" in str(info.value)
