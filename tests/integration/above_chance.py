"""A model clearly above chance on tiny data, without long training: relabel the archive after the model.

A model trained for one epoch on 80 images is at chance, and at chance tiny numeric differences between CPUs
(AVX2, AVX-512, AMX) flip AUROC. So the test keeps the model and changes the truth: a copy of
Data_Entry_2017.csv (split lists beside it) marks each label positive exactly where the checkpoint's FP32
probability lies above a cut placed in the widest gap of that label's sorted probabilities. FP32 AUROC is
then 1.0 by construction on every CPU, and INT8 errors smaller than half the gap cannot reorder the images.
"""

from __future__ import annotations

import csv
import io
import os
import shutil

import numpy as np

from actors.openvino_ir import export_fp32, infer_probs
from storage.artifacts import open_typed
from storage.image_sets import load_image_set
from xray.metadata.labels import LABELS, NO_FINDING
from xray.metadata.manifests import ArtifactKind
from xray.models.registry import build_model, load_state


def fp32_probs(checkpoint: str, archive: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Every archive image's id and the checkpoint's FP32 (f32 hint) probabilities (N, 14), as quantize sees them."""
    artifact, manifest = open_typed(checkpoint, None, "--checkpoint", ArtifactKind.CHECKPOINT)
    model = build_model(manifest.model)
    load_state(model, artifact.read("model.pt"), checkpoint)
    images = load_image_set(archive, None, manifest.model.input_size)
    return images.ids, infer_probs(export_fp32(model.eval(), manifest.model.input_size), images.pixels)


def widest_gap_cut(values: np.ndarray, lo: float = 0.3, hi: float = 0.7) -> tuple[float, float]:
    """The middle of the widest gap between consecutive sorted values whose lower end lies between the lo and hi
    quantiles (so both classes keep at least ~30% of the images); returns (cut, gap)."""
    v = np.sort(np.asarray(values, np.float64))
    first, last = int(lo * (len(v) - 1)), int(hi * (len(v) - 1))
    gaps = v[first + 1 : last + 1] - v[first:last]
    k = first + int(np.argmax(gaps))
    return float((v[k] + v[k + 1]) / 2), float(v[k + 1] - v[k])


def relabel(archive: str, ids: tuple[str, ...], probs: np.ndarray, out_dir: str) -> tuple[str, np.ndarray]:
    """Write out_dir/Data_Entry_2017.csv (and the split lists beside it) with each label positive where probs is
    above its widest-gap cut; returns the CSV's path and the gap of every label."""
    os.makedirs(out_dir, exist_ok=True)
    for name in ("train_val_list.txt", "test_list.txt", "BBox_List_2017.csv"):
        shutil.copy(os.path.join(archive, name), os.path.join(out_dir, name))
    cuts, gaps = zip(*(widest_gap_cut(probs[:, j]) for j in range(len(LABELS))), strict=True)
    positive = {image_id: [label for j, label in enumerate(LABELS) if probs[k, j] > cuts[j]]
                for k, image_id in enumerate(ids)}
    with open(os.path.join(archive, "Data_Entry_2017.csv"), newline="") as f:
        header, *rows = f.read().splitlines()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(rows):
        if row[0] in positive:
            row[1] = "|".join(positive[row[0]]) or NO_FINDING
        writer.writerow(row)
    path = os.path.join(out_dir, "Data_Entry_2017.csv")
    with open(path, "w") as f:
        f.write(header + "\n" + out.getvalue())
    return path, np.array(gaps)
