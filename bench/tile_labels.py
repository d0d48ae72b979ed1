"""The ceiling of full-resolution tiles with local labels (a diagnostic for bench.tile_resolution).

The tile ensemble trains each position on the image's labels: a tile is "Nodule" when the image has a nodule
anywhere, so a position whose tile holds the nodule in 1 of ~8 of its positive images learns mostly from
noise. This diagnostic keeps the tiles and the resolution and changes only the supervision: one model
(the same backbone) for every position, trained on tile labels taken from the archive's BBox_List (a tile is
positive for a label when the box's centre is inside it), then image scores as the max over the tiles. If it
finds the small findings, full resolution carries them and the ensemble's gap is its weak labels.

Called from bench.tile_resolution (same archive, split and epochs); needs boxes for every finding (synthetic
archives have them; NIH has them for ~1,000 images only).
"""

from __future__ import annotations

import numpy as np

from storage.image_sets import load_image_set
from storage.metadata_files import load_metadata
from xray.evaluation.metrics import auroc
from xray.metadata.labels import LABELS
from xray.metadata.splits import labels_for, split_by_patient
from xray.models.precision import MathPath, Precision
from xray.models.registry import ModelSpec, build_model
from xray.models.training import fit, predict_probs
from xray.tiles.grid import TileGrid, tile


def tile_targets(ids: tuple[str, ...], boxes: dict[str, list[tuple[str, float, float]]], grid: TileGrid,
                 labels: tuple[str, ...]) -> np.ndarray:
    """(N * T, L) float32: 1 where a box of that label has its centre inside the tile (tile order of
    xray.tiles.grid.tile: image-major, positions row by row)."""
    t = grid.n_positions
    out = np.zeros((len(ids) * t, len(labels)), np.float32)
    for n, image_id in enumerate(ids):
        for label, cy, cx in boxes.get(image_id, ()):
            if label not in labels:
                continue
            for p in range(t):
                top, left = grid.origin(p)
                if top <= cy < top + grid.tile_size and left <= cx < left + grid.tile_size:
                    out[n * t + p, labels.index(label)] = 1.0
    return out


def ceiling(archive: str, image: int, tile_size: int, stride: int, labels: tuple[str, ...], backbone: str,
            epochs: int, seed: int) -> dict[str, float]:
    """Test AUROC per label of max-over-tiles image scores, from one model trained on box-derived tile labels."""
    meta = load_metadata(f"{archive}/Data_Entry_2017.csv")
    split = split_by_patient(meta, 0.15, seed)
    grid = TileGrid(image, tile_size, stride)
    scale = image / 1024  # BBox_List coordinates are pixels of the stored image (1024 px here)
    boxes: dict[str, list[tuple[str, float, float]]] = {}
    for b in meta.bboxes:
        boxes.setdefault(b.image_index, []).append((b.label, (b.y + b.h / 2) * scale, (b.x + b.w / 2) * scale))
    sets = {name: load_image_set(archive, set(ids), image) for name, ids in
            (("train", split.train), ("val", split.val), ("test", split.test))}
    data = {name: (tile(s.pixels, grid).reshape(-1, 1, tile_size, tile_size), tile_targets(s.ids, boxes, grid, labels))
            for name, s in sets.items()}
    model = build_model(ModelSpec(backbone, labels, tile_size))
    path = MathPath(precision=Precision.FP32, channels_last=True, ipex=None, amx=False)
    fit(model, data["train"], data["val"], epochs, 32, 1e-3, path, seed=seed)
    probs = predict_probs(model, data["test"][0], 64, path).reshape(len(sets["test"].ids), grid.n_positions, len(labels))
    image_scores = probs.max(axis=1)
    truth = labels_for(sets["test"].ids, meta)[:, [LABELS.index(x) for x in labels]]
    return {label: auroc(truth[:, j], image_scores[:, j]) for j, label in enumerate(labels)}
