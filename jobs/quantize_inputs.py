"""What quantize reads before NNCF runs: the model to quantize (a checkpoint exported to FP32 IR, or a model
artifact's FP32 IR) and the images (calibration from the chosen source, evaluation from the archive's test
split), and the manifest's record of which calibration images were used.

Takes an InputPlan (what to read), never quantize's whole config: quantize imports this module, not the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.openvino_ir import IRPrecision, export_fp32, ir_bytes, ir_files, read_ir
from storage.artifacts import Artifact, open_typed
from storage.image_sets import load_image_set
from storage.metadata_files import default_metadata_uri, load_metadata
from xray.calibration.sets import (
    CalibrationSource,
    archive_calibration_ids,
    generated_images,
)
from xray.metadata.labels import LABELS
from xray.metadata.manifests import (
    DEFAULT_VAL_FRACTION,
    ArtifactKind,
    CheckpointManifest,
    IRKind,
    ModelManifest,
    SplitRecord,
    normalization_text,
)
from xray.metadata.splits import labels_for, split_by_patient


@dataclass(frozen=True)
class InputPlan:
    """What quantize reads: the model to quantize and where its calibration and evaluation images come from
    (the fields of QuantizeConfig of the same names)."""

    checkpoint: str
    archive: str | None
    metadata: str | None
    calibration: CalibrationSource
    calibration_size: int
    eval_size: int
    seed: int
    s3_endpoint: str | None
    budget_size: int = 0
    """Images of the model's validation patients the decision figures are measured on (0: none)."""


@dataclass(frozen=True)
class Source:
    """What is quantized: an FP32 OpenVINO model and what the new artifact says about where it came from."""

    model: str
    labels: tuple[str, ...]
    input_size: int
    normalization: str
    fp32: object  # openvino.Model
    fp32_files: dict[str, bytes]
    split: SplitRecord | None
    origin: dict
    imported: dict
    versions: dict
    torch_model: object = None
    """The checkpoint's PyTorch model (logits), for quantization-aware fine-tuning; None for an IR source."""


def load_source(cfg: InputPlan) -> Source:
    """The --checkpoint artifact as an FP32 OpenVINO model (a checkpoint is exported, a model artifact read)."""
    artifact, manifest = open_typed(cfg.checkpoint, cfg.s3_endpoint, "--checkpoint", ArtifactKind.CHECKPOINT,
                                    ArtifactKind.MODEL)
    origin = {"uri": artifact.uri, "sha256": artifact.sha256, "kind": manifest.kind.value}
    if isinstance(manifest, CheckpointManifest):
        return _from_checkpoint(artifact, manifest, origin)
    assert isinstance(manifest, ModelManifest)
    xml = manifest.ir_path(IRPrecision.FP32.ir)
    files = {f"fp32/model.{ext}": data for ext, data in zip(("xml", "bin"), ir_files(artifact, xml).values(),
                                                              strict=True)}
    return Source(manifest.model, manifest.labels, manifest.input_size, manifest.normalization,
                  read_ir(artifact, xml), files, manifest.split, origin, dict(manifest.source), {})


def _from_checkpoint(artifact: Artifact, manifest: CheckpointManifest, origin: dict) -> Source:
    import torch

    from xray.models.registry import build_model, load_state

    spec = manifest.model
    model = build_model(spec)
    load_state(model, artifact.read("model.pt"), artifact.uri)
    model.eval()
    fp32 = export_fp32(model, spec.input_size)
    return Source(spec.name, spec.labels, spec.input_size, normalization_text(spec.mean, spec.std), fp32,
                  ir_bytes(fp32, IRKind.FP32), manifest.split, origin, dict(manifest.source),
                  {"torch": torch.__version__}, model)


