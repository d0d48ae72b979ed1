"""xray.metadata.manifests: typed manifests round-trip through JSON, read what older tilescope wrote, and fail with a
message naming the artifact and the key (on the driver, before any actor sees the artifact)."""

from __future__ import annotations

import hashlib
import json

import pytest

from xray.metadata.labels import LABELS
from xray.metadata.manifests import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArtifactKind,
    CheckpointManifest,
    EnsembleManifest,
    ManifestError,
    ModelManifest,
    PositionRecord,
    SplitRecord,
    manifest_from_json,
    normalization_text,
)
from xray.models.registry import ModelSpec
from xray.tiles.grid import TileGrid

SPLIT = SplitRecord(0.2, 5, 100, 20, 30)


def _model() -> ModelManifest:
    return ModelManifest(model="dwsep_cnn", labels=LABELS, input_size=64,
                         irs={"fp32": "fp32/model.xml", "int8": "int8/model.xml"}, split=SPLIT,
                         calibration={"images": 24}, metrics={"fp32_mean_auroc": 0.7}, config={"seed": 5})


def _ensemble() -> EnsembleManifest:
    grid = TileGrid(128, 64, 64)
    positions = tuple(PositionRecord(p, grid.origin(p), {"fp32": f"positions/p{p:03d}/fp32/model.xml",
                                                         "int8": f"positions/p{p:03d}/int8/model.xml"})
                      for p in range(grid.n_positions))
    return EnsembleManifest(model="tiles2x2-dwsep_cnn", backbone="dwsep_cnn", labels=LABELS, grid=grid,
                            positions=positions, combiner="stacked", stacked={"weights": [], "bias": [], "fitted": []},
                            split=SPLIT)


def _via_json(manifest) -> dict:
    return json.loads(json.dumps(manifest.to_json()))


@pytest.mark.parametrize("make", [
    lambda: CheckpointManifest(model=ModelSpec("resnet18", LABELS, 224), split=SPLIT, history=({"epoch": 0},),
                               test_auroc=(0.5,) * len(LABELS), test_mean_auroc=0.5),
    _model, _ensemble,
])
def test_every_kind_round_trips_through_json(make):
    manifest = make()
    assert manifest_from_json(_via_json(manifest), "mem://a") == manifest


def test_model_and_ensemble_expose_the_same_scoring_contract():
    model, ensemble = _model(), _ensemble()
    assert (model.kind, ensemble.kind) == (ArtifactKind.MODEL, ArtifactKind.ENSEMBLE)
    assert model.precisions == ensemble.precisions == ("fp32", "int8")
    assert (model.input_size, ensemble.input_size) == (64, 128)
    assert model.ir_path("int8") == "int8/model.xml"
    assert ensemble.ir_paths("fp32") == [f"positions/p{p:03d}/fp32/model.xml" for p in range(4)]
    with pytest.raises(ManifestError, match="no bf16 IR"):
        model.ir_path("bf16")


def test_manifests_written_before_the_split_was_recorded_still_read():
    # the untyped writers of earlier releases: no "split" in a model, split counts only in an ensemble,
    # and an ensemble "precisions" entry holding a glob
    old_model = {k: v for k, v in _via_json(_model()).items() if k != "split"}
    assert manifest_from_json(old_model, "mem://m").split == SplitRecord(0.15, 5)
    old_ens = _via_json(_ensemble())
    old_ens["split"] = {"train": 10, "val": 2, "test": 3}
    old_ens["config"] = {"val_fraction": 0.3, "seed": 2}
    old_ens["precisions"] = {"fp32": "positions/*/fp32/model.xml"}
    assert manifest_from_json(old_ens, "mem://e").split == SplitRecord(0.3, 2, 10, 2, 3)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda m: m.pop("labels"), r"s3://b/model: manifest.json has no 'labels'"),
    (lambda m: m["input"].pop("shape"), r"has no input\.'shape'"),
    (lambda m: m.update(kind="weights"), r"manifest kind 'weights' is not one of checkpoint, model, ensemble"),
    (lambda m: m.update(labels="Nodule"), r"'labels' is str, expected"),
    (lambda m: m.update(schema_version=99), r"schema_version 99 is newer"),
    (lambda m: m.update(precisions={}), r"'precisions' must map"),
])
def test_a_wrong_or_missing_key_names_the_artifact_and_the_key(mutate, message):
    body = _via_json(_model())
    mutate(body)
    with pytest.raises(ManifestError, match=message):
        manifest_from_json(body, "s3://b/model")


