"""Typed artifact manifests: what a checkpoint, a model or a tile ensemble artifact says about itself.

One frozen dataclass per artifact kind, with to_json() for the writers (train, quantize, train-tiles) and
manifest_from_json() for every reader (quantize, score, the scorer actors). A wrong or missing key fails
where the manifest is read, on the driver, with a ValueError naming the artifact and the key, never as a
KeyError inside a remote actor. storage/artifacts.py adds `files` (sha256 of every file) and stores the
JSON; this module knows nothing of bytes at rest.

JSON layout (schema_version 1, unchanged from the untyped manifests, so every artifact written before
reads back; keys added since are optional):
  checkpoint: kind, model {name, labels, input_size, [mean, std]}, config, math_path, history, test_auroc,
              test_mean_auroc, split, versions, [source]
  model:      kind, model, labels, input {shape [-1, 1, S, S], ..., normalization}, output,
              precisions {name: xml path}, checkpoint {uri, sha256}, calibration {[source], images, seed, ...},
              metrics {eval_images, [evaluation], ...}, split, versions, config, [source]
  calibration.source (archive | synthetic | fractal) is absent from models quantized before it was recorded:
  they were all calibrated on the archive. metrics.evaluation is null for a model quantized without an archive
  (nothing was evaluated), absent from models written before it was recorded.
  split is null for a model brought in by `tilescope import` (the patients it trained on are not known);
  source (import only) says what was imported: format, file and its sha256, how outputs map to labels.
  ensemble:   kind, model, backbone, labels, grid {image_size, tile_size, stride, ...}, input, output,
              positions [{position, origin, fp32, int8, history, nodes, ...}], combiner {default, stacked},
              thresholds, metrics, split, math_path, versions, config
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xray.tiles.grid import TileGrid
from xray.tiles.join import Combiner

MANIFEST_SCHEMA_VERSION = 1
GRAYSCALE_U8_INPUT = {"dtype": "uint8", "layout": "NCHW", "color": "grayscale"}
SIGMOID_OUTPUT = {"name": "probabilities", "activation": "sigmoid"}
DEFAULT_VAL_FRACTION = 0.15  # what artifacts written before the split was recorded were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization_text(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """How pixels are normalised inside the graph, in words (a model manifest's input.normalization)."""
    if (tuple(mean), tuple(std)) == (IMAGENET_MEAN, IMAGENET_STD):
        return "inside the graph: x/255, ImageNet mean/std, grey replicated to 3 channels"
    channels = "grey replicated to 3 channels" if len(mean) == 3 else "one grey value on every channel"
    return f"inside the graph: x/255, mean {list(mean)}, std {list(std)}, {channels}"


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a model (xray.models.registry.build_model): the registry name, its labels (its outputs,
    in order), its square input size and the normalisation inside its graph (x/255, then per channel
    (x - mean) / std; grey is replicated to the channels). Defined here, not in xray.models.registry, so that reading a
    manifest imports no torch."""

    name: str
    labels: tuple[str, ...]
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class IRKind(enum.StrEnum):
    """The OpenVINO IRs an artifact can hold: the manifest key and the folder each lives in. (Which precision
    *runs* is actors.openvino_ir.IRPrecision: bf16 runs the fp32 IR.)"""

    FP32 = "fp32"
    INT8 = "int8"

    def xml(self, prefix: str = "") -> str:
        """The IR's xml path inside an artifact: `<prefix>/<kind>/model.xml`, or `<kind>/model.xml`."""
        return f"{prefix}/{self.value}/model.xml" if prefix else f"{self.value}/model.xml"


def position_dir(position: int) -> str:
    """Where a tile position's IRs live inside an ensemble artifact (and in train-tiles' exports)."""
    return f"positions/p{position:03d}"


def position_ir_path(position: int, kind: IRKind) -> str:
    """A tile position's IR xml inside an ensemble artifact: the one place this path is built."""
    return kind.xml(position_dir(position))


class ArtifactKind(enum.StrEnum):
    CHECKPOINT = "checkpoint"
    MODEL = "model"
    ENSEMBLE = "ensemble"


class ManifestError(ValueError):
    """A manifest that is not what its reader needs: names the artifact and the key."""


@dataclass(frozen=True)
class SplitRecord:
    """How the patients were split when the model was trained: redraw with xray.metadata.splits.split_by_patient."""

    val_fraction: float
    seed: int
    train: int | None = None
    """Images in each split (None when not recorded)."""
    val: int | None = None
    test: int | None = None

    def to_json(self) -> dict:
        return {"val_fraction": self.val_fraction, "seed": self.seed, "train": self.train, "val": self.val,
                "test": self.test}


@dataclass(frozen=True)
class CheckpointManifest:
    """PyTorch weights (model.pt, a state dict) and how they were trained."""

    model: ModelSpec
    split: SplitRecord | None
    """None for imported weights: the patients they were trained on are not known."""
    config: Mapping[str, Any] = field(default_factory=dict)
    math_path: str = ""
    history: tuple[Mapping[str, Any], ...] = ()
    test_auroc: tuple[float, ...] = ()
    test_mean_auroc: float | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    """What `tilescope import` brought in (empty for a trained checkpoint)."""
    schema_version: int = MANIFEST_SCHEMA_VERSION
    kind: ArtifactKind = field(default=ArtifactKind.CHECKPOINT, init=False)

    def to_json(self) -> dict:
        m = self.model
        body = {"schema_version": self.schema_version, "kind": self.kind.value,
                "model": {"name": m.name, "labels": list(m.labels), "input_size": m.input_size,
                          "mean": list(m.mean), "std": list(m.std)},
                "split": _split_json(self.split), "config": dict(self.config), "math_path": self.math_path,
                "history": [dict(h) for h in self.history], "test_auroc": list(self.test_auroc),
                "test_mean_auroc": self.test_mean_auroc, "versions": dict(self.versions)}
        return {**body, "source": dict(self.source)} if self.source else body


@dataclass(frozen=True)
class ModelManifest:
    """One OpenVINO model: an IR per precision (input u8 (N, 1, S, S), output probabilities (N, L))."""

    model: str
    labels: tuple[str, ...]
    input_size: int
    irs: Mapping[str, str]
    """precision name -> the IR's xml path inside the artifact (the .bin beside it)."""
    split: SplitRecord | None
    """None for an imported model: the patients it was trained on are not known."""
    checkpoint: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    normalization: str = normalization_text(IMAGENET_MEAN, IMAGENET_STD)
    source: Mapping[str, Any] = field(default_factory=dict)
    """What `tilescope import` brought in (empty for a model quantized from a trained checkpoint)."""
    schema_version: int = MANIFEST_SCHEMA_VERSION
    kind: ArtifactKind = field(default=ArtifactKind.MODEL, init=False)

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(sorted(self.irs))

    @property
    def calibration_source(self) -> str | None:
        """Which images calibrated the INT8 IR (`calibration.source`: archive, synthetic, fractal; see
        xray.calibration.sets): "archive" for a model quantized before the source was recorded (archive was
        the only one), None for a model with no INT8 calibration (an imported FP32 model)."""
        if not self.calibration:
            return None
        return str(self.calibration.get("source", "archive"))

    def ir_path(self, precision: str) -> str:
        if precision not in self.irs:
            raise ManifestError(f"artifact {self.model} has no {precision} IR (it has {', '.join(self.precisions)})")
        return self.irs[precision]

    def to_json(self) -> dict:
        s = self.input_size
        body = {"schema_version": self.schema_version, "kind": self.kind.value, "model": self.model,
                "labels": list(self.labels),
                "input": {"shape": [-1, 1, s, s], **GRAYSCALE_U8_INPUT, "normalization": self.normalization},
                "output": dict(SIGMOID_OUTPUT), "precisions": dict(self.irs), "split": _split_json(self.split),
                "checkpoint": dict(self.checkpoint), "calibration": dict(self.calibration),
                "metrics": dict(self.metrics), "versions": dict(self.versions), "config": dict(self.config)}
        return {**body, "source": dict(self.source)} if self.source else body


@dataclass(frozen=True)
class PositionRecord:
    """One tile position of an ensemble: its IR per precision and how it was trained."""

    position: int
    origin: tuple[int, int]
    irs: Mapping[str, str]
    history: tuple[Mapping[str, Any], ...] = ()
    nodes: tuple[str, ...] = ()
    resumed_from_epoch: int = 0
    tiles_per_s: float = 0.0

    def to_json(self) -> dict:
        return {"position": self.position, "origin": list(self.origin), **dict(self.irs),
                "history": [dict(h) for h in self.history], "nodes": list(self.nodes),
                "resumed_from_epoch": self.resumed_from_epoch, "tiles_per_s": self.tiles_per_s}


ENSEMBLE_PRECISIONS = (IRKind.FP32, IRKind.INT8)


@dataclass(frozen=True)
class EnsembleManifest:
    """A tile ensemble: one model per grid position, joined by a combiner (xray.tiles.join)."""

    model: str
    backbone: str
    labels: tuple[str, ...]
    grid: TileGrid
    positions: tuple[PositionRecord, ...]
    combiner: str
    """The default join: mean, max or stacked (xray.tiles.join.Combiner)."""
    stacked: Mapping[str, Any]
    """StackedWeights.to_json() of the stacked combiner."""
    split: SplitRecord
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    math_path: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    kind: ArtifactKind = field(default=ArtifactKind.ENSEMBLE, init=False)

    @property
    def input_size(self) -> int:
        return self.grid.image_size

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions every position has an IR for."""
        have = [set(p.irs) for p in self.positions]
        return tuple(sorted(set.intersection(*have))) if have else ()

    def ir_paths(self, precision: str) -> list[str]:
        """Each position's IR xml path, in position order."""
        if precision not in self.precisions:
            raise ManifestError(f"ensemble {self.model} has no {precision} IR for every position "
                                f"(it has {', '.join(self.precisions) or 'none'})")
        return [p.irs[precision] for p in sorted(self.positions, key=lambda p: p.position)]

    def to_json(self) -> dict:
        g = self.grid
        return {"schema_version": self.schema_version, "kind": self.kind.value, "model": self.model,
                "backbone": self.backbone, "labels": list(self.labels),
                "grid": {"image_size": g.image_size, "tile_size": g.tile_size, "stride": g.stride,
                         "shape": list(g.shape), "order": "row-major"},
                "input": {"shape": [-1, 1, g.image_size, g.image_size], **GRAYSCALE_U8_INPUT,
                          "position_input": [-1, 1, g.tile_size, g.tile_size],
                          "normalization": "inside each position graph: x/255, ImageNet mean/std"},
                "output": dict(SIGMOID_OUTPUT), "positions": [p.to_json() for p in self.positions],
                "combiner": {"default": self.combiner, "stacked": dict(self.stacked)},
                "thresholds": dict(self.thresholds), "metrics": dict(self.metrics), "split": self.split.to_json(),
                "math_path": self.math_path, "versions": dict(self.versions), "config": dict(self.config)}


Manifest = CheckpointManifest | ModelManifest | EnsembleManifest
ScorableManifest = ModelManifest | EnsembleManifest


class _Reader:
    """Key access that names the artifact and the key path on failure."""

    def __init__(self, body: Mapping[str, Any], where: str, path: str = "") -> None:
        if not isinstance(body, Mapping):
            raise ManifestError(f"{where}: manifest.json{path or ''} is not a JSON object")
        self.body, self.where, self.path = body, where, path

    def __call__(self, key: str, default: Any = ..., kind: type | tuple[type, ...] | None = None) -> Any:
        if key not in self.body:
            if default is ...:
                raise ManifestError(f"{self.where}: manifest.json has no {self.path}{key!r}; "
                                    "not a tilescope artifact, or written by an incompatible version")
            return default
        value = self.body[key]
        if kind is not None and not isinstance(value, kind):
            raise ManifestError(f"{self.where}: manifest.json {self.path}{key!r} is {type(value).__name__}, "
                                f"expected {kind if isinstance(kind, type) else kind[0]}")
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self(key, kind=dict), self.where, f"{self.path}{key}.")


