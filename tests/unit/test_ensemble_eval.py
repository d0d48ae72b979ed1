"""Ensemble evaluation and the tile trainer's data path, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from actors.tile_trainer import position_tiles
from storage.image_sets import DecodedShard
from xray.evaluation.ensemble import evaluate_ensemble, localise
from xray.metadata.labels import LABELS
from xray.metadata.nih import BBox
from xray.tiles.grid import TileGrid, tile


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


def _trainer_case(tmp_path, epochs: int = 3):
    from actors.tile_trainer import PositionPlan
    from xray.metadata.splits import LabelledSplit

    rng = np.random.default_rng(0)
    ids = [f"{i:03d}.png" for i in range(40)]
    shards = (_shard("a", ids, rng),)
    labels = (rng.random((40, len(LABELS))) < 0.3).astype(np.float32)
    split = LabelledSplit(tuple(ids[:30]), tuple(ids[30:36]), tuple(ids[36:]), labels[:30], labels[30:36])
    plan = PositionPlan(position=1, grid=TileGrid(40, 32, 8), backbone="dwsep_cnn", labels=LABELS, epochs=epochs,
                        batch_size=8, lr=1e-3, seed=0, calibration_size=8, preset="performance",
                        work_uri=str(tmp_path / "work"))
    return plan, split, shards


def _checkpoint(path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def test_tile_trainer_trains_an_epoch_per_call_and_resumes_from_its_checkpoint_without_ray(tmp_path):
    """The actor class is plain: run it in-process. Epochs are idempotent units carried by the checkpoint."""
    from actors.tile_trainer import TileTrainer

    plan, split, shards = _trainer_case(tmp_path, epochs=3)
    ckpt = tmp_path / "work" / "p001" / "checkpoint.pt"
    first = TileTrainer(threads=1, precision="fp32")
    r0 = first.train_epoch(plan, None, split, *shards)
    assert (r0.position, r0.epochs_before, r0.epochs_done, r0.node_id) == (1, 0, 1, "local")
    assert r0.trained["epoch"] == 0 and ckpt.exists()
    r1 = first.train_epoch(plan, 1, split, *shards)  # from its memory
    assert (r1.epochs_before, r1.epochs_done, r1.trained["epoch"]) == (1, 2, 1)
    # A fresh trainer (another actor, or a rerun) finds the position in the checkpoint.
    other = TileTrainer(threads=1, precision="fp32")
    r2 = other.train_epoch(plan, None, split, *shards)
    assert (r2.epochs_before, r2.epochs_done) == (2, 3)
    history = _checkpoint(ckpt)["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    # the first two epochs were not trained again: their records come back from the checkpoint unchanged
    assert [(h["loss"], h["seconds"]) for h in history[:2]] == [(r0.trained["loss"], r0.trained["seconds"]),
                                                               (r1.trained["loss"], r1.trained["seconds"])]
    # A retried call on a finished position trains nothing more.
    again = TileTrainer(threads=1, precision="fp32").train_epoch(plan, None, split, *shards)
    assert (again.epochs_before, again.epochs_done, again.trained) == (3, 3, None)
    assert [h["epoch"] for h in _checkpoint(ckpt)["history"]] == [0, 1, 2]
    exported = other.export(plan, split, *shards)
    assert [h["epoch"] for h in exported.history] == [0, 1, 2] and exported.math_path.startswith("fp32")
    assert exported.val_int8.shape == (6, len(LABELS)) and exported.test_fp32.shape == (4, len(LABELS))


def test_weights_do_not_depend_on_which_trainer_runs_which_epoch(tmp_path):
    """Epoch by epoch across two trainers (one reading the other's checkpoint) == one trainer throughout."""
    from dataclasses import replace

    import torch

    from actors.tile_trainer import TileTrainer

    plan, split, shards = _trainer_case(tmp_path / "a", epochs=2)
    alone = TileTrainer(threads=1, precision="fp32")
    alone.train_epoch(plan, None, split, *shards)
    alone.train_epoch(plan, 1, split, *shards)
    handed = replace(plan, work_uri=str(tmp_path / "b" / "work"))
    TileTrainer(threads=1, precision="fp32").train_epoch(handed, None, split, *shards)
    TileTrainer(threads=1, precision="fp32").train_epoch(handed, 1, split, *shards)
    a = _checkpoint(tmp_path / "a" / "work" / "p001" / "checkpoint.pt")
    b = _checkpoint(tmp_path / "b" / "work" / "p001" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    # and the weights did move from their seeded start
    assert any(not torch.equal(a["model"][n], v) for n, v in _initial(plan).items())


def _initial(plan) -> dict:
    import torch

    from xray.models.registry import ModelSpec, build_model

    torch.manual_seed(plan.train_seed)
    return build_model(ModelSpec(plan.backbone, plan.labels, plan.grid.tile_size)).state_dict()


def test_a_missing_checkpoint_after_reported_epochs_is_an_error(tmp_path):
    from actors.tile_trainer import TileTrainer

    plan, split, shards = _trainer_case(tmp_path)
    with pytest.raises(RuntimeError, match="checkpoint .* is missing but 2 epochs"):
        TileTrainer(threads=1, precision="fp32").train_epoch(plan, 2, split, *shards)
