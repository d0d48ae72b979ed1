"""Localisation on an archive's boxed test images, tile ensemble vs single model, box by box (issue 18).

The ensemble's maps are the tile heatmaps its scored run holds (`heatmap`, INT8 as scored); the single model's
are class activation maps of the checkpoint its model artifact was quantized from (xray/models/cam.py, float32 in
torch: CAM does not exist in the INT8 IR). Both are scored by xray.evaluation.ensemble.box_hits on the same
BBox_List boxes of the same test images (test_list.txt), then paired (compare_localisation). Used by the demo
and bench.tile_resolution; needs the [train] extra (torch) for the CAM. The report's summary uses the heatmap half
alone (report_localisation, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage.archives import fetch_images, list_shards
from storage.artifacts import open_typed
from storage.image_sets import load_shard_images
from storage.metadata_files import ArchiveMetadata
from storage.scored_runs import ScoredRun, open_run, read_heatmaps
from xray.codec.decode import DecodeError, image_dimensions
from xray.evaluation.ensemble import BoxHits, Localisation, LocalisationComparison, box_hits, compare_localisation
from xray.metadata.manifests import ArtifactKind, CheckpointManifest, EnsembleManifest
from xray.metadata.nih import BBox
from xray.tiles.join import heatmap_cell


@dataclass(frozen=True)
class BoxedImages:
    """The test images that have a box, decoded at `size`: ids (N,), pixels (N, 1, size, size) uint8, each
    stored image's (width, height) (the boxes' pixels), and the boxes on them."""

    ids: tuple[str, ...]
    pixels: np.ndarray
    dimensions: dict[str, tuple[int, int]]
    boxes: tuple[BBox, ...]


def boxes_on_test_images(meta: ArchiveMetadata, source: str) -> tuple[BBox, ...]:
    """The BBox_List boxes on test_list.txt images; ValueError naming `source` when either list is missing."""
    if meta.test is None or not meta.bboxes:
        missing = " and ".join(n for n, v in (("test_list.txt", meta.test), ("BBox_List_2017.csv", meta.bboxes))
                               if not v)
        raise ValueError(f"{source}: no {missing} beside Data_Entry_2017.csv; localisation needs both")
    test = set(meta.test)
    return tuple(b for b in meta.bboxes if b.image_index in test)


def boxed_images(archive: str, boxes: tuple[BBox, ...], size: int, endpoint: str | None = None) -> BoxedImages:
    """Decode the images the boxes are on, once, at `size` (the single model's input), sorted by id."""
    wanted = frozenset(b.image_index for b in boxes)
    pixels: dict[str, np.ndarray] = {}
    dimensions: dict[str, tuple[int, int]] = {}
    for shard in list_shards(archive, endpoint):
        decoded = load_shard_images(shard, wanted, size, endpoint)
        for image_id, image, dims in zip(decoded.ids.tolist(), decoded.pixels, decoded.dimensions, strict=True):
            pixels[image_id] = image
            dimensions[image_id] = (int(dims[0]), int(dims[1]))
    ids = tuple(sorted(pixels))
    stacked = np.stack([pixels[i] for i in ids]) if ids else np.zeros((0, 1, size, size), np.uint8)
    return BoxedImages(ids, stacked, dimensions, tuple(b for b in boxes if b.image_index in pixels))


def checkpoint_of(model_uri: str, endpoint: str | None = None) -> str:
    """The checkpoint a model artifact was quantized from (or model_uri itself when it is a checkpoint)."""
    artifact, manifest = open_typed(model_uri, endpoint, "--model", ArtifactKind.MODEL, ArtifactKind.CHECKPOINT)
    if isinstance(manifest, CheckpointManifest):
        return artifact.uri
    origin = dict(manifest.checkpoint)
    if origin.get("kind") != ArtifactKind.CHECKPOINT.value or not origin.get("uri"):
        raise ValueError(f"{model_uri}: was not quantized from a tilescope checkpoint (from {origin or 'nothing'}); "
                         "a class activation map needs the PyTorch weights")
    return str(origin["uri"])


def cam_hits(checkpoint_uri: str, archive: str, boxes: tuple[BBox, ...], endpoint: str | None = None,
             batch_size: int = 32) -> tuple[BoxHits, str, dict[str, tuple[int, int]]]:
    """The single model's class activation maps on the boxed images, scored box by box; the method that ran
    (`cam` or `grad-cam`, xray.models.cam.method_for); and the stored (width, height) of each image decoded."""
    from xray.models.cam import activation_maps
    from xray.models.registry import build_model, load_state

    artifact, manifest = open_typed(checkpoint_uri, endpoint, "--checkpoint", ArtifactKind.CHECKPOINT)
    spec = manifest.model
    model = build_model(spec)
    load_state(model, artifact.read("model.pt"), artifact.uri)
    images = boxed_images(archive, boxes, spec.input_size, endpoint)
    if not images.ids:
        raise ValueError(f"{archive}: none of the {len(boxes)} boxed test images could be decoded")
    maps = activation_maps(model, spec.name, images.pixels, batch_size)
    hits = box_hits(maps.maps, spec.input_size, maps.geometry.edges(), images.ids, boxes, images.dimensions,
                    spec.labels)
    return hits, maps.method.value, images.dimensions


def heatmap_hits(results_uri: str, boxes: tuple[BBox, ...], dimensions: dict[str, tuple[int, int]],
                 endpoint: str | None = None) -> BoxHits:
    """An ensemble's scored tile heatmaps on the boxed images, scored box by box (the grid from the run's
    artifact)."""
    run = open_run(results_uri, endpoint)
    if run.heatmap_shape is None or run.manifest is None:
        raise ValueError(f"{results_uri}: not a committed tile-ensemble run (no heatmap column)")
    _, manifest = open_typed(run.manifest.artifact_uri, endpoint, "--model", ArtifactKind.ENSEMBLE)
    assert isinstance(manifest, EnsembleManifest)
    heat = read_heatmaps(run, (b.image_index for b in boxes))
    ids = tuple(sorted(heat))
    maps = np.stack([heat[i] for i in ids]) if ids else np.zeros((0, *run.heatmap_shape), np.float32)
    edges = heatmap_cell(manifest.grid) * np.arange(run.heatmap_shape[-1] + 1, dtype=np.float64)
    return box_hits(maps, manifest.grid.image_size, edges, ids, boxes, dimensions, manifest.labels)


@dataclass(frozen=True)
class HeatmapVsCam:
    """An ensemble's heatmaps vs a single model's CAM on the same test boxes (None: no box both cover)."""

    comparison: LocalisationComparison | None
    cam_method: str
    test_boxes: int


def heatmap_vs_cam(ensemble_results_uri: str, single_model_uri: str, archive: str, metadata: ArchiveMetadata,
                   metadata_uri: str, endpoint: str | None = None) -> HeatmapVsCam:
    """Both localisations on the archive's boxed test images, paired box by box. single_model_uri: the single
    model's checkpoint, or the model artifact quantized from it."""
    boxes = boxes_on_test_images(metadata, metadata_uri)
    single, method, dimensions = cam_hits(checkpoint_of(single_model_uri, endpoint), archive, boxes, endpoint)
    ensemble = heatmap_hits(ensemble_results_uri, boxes, dimensions, endpoint)
    return HeatmapVsCam(compare_localisation(ensemble, single), method, len(boxes))


def localisation_line(result: HeatmapVsCam, a: str = "ensemble heatmap", b: str = "single-model") -> str:
    """One line for a console or a table: each map's hit rate beside its chance rate (a coarser map is easier to
    hit by chance: compare each with its own), the paired counts and McNemar's exact p. No verdict beyond that."""
    cmp = result.comparison
    b = f"{b} {result.cam_method.upper()}"
    if cmp is None:
        return f"localisation: none of the {result.test_boxes} test boxes is on an image both maps cover"
    return (f"localisation on {cmp.a.boxes} test boxes (peak cell overlaps the BBox_List box): {a} "
            f"{cmp.a.peak_in_box:.1%} (chance {cmp.a.chance:.1%}) vs {b} {cmp.b.peak_in_box:.1%} (chance "
            f"{cmp.b.chance:.1%}); hit by both {cmp.both}, by the first only {cmp.only_a}, by the second only "
            f"{cmp.only_b}, McNemar p {cmp.mcnemar_p:.3g}")


def report_localisation(run: ScoredRun, metadata: ArchiveMetadata, archive: str | None,
                        endpoint: str | None = None) -> Localisation | None:
    """For the report's summary: how often a tile-ensemble run's heatmap peaks inside the BBox_List box, on the
    archive's boxed test images (their stored sizes read from the image headers, no decode). None when the run has
    no heatmaps, no --archive is given, or there are no boxes on test images; no torch needed."""
    if run.heatmap_shape is None or run.manifest is None or archive is None or not metadata.bboxes or \
            metadata.test is None:
        return None
    _, manifest = open_typed(run.manifest.artifact_uri, endpoint, "--model", ArtifactKind.MODEL, ArtifactKind.ENSEMBLE)
    if not isinstance(manifest, EnsembleManifest):  # heatmaps without a grid to place them: nothing to score
        return None
    boxes = boxes_on_test_images(metadata, "--metadata")
    rows = {str(i): str(s) for i, s in zip(run.image_id, run.source, strict=True)}
    wanted = {b.image_index: rows[b.image_index] for b in boxes if b.image_index in rows}
    if not wanted:
        return None
    dimensions = {}
    for image_id, data in fetch_images(archive, wanted, endpoint).items():
        try:
            dimensions[image_id] = image_dimensions(data)
        except DecodeError:
            continue
    return heatmap_hits(run.uri, boxes, dimensions, endpoint).summary()