def _split_json(split: SplitRecord | None) -> dict | None:
    return None if split is None else split.to_json()


def _split(r: _Reader) -> SplitRecord | None:
    """The recorded split; null for an imported model; artifacts written before it was recorded fall back to
    their config."""
    if "split" in r.body and r.body["split"] is None:
        return None
    if "split" in r.body and "val_fraction" in (r.body.get("split") or {}):
        s = r.sub("split")
        return SplitRecord(float(s("val_fraction", kind=(int, float))), int(s("seed", kind=int)),
                           s("train", None), s("val", None), s("test", None))
    config = r.body.get("config") or {}
    counts = r.body.get("split") or {}
    return SplitRecord(float(config.get("val_fraction", DEFAULT_VAL_FRACTION)), int(config.get("seed", 0)),
                       counts.get("train"), counts.get("val"), counts.get("test"))


def _labels(r: _Reader) -> tuple[str, ...]:
    labels = r("labels", kind=list)
    if not labels or not all(isinstance(x, str) for x in labels):
        raise ManifestError(f"{r.where}: manifest.json {r.path}'labels' must be a non-empty list of names")
    return tuple(labels)


def _common(r: _Reader) -> dict:
    return {"config": r("config", {}), "versions": r("versions", {}), "schema_version": int(r("schema_version", 1))}


