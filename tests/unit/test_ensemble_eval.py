"""Ensemble evaluation and the tile trainer's data path, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from actors.tile_trainer import position_tiles
from storage.image_sets import DecodedShard
from xray.ensemble_eval import evaluate_ensemble, localise
from xray.labels import LABELS
from xray.metadata import BBox
from xray.tiles import TileGrid, tile


def _shard(name: str, ids: list[str], rng: np.random.Generator) -> DecodedShard:
    pixels = rng.integers(0, 256, (len(ids), 1, 40, 40), dtype=np.uint8)
    return DecodedShard(name, np.array(ids, dtype=object), pixels, np.full((len(ids), 2), 1024), ())


def test_position_tiles_gathers_across_shards_in_split_order():
    rng = np.random.default_rng(0)
    shards = (_shard("a", ["x1", "x2"], rng), _shard("b", ["y1", "y2", "y3"], rng))
    grid = TileGrid(40, 16, 12)  # 3x3 with padding
    ids = ("y3", "x1", "y1")
    got = position_tiles(shards, ids, grid, position=8)
    expected = np.stack([tile(shards[1].pixels[2:3], grid)[0, 8], tile(shards[0].pixels[0:1], grid)[0, 8],
                         tile(shards[1].pixels[0:1], grid)[0, 8]])
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="1 images of the split were not decoded"):
        position_tiles(shards, ("x1", "zz"), grid, 0)


def test_localise_scales_boxes_from_stored_pixels():
    grid = TileGrid(64, 32, 32)  # 2x2 cells of 32 px in the decoded image
    probs = np.zeros((2, 4, len(LABELS)))
    mass = LABELS.index("Mass")
    probs[0, 3, mass] = 0.9  # image a: peak bottom-right
    probs[1, 0, mass] = 0.9  # image b: peak top-left
    # boxes in the stored image's pixels (1024 px): both in the bottom-right quarter
    boxes = [BBox("a.png", "Mass", 700, 800, 100, 100), BBox("b.png", "Mass", 700, 800, 100, 100),
             BBox("c.png", "Mass", 0, 0, 10, 10)]  # c is not in the test split: ignored
    loc = localise(grid, probs, ["a.png", "b.png"], boxes, {"a.png": (1024, 1024), "b.png": (1024, 1024)})
    assert loc.boxes == 2 and loc.peak_in_box == 0.5 and loc.chance == 0.25
    assert localise(grid, probs, ["a.png"], [], {}) is None


def test_evaluate_ensemble_fits_on_val_and_reports_every_join():
    rng = np.random.default_rng(3)
    n, t = 200, 4
    val_y = (rng.random((n, len(LABELS))) < 0.3).astype(np.float32)
    test_y = (rng.random((n, len(LABELS))) < 0.3).astype(np.float32)

    def probs(y):
        p = rng.uniform(0.1, 0.9, (n, t, len(LABELS)))
        p[:, 1] = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.1, y.shape), 0.01, 0.99)  # position 1 knows
        return p

    val, test = probs(val_y), probs(test_y)
    ev = evaluate_ensemble(grid=TileGrid(64, 32, 32), val_probs={"fp32": val, "int8": val},
                           test_probs={"fp32": test, "int8": test}, val_labels=val_y, test_labels=test_y,
                           test_ids=[f"{i}.png" for i in range(n)], boxes=[], dimensions={})
    assert set(ev.test_mean_auroc) == {"fp32", "int8"}
    assert set(ev.test_mean_auroc["fp32"]) == {"mean", "max", "stacked"}
    assert ev.test_mean_auroc["fp32"]["stacked"] > ev.test_mean_auroc["fp32"]["mean"] > 0.6
    assert int(np.argmax(ev.position_test_mean_auroc)) == 1
    assert all(len(v) == len(LABELS) for v in ev.thresholds.values())
    assert ev.localisation is None


def test_tile_trainer_resumes_from_its_checkpoint_without_ray(tmp_path):
    """The actor class is plain: run it in-process, stop after 2 epochs, then ask for 3 with a fresh instance."""
    from dataclasses import replace

    from actors.tile_trainer import PositionPlan, Split, TileTrainer

    rng = np.random.default_rng(0)
    ids = [f"{i:03d}.png" for i in range(40)]
    shards = (_shard("a", ids, rng),)
    labels = (rng.random((40, len(LABELS))) < 0.3).astype(np.float32)
    split = Split(tuple(ids[:30]), tuple(ids[30:36]), tuple(ids[36:]), labels[:30], labels[30:36])
    plan = PositionPlan(position=1, grid=TileGrid(40, 32, 8), backbone="dwsep_cnn", labels=LABELS, epochs=2,
                        batch_size=8, lr=1e-3, seed=0, precision="fp32", threads=1, calibration_size=8,
                        preset="performance", work_uri=str(tmp_path / "work"))
    first = TileTrainer(plan).fit(split, *shards)
    assert first.resumed_from_epoch == 0 and [h["epoch"] for h in first.history] == [0, 1]
    assert (tmp_path / "work" / "p001" / "checkpoint.pt").exists()
    again = TileTrainer(replace(plan, epochs=3)).fit(split, *shards)
    assert again.resumed_from_epoch == 2 and [h["epoch"] for h in again.history] == [0, 1, 2]
    # the first two epochs were not trained again: their records come back from the checkpoint unchanged
    assert [(h["loss"], h["seconds"]) for h in again.history[:2]] == [(h["loss"], h["seconds"]) for h in first.history]
    done = TileTrainer(replace(plan, epochs=3)).fit(split, *shards)
    assert done.resumed_from_epoch == 3 and done.tiles_per_s == 0.0  # nothing left to train