def test_an_ensemble_whose_positions_do_not_fill_its_grid_is_refused():
    body = _via_json(_ensemble())
    body["positions"] = body["positions"][:3]
    with pytest.raises(ManifestError, match=r"lists positions \[0, 1, 2\], the grid has 4"):
        manifest_from_json(body, "e")
    body = _via_json(_ensemble())
    body["combiner"]["default"] = "median"
    with pytest.raises(ManifestError, match="combiner.default 'median'"):
        manifest_from_json(body, "e")


def test_open_typed_checks_the_kind_and_names_the_flag(tmp_path):
    from storage.artifacts import open_typed, write_artifact

    uri = str(tmp_path / "model")
    sha = write_artifact(uri, {"fp32/model.xml": b"<xml/>"}, _model())
    artifact, manifest = open_typed(uri, None, "--model", ArtifactKind.MODEL, ArtifactKind.ENSEMBLE)
    assert artifact.sha256 == sha and manifest == _model()
    assert json.loads((tmp_path / "model" / "manifest.json").read_text())["files"] == {
        "fp32/model.xml": hashlib.sha256(b"<xml/>").hexdigest()}
    with pytest.raises(ValueError, match=rf"--checkpoint {uri}: is a model artifact, this job needs a checkpoint"):
        open_typed(uri, None, "--checkpoint", ArtifactKind.CHECKPOINT)


def test_imported_artifacts_round_trip_with_no_split_their_normalisation_and_source():
    source = {"format": "onnx", "file": "s3://b/m.onnx", "sha256": "ab" * 32,
              "outputs": {"model_outputs": 3, "rows": [2, 0], "labels": ["Mass", "Hernia"], "dropped": [1]}}
    spec = ModelSpec("resnet18", ("Mass", "Hernia"), 224, (0.5,), (0.25,))
    ckpt = CheckpointManifest(model=spec, split=None, source=source)
    body = _via_json(ckpt)
    assert body["split"] is None and body["model"]["mean"] == [0.5] and body["source"] == source
    assert manifest_from_json(body, "mem://c") == ckpt
    model = ModelManifest(model="m", labels=("Mass", "Hernia"), input_size=224, irs={"fp32": "fp32/model.xml"},
                          split=None, normalization=normalization_text((0.5,), (0.25,)), source=source)
    body = _via_json(model)
    assert body["split"] is None and body["input"]["normalization"] == \
        "inside the graph: x/255, mean [0.5], std [0.25], one grey value on every channel"
    assert manifest_from_json(body, "mem://m") == model
    assert model.precisions == ("fp32",)


def test_manifests_without_normalisation_or_source_read_as_imagenet_and_trained():
    body = _via_json(CheckpointManifest(model=ModelSpec("dwsep_cnn", LABELS, 64), split=SPLIT))
    assert "source" not in body  # a trained checkpoint's manifest keeps its keys
    del body["model"]["mean"], body["model"]["std"]
    read = manifest_from_json(body, "mem://c")
    assert (read.model.mean, read.model.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert read.source == {} and read.split == SPLIT
    old = _via_json(_model())
    del old["input"]["normalization"]
    assert manifest_from_json(old, "mem://m").normalization == normalization_text(IMAGENET_MEAN, IMAGENET_STD)


def test_require_new_refuses_an_existing_artifact_naming_out(tmp_path):
    from storage.artifacts import require_new, write_artifact

    uri = str(tmp_path / "ckpt")
    assert require_new(uri, None, "a checkpoint").path == uri  # nothing there yet
    write_artifact(uri, {"model.pt": b"w"}, CheckpointManifest(model=ModelSpec("resnet18", LABELS, 224), split=SPLIT))
    with pytest.raises(FileExistsError, match=rf"--out {uri}: a checkpoint already exists there; choose a new --out"):
        require_new(uri, None, "a checkpoint")