def manifest_from_json(body: Mapping[str, Any], where: str) -> Manifest:
    """Parse a manifest.json body; `where` (the artifact URI) goes into every error message."""
    r = _Reader(body, where)
    version = r("schema_version", MANIFEST_SCHEMA_VERSION)
    if not isinstance(version, int) or version > MANIFEST_SCHEMA_VERSION:
        raise ManifestError(f"{where}: manifest schema_version {version!r} is newer than this tilescope reads "
                            f"({MANIFEST_SCHEMA_VERSION}); upgrade tilescope")
    try:
        kind = ArtifactKind(r("kind", kind=str))
    except ValueError as exc:
        raise ManifestError(f"{where}: manifest kind {body.get('kind')!r} is not one of "
                            f"{', '.join(k.value for k in ArtifactKind)}") from exc
    if kind is ArtifactKind.CHECKPOINT:
        m = r.sub("model")
        spec = ModelSpec(m("name", kind=str), _labels(m), int(m("input_size", kind=int)),
                         tuple(float(v) for v in m("mean", list(IMAGENET_MEAN), kind=list)),
                         tuple(float(v) for v in m("std", list(IMAGENET_STD), kind=list)))
        return CheckpointManifest(model=spec, split=_split(r), math_path=r("math_path", ""),
                                  history=tuple(r("history", [])), test_auroc=tuple(r("test_auroc", [])),
                                  test_mean_auroc=r("test_mean_auroc", None), source=r("source", {}, kind=dict),
                                  **_common(r))
    if kind is ArtifactKind.MODEL:
        model_input = r.sub("input")
        shape = model_input("shape", kind=list)
        irs = r("precisions", kind=dict)
        if not irs or not all(isinstance(v, str) for v in irs.values()):
            raise ManifestError(f"{where}: manifest.json 'precisions' must map precision names to IR paths")
        return ModelManifest(model=r("model", kind=str), labels=_labels(r), input_size=int(shape[-1]), irs=irs,
                             split=_split(r), checkpoint=r("checkpoint", {}), calibration=r("calibration", {}),
                             metrics=r("metrics", {}), source=r("source", {}, kind=dict),
                             normalization=model_input("normalization", ModelManifest.normalization, kind=str),
                             **_common(r))
    g = r.sub("grid")
    try:
        grid = TileGrid(int(g("image_size", kind=int)), int(g("tile_size", kind=int)), int(g("stride", kind=int)))
    except ValueError as exc:
        raise ManifestError(f"{where}: manifest.json grid: {exc}") from exc
    positions = []
    for k, p in enumerate(r("positions", kind=list)):
        pr = _Reader(p, where, f"positions[{k}].")
        positions.append(PositionRecord(
            position=int(pr("position", kind=int)), origin=tuple(pr("origin", [0, 0])),
            irs={name: pr(name, kind=str) for name in ENSEMBLE_PRECISIONS if name in pr.body},
            history=tuple(pr("history", [])), nodes=tuple(pr("nodes", [])),
            resumed_from_epoch=int(pr("resumed_from_epoch", 0)), tiles_per_s=float(pr("tiles_per_s", 0.0))))
    if sorted(p.position for p in positions) != list(range(grid.n_positions)):
        raise ManifestError(f"{where}: manifest.json lists positions {sorted(p.position for p in positions)}, "
                            f"the grid has {grid.n_positions}")
    c = r.sub("combiner")
    if c("default", kind=str) not in {x.value for x in Combiner}:
        raise ManifestError(f"{where}: manifest.json combiner.default {c('default')!r} is not one of "
                            f"{', '.join(x.value for x in Combiner)}")
    return EnsembleManifest(model=r("model", kind=str), backbone=r("backbone", ""), labels=_labels(r), grid=grid,
                            positions=tuple(positions), combiner=c("default", kind=str),
                            stacked=c("stacked", kind=dict),
                            split=_split(r), thresholds=r("thresholds", {}), metrics=r("metrics", {}),
                            math_path=r("math_path", ""), **_common(r))
