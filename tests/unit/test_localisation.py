"""Localisation scored the same way for a tile heatmap and a single model's CAM, box by box (evaluation.ensemble)."""

from __future__ import annotations

import numpy as np
import pytest

from xray.evaluation.ensemble import (
    box_hits,
    compare_localisation,
    ensemble_box_hits,
    localise,
    localise_maps,
    mcnemar_exact_p,
)
from xray.metadata.labels import LABELS
from xray.metadata.nih import BBox
from xray.tiles.grid import TileGrid
from xray.tiles.join import coarse_heatmap, heatmap_cell

MASS, NODULE = LABELS.index("Mass"), LABELS.index("Nodule")
IDS = ["a.png", "b.png"]
DIMS = {"a.png": (1024, 1024), "b.png": (1024, 1024)}


def _maps(n: int = 2, cells: int = 4) -> np.ndarray:
    return np.zeros((n, len(LABELS), cells, cells), dtype=np.float32)


def test_box_hits_scores_each_box_against_its_label_map_with_uneven_cells():
    # A CAM's cells over a 128 px input: centres at 0.5, 32.5, 64.5, 96.5 -> regions 0-16.5-48.5-80.5-128.
    edges = np.array([0.0, 16.5, 48.5, 80.5, 128.0])
    maps = _maps()
    maps[0, MASS, 3, 3] = 1.0  # a: Mass peaks bottom-right (rows/cols 80.5-128 of the input)
    maps[1, MASS, 0, 0] = 1.0  # b: Mass peaks top-left (0-16.5)
    maps[0, NODULE, 1, 2] = 1.0
    boxes = [
        BBox("a.png", "Mass", 700, 700, 200, 200),  # input px 87.5-112.5: region 3 only -> hit, chance 1/16
        BBox("b.png", "Mass", 700, 700, 200, 200),  # same box, peak top-left -> miss
        BBox("a.png", "Nodule", 300, 100, 100, 100),  # rows 12.5-25 (regions 0, 1), cols 37.5-50 (1, 2): hit
        BBox("zz.png", "Mass", 0, 0, 10, 10),  # not among the images: left out
        BBox("a.png", "No Finding", 0, 0, 10, 10),  # not a label of the maps: left out
    ]
    hits = box_hits(maps, 128, edges, IDS, boxes, DIMS)
    assert hits.index.tolist() == [0, 1, 2]
    assert hits.image_ids == ("a.png", "b.png", "a.png") and hits.labels == ("Mass", "Mass", "Nodule")
    assert hits.hit.tolist() == [True, False, True]
    np.testing.assert_allclose(hits.chance, [1 / 16, 1 / 16, 4 / 16])
    loc = hits.summary()
    assert loc.boxes == 3 and loc.peak_in_box == pytest.approx(2 / 3) and loc.chance == pytest.approx(6 / 48)
    assert localise_maps(maps, 128, edges, IDS, boxes, DIMS) == loc
    assert box_hits(maps, 128, edges, IDS, [], DIMS).summary() is None


def test_boxes_scale_from_each_stored_images_own_size():
    edges = np.array([0.0, 32.0, 64.0])
    maps = _maps(1, cells=2)
    maps[0, MASS, 1, 0] = 1.0  # bottom-left of a 64 px input
    # stored 2000 wide x 1000 high: x 100-400 -> input cols 3.2-12.8, y 600-900 -> rows 38.4-57.6
    box = BBox("a.png", "Mass", 100, 600, 300, 300)
    assert box_hits(maps, 64, edges, ["a.png"], [box], {"a.png": (2000, 1000)}).hit.tolist() == [True]
    # the same box on an image 1000 wide x 2000 high sits at rows 19.2-28.8: the top row, a miss
    assert box_hits(maps, 64, edges, ["a.png"], [box], {"a.png": (1000, 2000)}).hit.tolist() == [False]