@dataclass(frozen=True)
class ImageSubsets:
    """Calibration pixels (C, 1, S, S); evaluation ids (M,), pixels (M, 1, S, S) and labels (M, L); M = 0 without
    an archive."""

    calibration: np.ndarray
    eval_ids: tuple[str, ...]
    eval_pixels: np.ndarray
    eval_labels: np.ndarray
    budget_ids: tuple[str, ...] = ()
    """Images of the model's validation patients (never test) for the decision figures; B = len(budget_ids)."""
    budget_pixels: np.ndarray | None = None
    budget_labels: np.ndarray | None = None
    train_ids: tuple[str, ...] = ()
    """The model's training images, shuffled (seed): quantization-aware fine-tuning reads a prefix of them when it
    runs (calibration images among them: they are training images too)."""


def draw_images(cfg: InputPlan, source: Source) -> ImageSubsets:
    """Calibration images of the chosen source, and seeded evaluation images from the archive's test split, for
    the model's split (an imported model has none: train_val and test as the archive's lists give them).

    The archive calibration subset is drawn first whatever the source (xray.calibration.sets), so one --seed
    evaluates every source on the same test images."""
    size = source.input_size
    generated = None if cfg.calibration == CalibrationSource.ARCHIVE else \
        generated_images(cfg.calibration, cfg.calibration_size, size, cfg.seed)
    if cfg.archive is None:
        assert generated is not None  # validate(): archive calibration needs --archive
        return ImageSubsets(generated, (), np.zeros((0, 1, size, size), np.uint8),
                            np.zeros((0, len(source.labels)), np.float32))
    meta = load_metadata(cfg.metadata or default_metadata_uri(cfg.archive), cfg.s3_endpoint)
    record = source.split or SplitRecord(DEFAULT_VAL_FRACTION, 0)
    split = split_by_patient(meta, record.val_fraction, record.seed)
    rng = np.random.default_rng(cfg.seed)
    calib_ids = archive_calibration_ids(sorted(split.train | split.val), cfg.calibration_size, rng)
    eval_pool = sorted(split.test)
    eval_ids = set(rng.choice(eval_pool, size=min(cfg.eval_size, len(eval_pool)), replace=False).tolist()) \
        if cfg.eval_size else set()
    val_pool = sorted(split.val)
    budget_ids = set(rng.choice(val_pool, size=min(cfg.budget_size, len(val_pool)), replace=False).tolist()) \
        if cfg.budget_size and val_pool else set()
    train_pool = sorted(split.train)
    train_ids = tuple(train_pool[i] for i in rng.permutation(len(train_pool)))
    wanted = eval_ids | budget_ids | (calib_ids if generated is None else set())
    images = load_image_set(cfg.archive, wanted, size, cfg.s3_endpoint)
    pick = {i: k for k, i in enumerate(images.ids)}
    calibration = generated if generated is not None else images.pixels[[pick[i] for i in images.ids
                                                                          if i in calib_ids]]
    if len(calibration) == 0:
        raise ValueError(f"--archive {cfg.archive}: no decodable calibration images found")
    eval_order = tuple(i for i in images.ids if i in eval_ids)
    budget_order = tuple(i for i in images.ids if i in budget_ids)
    columns = [LABELS.index(label) for label in source.labels]
    return ImageSubsets(calibration, eval_order, images.pixels[[pick[i] for i in eval_order]],
                        labels_for(eval_order, meta)[:, columns], budget_order,
                        images.pixels[[pick[i] for i in budget_order]], labels_for(budget_order, meta)[:, columns],
                        train_ids)


def training_pixels(cfg: InputPlan, source: Source, images: ImageSubsets, count: int) -> np.ndarray:
    """Up to `count` of the model's training images (the first of images.train_ids that decode), (M, 1, S, S)."""
    assert cfg.archive is not None
    wanted = set(images.train_ids[:count])
    loaded = load_image_set(cfg.archive, wanted, source.input_size, cfg.s3_endpoint)
    if len(loaded.pixels) == 0:
        raise ValueError(f"--archive {cfg.archive}: none of the model's training images decodes, so "
                         "quantization-aware fine-tuning has nothing to train on")
    return loaded.pixels
