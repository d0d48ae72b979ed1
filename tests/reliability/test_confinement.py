"""Nothing written outside --out, nothing run from a tampered artifact, every listed image accounted for."""

from __future__ import annotations

import json
import os

import boto3
import pytest

from jobs import score
from storage.artifacts import open_artifact, write_artifact
from storage.fs import StorageError
from tests.integration.test_score_s3 import upload_dir
from tests.reliability.cases import assert_exactly_once, config, files_under, make_archive, rows


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    return make_archive(str(tmp_path_factory.mktemp("conf") / "archive"))


def _crafted(model_uri: str, out: str, name: str) -> str:
    """The model artifact again, every file hash valid, with a manifest whose model name is `name`."""
    source = open_artifact(model_uri)
    files = {rel: source.read(rel) for rel in source.manifest["files"]}
    body = {k: v for k, v in source.manifest.items() if k not in ("files", "schema_version")}
    write_artifact(out, files, {**body, "model": name})
    return out


def test_a_crafted_model_name_cannot_write_outside_out_locally(local_ray, tiny_models, archive, tmp_path):
    model = _crafted(tiny_models["models"][0], str(tmp_path / "artifacts" / "crafted"), "../../x")
    box = tmp_path / "box"
    out = box / "a" / "b" / "scores"
    before = files_under(str(tmp_path))
    summary = score.run(config(archive, model, str(out)))
    assert os.path.dirname(summary.results_uri) == str(out)
    assert os.path.basename(summary.results_uri).startswith("_.._x-")
    new = files_under(str(tmp_path)) - before
    assert new and all(path.startswith("box/a/b/scores/") for path in new), sorted(new)[:5]
    assert_exactly_once(summary.results_uri, 24)


def test_a_crafted_model_name_cannot_write_outside_the_s3_prefix(local_ray, tiny_models, archive, tmp_path,
                                                                 s3_endpoint, s3_bucket):
    model = _crafted(tiny_models["models"][0], str(tmp_path / "crafted"), "../../x")
    upload_dir(model, s3_bucket, "models/crafted", s3_endpoint)
    summary = score.run(config(archive, f"s3://{s3_bucket}/models/crafted", f"s3://{s3_bucket}/deep/scores",
                               s3_endpoint=s3_endpoint))
    assert summary.rows == 24
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=s3_bucket)["Contents"]]
    written = [k for k in keys if not k.startswith("models/")]
    assert written and all(k.startswith("deep/scores/_.._x-") for k in written), written


def test_a_tampered_artifact_is_refused_before_any_work(tiny_models, archive, tmp_path, capsys):
    model = str(tmp_path / "model")
    _crafted(tiny_models["models"][0], model, "dwsep_cnn")
    with open(os.path.join(model, "int8", "model.bin"), "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "scores"
    with pytest.raises(StorageError, match=r"int8/model.bin: sha256 mismatch with the manifest"):
        score.run(config(archive, model, str(out)))
    assert not out.exists() or not files_under(str(out))  # no claim left behind to block a later run
    os.remove(os.path.join(model, "int8", "model.bin"))
    assert score.main(["--archive", archive, "--model", model, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "int8/model.bin: not found" in err and len(err.strip().splitlines()) == 1


def test_loose_files_outside_the_archive_dangling_links_and_fifos_become_error_rows(
        local_ray, tiny_models, archive, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    import tarfile

    with tarfile.open(os.path.join(archive, "images_001.tar.gz")) as tar:
        members = [m for m in tar.getmembers() if m.isfile()][:3]
        for m in members:
            (loose / os.path.basename(m.name)).write_bytes(tar.extractfile(m).read())
    (tmp_path / "secret.png").write_bytes(b"root:x:0:0:root")
    os.symlink(tmp_path / "secret.png", loose / "escape.png")
    os.symlink(tmp_path / "gone.png", loose / "dangling.png")
    os.mkfifo(loose / "pipe.png")
    summary = score.run(config(str(loose), tiny_models["models"][0], str(tmp_path / "scores")))
    got = {r["source"]: r["status"] for r in rows(summary.results_uri)}
    assert len(got) == 6 and (summary.ok, summary.errors) == (3, 3)
    assert {s for s, status in got.items() if status == "error"} == {"escape.png", "dangling.png", "pipe.png"}
    manifest = json.loads((tmp_path / "scores" / os.path.basename(summary.results_uri) / "_manifest.json").read_text())
    assert "root:x" not in json.dumps(manifest)


@pytest.mark.parametrize(("argv", "message"), [
    (["--out", ""], "--out is empty"),
    (["--progress-every-s", "-1"], "--progress-every-s must be a positive number"),
])
def test_bad_flags_fail_with_one_line_before_any_work(archive, tiny_models, tmp_path, capsys, argv, message):
    base = {"--archive": archive, "--model": tiny_models["models"][0], "--out": str(tmp_path / "o")}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    assert score.main([x for kv in base.items() for x in kv]) == 2
    assert message in capsys.readouterr().err
    assert not os.listdir(tmp_path)