def test_the_ensemble_heatmap_goes_through_the_same_scoring():
    grid = TileGrid(96, 64, 32)  # 2x2 positions, 3x3 heatmap cells of 32 px
    rng = np.random.default_rng(0)
    probs = rng.random((2, 4, len(LABELS)))
    boxes = [BBox(i, label, x, y, 150, 150) for i in IDS for label in ("Mass", "Nodule", "Effusion")
             for x, y in ((0, 0), (400, 600), (800, 100))]
    heat = coarse_heatmap(probs, grid)
    edges = heatmap_cell(grid) * np.arange(4)
    via_maps = localise_maps(heat, grid.image_size, edges, IDS, boxes, DIMS)
    assert localise(grid, probs, IDS, boxes, DIMS) == via_maps and via_maps.boxes == len(boxes)
    hits = ensemble_box_hits(grid, probs, IDS, boxes, DIMS)
    for i, box in enumerate(boxes):  # each box by hand: the peak cell's square against the scaled box
        k, label_map = IDS.index(box.image_index), heat[IDS.index(box.image_index), LABELS.index(box.label)]
        r, c = np.unravel_index(np.argmax(label_map), label_map.shape)
        x, y, w = box.x * 96 / 1024, box.y * 96 / 1024, box.w * 96 / 1024
        inside = c * 32 < x + w and x < (c + 1) * 32 and r * 32 < y + w and y < (r + 1) * 32
        assert hits.hit[i] == inside, (k, box)


def test_compare_localisation_pairs_the_boxes_both_scored():
    edges = np.array([0.0, 64.0, 128.0])
    ensemble, cam = _maps(cells=2), _maps(cells=2)
    ensemble[0, MASS, 1, 1] = ensemble[1, MASS, 0, 0] = ensemble[0, NODULE, 0, 1] = 1.0
    cam[0, MASS, 1, 1] = cam[1, MASS, 1, 1] = cam[0, NODULE, 1, 0] = 1.0
    boxes = [BBox("a.png", "Mass", 600, 600, 100, 100),  # bottom-right: both hit
             BBox("b.png", "Mass", 10, 10, 100, 100),  # top-left: ensemble only
             BBox("a.png", "Nodule", 900, 10, 100, 100),  # top-right: ensemble only
             BBox("b.png", "Nodule", 10, 600, 100, 100)]  # bottom-left: neither (both peak top-left, all zero)
    a, b = box_hits(ensemble, 128, edges, IDS, boxes, DIMS), box_hits(cam, 128, edges, IDS, boxes, DIMS)
    cmp = compare_localisation(a, b)
    assert (cmp.a.boxes, cmp.a.peak_in_box, cmp.b.peak_in_box) == (4, 0.75, 0.25)
    assert (cmp.both, cmp.only_a, cmp.only_b) == (1, 2, 0)
    assert cmp.mcnemar_p == 0.5 and cmp.a.chance == cmp.b.chance == 0.25
    assert cmp.to_json()["boxes"] == 4 and cmp.to_json()["a"]["peak_in_box"] == 0.75
    # Only the boxes both kept are paired: b lacks image b.png.
    cam_a_only = box_hits(cam[:1], 128, edges, IDS[:1], boxes, DIMS)
    paired = compare_localisation(a, cam_a_only)
    assert paired.a.boxes == 2 and (paired.both, paired.only_a, paired.only_b) == (1, 1, 0)
    assert compare_localisation(a, box_hits(cam, 128, edges, IDS, [], DIMS)) is None
    with pytest.raises(ValueError, match="score both from the same boxes"):
        compare_localisation(a, box_hits(cam, 128, edges, IDS, boxes[::-1], DIMS))


def test_mcnemar_exact_p_values():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 0) == 0.25  # 2 * (1/2)^3
    assert mcnemar_exact_p(2, 10) == mcnemar_exact_p(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact_p(5, 5) == 1.0
    assert 0.0 <= mcnemar_exact_p(1500, 1400) < 0.1  # large counts: exact integers, no overflow


def test_maps_and_edges_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="must be"):
        box_hits(_maps(1), 128, np.arange(5) * 32.0, IDS, [], DIMS)  # one map for two ids
    with pytest.raises(ValueError, match="increasing cell boundaries"):
        box_hits(_maps(), 128, np.array([0.0, 32.0, 32.0, 64.0, 128.0]), IDS, [], DIMS)
