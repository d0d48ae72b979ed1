"""Synthetic scoring runs built directly with pyarrow (no scoring): result rows with known ground truth.

A run is written the way `tilescope score` writes one (part-*.parquet chunks, _run.json first, _manifest.json
last) beside a Data_Entry_2017.csv and the two split lists, so `tilescope report` can read it from local disk
or S3. Its model artifact (a manifest with the patient split it was "trained" with; the IR files are stubs
no one loads) is written too, and the run's sidecars name it, as `score` does. Optionally with tile-ensemble
heatmaps (a `heatmap` fixed_size_list<float32> column laid out (label, row, col), its shape in the schema
metadata, and `tile_max`), BBox_List_2017 boxes, and a model that memorised its training images.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.artifacts import write_artifact
from storage.metadata_files import load_metadata
from xray.metadata.labels import LABELS, prob_column
from xray.metadata.manifests import ModelManifest, SplitRecord
from xray.metadata.splits import split_by_patient

# Roughly the label frequencies of ChestX-ray14 (Hernia is rare, Infiltration common).
PREVALENCE = np.array([.10, .025, .12, .18, .05, .056, .013, .047, .04, .02, .022, .015, .03, .004])
DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                     "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


@dataclass(frozen=True)
class SyntheticRun:
    run_dir: str
    metadata: str
    image_ids: np.ndarray  # (N,) str, every row's image id (errors included)
    labels: np.ndarray  # (N, 14) int8 ground truth
    probs: np.ndarray  # (N, 14) float32, NaN on error rows
    errors: np.ndarray  # (N,) bool
    test: np.ndarray  # (N,) bool: listed in test_list.txt
    val: np.ndarray  # (N,) bool: the model's validation patients (its artifact's recorded split)
    train: np.ndarray  # (N,) bool: the images the model trained on
    artifact: str  # the model artifact's URI
    artifact_sha256: str


def make_run(root: str, n: int, seed: int = 0, error_rows: int = 3, chunk: int = 20_000,
             heatmap_shape: tuple[int, int, int] | None = None, separation: float = 1.5,
             commit: bool = True, skill: np.ndarray | None = None, val_fraction: float = 0.15, test_every: int = 5,
             memorised: float = 0.0, name: str = "run", imported: bool = False) -> SyntheticRun:
    """Write a run of n rows under root/<name>, its metadata under root/archive and its model artifact under
    root/model-<name>; returns what was written. Three images per patient; patients divisible by `test_every`
    are test_list.txt. The artifact records a patient split with `val_fraction` (seed `seed`).

    `skill` (14,) scales how far positives' logits sit above negatives' per label (default `separation`);
    `memorised` adds to that on the images the model trained on only (a model that learnt them by heart).
    `imported`: the artifact records no split, as for a model brought in by `tilescope import`.
    """
    rng = np.random.default_rng(seed)
    patients = np.arange(n) // 3 + 1
    ids = np.array([f"{p:08d}_{i % 3:03d}.png" for i, p in enumerate(patients)])
    y = (rng.random((n, len(LABELS))) < PREVALENCE).astype(np.int8)
    test = patients % test_every == 0
    archive = os.path.join(root, "archive")
    os.makedirs(archive, exist_ok=True)
    write_metadata(archive, ids, y, patients, test)
    split = split_by_patient(load_metadata(os.path.join(archive, "Data_Entry_2017.csv")), val_fraction, seed)
    val, train = np.isin(ids, sorted(split.val)), np.isin(ids, sorted(split.train))
    shift = np.full(len(LABELS), separation) if skill is None else np.asarray(skill)
    logits = rng.normal(-2.0, 1.0, (n, len(LABELS))) + shift * y + memorised * y * train[:, None]
    probs = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    errors = np.zeros(n, dtype=bool)
    errors[rng.choice(n, size=error_rows, replace=False)] = True
    probs[errors] = np.nan
    artifact = os.path.join(root, f"model-{name}")
    stub = b"<!-- stub IR: this artifact is only read for its manifest -->"
    sha = write_artifact(artifact, {"fp32/model.xml": stub, "int8/model.xml": stub}, ModelManifest(
        model="synthetic", labels=LABELS, input_size=64, irs={"fp32": "fp32/model.xml", "int8": "int8/model.xml"},
        split=None if imported else SplitRecord(val_fraction, seed, int(train.sum()), int(val.sum()), int(test.sum()))))
    run_dir = os.path.join(root, name)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "_run.json"), "w") as f:
        json.dump({"run_id": "synthetic-run", "artifact_sha256": sha, "config": {"model": artifact}}, f)
    for k, start in enumerate(range(0, n, chunk)):
        rows = slice(start, min(start + chunk, n))
        table = results_table(ids[rows], probs[rows], errors[rows], heatmap_shape, rng, sha)
        last = "-last" if start + chunk >= n else ""
        pq.write_table(table, os.path.join(run_dir, f"part-images_001.tar.gz-{k:05d}{last}.parquet"))
    if commit:
        n_err = int(errors.sum())
        manifest = {"results_schema_version": 1, "run_id": "synthetic-run", "rows": n, "ok": n - n_err,
                    "errors": n_err, "error_reasons": {"corrupt or truncated image data": n_err},
                    "missing_from_archive": 0, "images_per_s": 123.4, "seconds_this_attempt": 5.0,
                    "scored_this_attempt": n, "model": "synthetic", "precision": "int8",
                    "artifact_uri": artifact, "artifact_sha256": sha, "labels": list(LABELS)}
        with open(os.path.join(run_dir, "_manifest.json"), "w") as f:
            json.dump(manifest, f)
    return SyntheticRun(run_dir, os.path.join(archive, "Data_Entry_2017.csv"), ids, y, probs, errors, test, val,
                        train, artifact, sha)


def results_table(ids: np.ndarray, probs: np.ndarray, errors: np.ndarray,
                  heatmap_shape: tuple[int, int, int] | None, rng: np.random.Generator, sha: str) -> pa.Table:
    n = len(ids)
    columns = {
        "image_id": pa.array(ids, pa.string()),
        "source": pa.array([f"images_001.tar.gz:images/{i}" for i in ids], pa.string()),
        "status": pa.array(np.where(errors, "error", "ok"), pa.string()),
        "error": pa.array([f"corrupt or truncated image data: row {i}" if e else None
                           for i, e in zip(ids, errors, strict=True)], pa.string()),
        **{prob_column(label): pa.array(probs[:, j], pa.float32(), mask=errors) for j, label in enumerate(LABELS)},
        "model": pa.array(["synthetic"] * n), "artifact_sha256": pa.array([sha] * n),
        "precision": pa.array(["int8"] * n), "run_id": pa.array(["synthetic-run"] * n),
        "decode_ms": pa.array(np.ones(n, np.float32)), "infer_ms": pa.array(np.ones(n, np.float32)),
    }
    metadata = {b"tilescope.results_schema_version": b"1"}
    if heatmap_shape is not None:
        size = int(np.prod(heatmap_shape))
        maps = rng.random((n, size), dtype=np.float32) * 0.2
        flat = pa.array(maps.ravel(), pa.float32())
        columns["heatmap"] = pa.FixedSizeListArray.from_arrays(flat, size, mask=pa.array(errors))
        columns["tile_max"] = pa.array(maps.max(axis=1), pa.float32(), mask=errors)
        metadata[b"tilescope.heatmap_shape"] = json.dumps(list(heatmap_shape)).encode()
    table = pa.table(columns)
    return table.replace_schema_metadata(metadata)


def write_metadata(archive: str, ids: np.ndarray, y: np.ndarray, patients: np.ndarray, test: np.ndarray) -> None:
    """Data_Entry_2017.csv (2017 style, trailing commas) and the split lists for these images."""
    names = np.array(LABELS)
    lines = [DATA_ENTRY_HEADER]
    for i, image in enumerate(ids):
        findings = "|".join(names[y[i] > 0]) or "No Finding"
        lines.append(f"{image},{findings},{i % 3},{patients[i]},{40 + i % 30},{'MF'[i % 2]},PA,1024,1024,0.143,0.143,")
    with open(os.path.join(archive, "Data_Entry_2017.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(archive, "test_list.txt"), "w") as f:
        f.write("\n".join(ids[test]) + "\n")
    with open(os.path.join(archive, "train_val_list.txt"), "w") as f:
        f.write("\n".join(ids[~test]) + "\n")


def write_image_shard(archive: str, ids: np.ndarray, size: int = 96) -> str:
    """images_001.tar.gz with one grey-gradient PNG per id at images/<id>, as the results' `source` names it."""
    import tarfile

    from PIL import Image

    path = os.path.join(archive, "images_001.tar.gz")
    ramp = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))
    with tarfile.open(path, "w:gz") as tar:
        for image_id in ids:
            buf = io.BytesIO()
            Image.fromarray(ramp).save(buf, format="PNG")
            info = tarfile.TarInfo(f"images/{image_id}")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def write_bbox_list(archive: str, boxes: list[tuple[str, str, float, float, float, float]]) -> str:
    """BBox_List_2017.csv with (image id, label, x, y, w, h) rows, as NIH spells it (Infiltration 'Infiltrate')."""
    path = os.path.join(archive, "BBox_List_2017.csv")
    with open(path, "w") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        for image, label, x, y, w, h in boxes:
            f.write(f"{image},{'Infiltrate' if label == 'Infiltration' else label},{x},{y},{w},{h}\n")
    return path
