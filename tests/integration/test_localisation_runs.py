"""jobs/localisation.py on artifacts and a run written by hand, with answers known by construction: a single
model whose CAM must peak on each image's bright blob, and an ensemble run whose heatmaps point at the blob on
half the images. No Ray: the comparison reads storage and runs torch in-process."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torch import nn

from jobs.localisation import (
    boxes_on_test_images,
    checkpoint_of,
    heatmap_vs_cam,
    localisation_line,
    report_localisation,
)
from storage.artifacts import write_artifact
from storage.fs import resolve
from storage.metadata_files import load_metadata
from storage.results import RUN_MANIFEST, results_schema, results_table, write_chunk
from tests.integration.results_tables import write_bbox_list, write_metadata
from xray.metadata.labels import LABELS, prob_column
from xray.metadata.manifests import (
    CheckpointManifest,
    EnsembleManifest,
    ModelManifest,
    ModelSpec,
    PositionRecord,
    SplitRecord,
)
from xray.models.registry import HEADS, build_model
from xray.tiles.grid import TileGrid

STORED, INPUT = 256, 128  # stored PNG side; the single model's input (CAM regions 0-16.5-48.5-80.5-128 px)
NODULE = LABELS.index("Nodule")
# Blob centres in input pixels: 32 lies in CAM region 1 and tile cell 0 (0-64), 104 in region 3 and cell 1.
CENTRES = [(32, 104), (104, 32), (104, 104), (32, 32), (104, 104), (32, 104)]
ENSEMBLE_RIGHT = [True, True, True, False, False, False]  # the ensemble's Nodule heatmap points at the blob


def _archive(root: str) -> tuple[str, list[str]]:
    archive = os.path.join(root, "archive")
    os.makedirs(archive)
    ids = np.array([f"{p:08d}_000.png" for p in range(1, len(CENTRES) + 1)])
    y = np.zeros((len(ids), len(LABELS)), np.int8)
    y[:, NODULE] = 1
    write_metadata(archive, ids, y, np.arange(1, len(ids) + 1), np.ones(len(ids), bool))  # all on test_list.txt
    with open(os.path.join(archive, "Data_Entry_2017.csv")) as f:
        text = f.read().replace(",1024,1024,", f",{STORED},{STORED},")
    with open(os.path.join(archive, "Data_Entry_2017.csv"), "w") as f:
        f.write(text)
    boxes = []
    with tarfile.open(os.path.join(archive, "images_001.tar.gz"), "w:gz") as tar:
        for image_id, (r, c) in zip(ids, CENTRES, strict=True):
            pixels = np.zeros((STORED, STORED), np.uint8)
            pixels[2 * r - 12 : 2 * r + 12, 2 * c - 12 : 2 * c + 12] = 255  # a 24 px blob (12 px at the input)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            info = tarfile.TarInfo(f"images/{image_id}")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
            boxes.append((image_id, "Nodule", 2 * c - 20, 2 * r - 20, 40, 40))
    boxes.append((ids[0], "Mass", 2 * CENTRES[0][1] - 20, 2 * CENTRES[0][0] - 20, 40, 40))  # no map points there
    boxes.append(("00000099_000.png", "Nodule", 0, 0, 10, 10))  # an image not on test_list.txt: left out
    write_bbox_list(archive, boxes)
    return archive, ids.tolist()


def _single_model(root: str) -> str:
    """A checkpoint of a dwsep_cnn that sees bright pixels (averaging convs, x/255 without a mean), Nodule's row
    +1: its CAM peaks on the blob. Then a model artifact quantized from it (stub IRs: only the manifest is read)."""
    spec = ModelSpec("dwsep_cnn", LABELS, INPUT, mean=(0.0,), std=(1.0,))
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
        head = model.backbone.get_submodule(HEADS["dwsep_cnn"])
        head.weight.zero_()
        head.weight[NODULE] = 1.0
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    ckpt = os.path.join(root, "ckpt")
    sha = write_artifact(ckpt, {"model.pt": buf.getvalue()}, CheckpointManifest(model=spec, split=None))
    stub = b"<!-- stub IR -->"
    model_uri = os.path.join(root, "model")
    write_artifact(model_uri, {"int8/model.xml": stub}, ModelManifest(
        model="dwsep_cnn", labels=LABELS, input_size=INPUT, irs={"int8": "int8/model.xml"}, split=None,
        checkpoint={"uri": ckpt, "sha256": sha, "kind": "checkpoint"}))
    return model_uri


def _ensemble_run(root: str, ids: list[str]) -> str:
    """A 2x2 ensemble (64 px tiles over 128 px: heatmap cells of 64 px) and a committed run of its heatmaps."""
    grid = TileGrid(INPUT, 64, 64)
    stub = b"<!-- stub IR -->"
    positions = tuple(PositionRecord(p, (64 * (p // 2), 64 * (p % 2)), {"int8": f"positions/p{p:03d}/int8/model.xml"})
                      for p in range(4))
    ensemble = os.path.join(root, "ensemble")
    sha = write_artifact(ensemble, {p.irs["int8"]: stub for p in positions}, EnsembleManifest(
        model="tiles2x2", backbone="dwsep_cnn", labels=LABELS, grid=grid, positions=positions, combiner="mean",
        stacked={}, split=SplitRecord(0.15, 0)))
    n, shape = len(ids), (len(LABELS), 2, 2)
    heat = np.zeros((n, *shape), np.float32)
    for k, ((r, c), right) in enumerate(zip(CENTRES, ENSEMBLE_RIGHT, strict=True)):
        cell = (r // 64, c // 64) if right else (1 - r // 64, 1 - c // 64)
        heat[k, NODULE, cell[0], cell[1]] = 0.9
    batch = {"image_id": np.array(ids, dtype=object),
             "source": np.array([f"images_001.tar.gz:images/{i}" for i in ids], dtype=object),
             "status": np.array(["ok"] * n, dtype=object), "error": np.array([None] * n, dtype=object),
             **{prob_column(label): np.full(n, 0.5, np.float32) for label in LABELS},
             "precision": np.array(["int8"] * n, dtype=object), "cpu_isa": np.array(["avx2"] * n, dtype=object),
             "decode_ms": np.ones(n, np.float32), "infer_ms": np.ones(n, np.float32),
             "heatmap": heat.reshape(n, -1), "tile_max": heat.max(axis=(1, 2, 3))}
    schema = results_schema(list(LABELS), shape)
    table = results_table(batch, np.arange(n), schema, "tiles2x2", sha, "int8", "run")
    assert isinstance(table, pa.Table)
    run = resolve(os.path.join(root, "scores", "tiles2x2"), None)
    os.makedirs(run.path)
    write_chunk(run, "images_001.tar.gz", 0, True, table)
    with open(os.path.join(run.path, RUN_MANIFEST), "w") as f:
        json.dump({"run_id": "run", "rows": n, "ok": n, "errors": 0, "artifact_uri": ensemble,
                   "artifact_sha256": sha}, f)
    return run.path


def test_heatmap_vs_cam_pairs_the_two_on_the_same_boxes(tmp_path):
    archive, ids = _archive(str(tmp_path))
    model_uri = _single_model(str(tmp_path))
    run = _ensemble_run(str(tmp_path), ids)
    metadata_uri = os.path.join(archive, "Data_Entry_2017.csv")
    assert checkpoint_of(model_uri) == os.path.join(str(tmp_path), "ckpt")
    assert checkpoint_of(checkpoint_of(model_uri)) == checkpoint_of(model_uri)
    result = heatmap_vs_cam(run, model_uri, archive, load_metadata(metadata_uri), metadata_uri)
    assert result.cam_method == "cam" and result.test_boxes == 7
    cmp = result.comparison
    # 6 Nodule boxes + the Mass box; the CAM hits every Nodule blob, the heatmap the three it points at
    assert cmp.a.boxes == cmp.b.boxes == 7
    assert (cmp.a.peak_in_box, cmp.b.peak_in_box) == (pytest.approx(3 / 7), pytest.approx(6 / 7))
    assert (cmp.both, cmp.only_a, cmp.only_b) == (3, 0, 3) and cmp.mcnemar_p == 0.25
    # each box lies in one of the 4 tile cells, and in one of the 16 CAM regions
    assert (cmp.a.chance, cmp.b.chance) == (pytest.approx(1 / 4), pytest.approx(1 / 16))
    line = localisation_line(result)
    assert line.startswith("localisation on 7 test boxes") and "ensemble heatmap 42.9% (chance 25.0%)" in line
    assert "single-model CAM 85.7% (chance 6.2%)" in line and "McNemar p 0.25" in line
    # the report's summary states the heatmap half (no torch), the same 3 of 7 boxes
    from storage.scored_runs import open_run

    assert report_localisation(open_run(run), load_metadata(metadata_uri), archive) == cmp.a


def test_a_model_not_quantized_from_a_checkpoint_has_no_cam(tmp_path):
    stub = b"<!-- stub IR -->"
    uri = str(tmp_path / "imported")
    write_artifact(uri, {"int8/model.xml": stub}, ModelManifest(
        model="x", labels=LABELS, input_size=64, irs={"int8": "int8/model.xml"}, split=None,
        checkpoint={"uri": "chexnet.onnx", "kind": "onnx"}))
    with pytest.raises(ValueError, match="was not quantized from a tilescope checkpoint"):
        checkpoint_of(uri)


def test_localisation_needs_the_test_list_and_the_boxes(tmp_path):
    archive, _ = _archive(str(tmp_path))
    meta_uri = os.path.join(archive, "Data_Entry_2017.csv")
    os.remove(os.path.join(archive, "BBox_List_2017.csv"))
    with pytest.raises(ValueError, match="no BBox_List_2017.csv beside Data_Entry_2017.csv"):
        boxes_on_test_images(load_metadata(meta_uri), meta_uri)
    os.remove(os.path.join(archive, "test_list.txt"))
    with pytest.raises(ValueError, match="no test_list.txt and BBox_List_2017.csv"):
        boxes_on_test_images(load_metadata(meta_uri), meta_uri)
