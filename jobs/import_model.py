"""Bring your own model: PyTorch weights, an ONNX file or an OpenVINO IR -> an artifact quantize and score take.

--weights FILE --backbone NAME: a state dict for a registry backbone (densenet121 for CheXNet), as saved by
  most projects: raw, under {"state_dict": ...} or {"model": ...}, with nn.DataParallel's `module.` prefix,
  old torchvision DenseNet names (norm.1, conv.2), CheXNet's `densenet121.` attribute and `classifier.0`
  head, torchvision / timm names, or safetensors. Loaded with torch.load(weights_only=True): a pickled whole
  model is refused, with how to save its state dict. Writes a checkpoint artifact: `tilescope quantize` next.
--onnx FILE / --ir XML (the .bin beside it): any image classifier with one (N, C, S, S) input (C = 1 or 3;
  --input-layout nhwc for (N, S, S, C)) and an (N, K) output of logits or probabilities (--outputs). Gets
  tilescope's u8 grey input with the normalisation inside and a sigmoid output; writes a model artifact with
  an FP32 IR, which `tilescope score --precision fp32|bf16` runs and `tilescope quantize` turns into INT8.

Outputs: --labels names the model's outputs in order (ChestX-ray14 names, `-` for one tilescope has no column
for); default: the 14 in CheXNet order. They are mapped to CheXNet column order; labels the model lacks get
no column. Normalisation: x/255, then (x - mean) / std per channel, ImageNet's by default (--mean / --std in
the 0-1 scale, one value or three), grey replicated to the model's channels. Calibration for INT8 comes
later, from your own archive (`tilescope quantize --archive`).

    tilescope import --weights chexnet.pth.tar --backbone densenet121 --out runs/chexnet-ckpt
    ray job submit --working-dir . -- python -m jobs.import_model --onnx s3://b/m.onnx --out s3://b/m-fp32
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

from cli.flags import coerce_choices, require_valid
from cli.job_main import job_main
from cli.provenance import tilescope_versions
from jobs.import_stages import (
    InputLayout,
    OutputKind,
    import_weights,
    onnx_external_data,
    read_foreign,
    wrap_foreign,
)
from storage.artifacts import require_new, sha256_hex, write_artifact
from storage.fs import read_bytes, resolve
from storage.results import safe_component
from xray.metadata.manifests import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheckpointManifest,
    IRKind,
    ModelManifest,
    normalization_text,
)

DEFAULT_WEIGHTS_SIZE = 224


@dataclass(frozen=True)
class ImportConfig:
    out: str
    """Artifact URI to create (local or s3://); must not exist yet."""
    weights: str | None = None
    """PyTorch weights file (state dict, checkpoint dict or safetensors), local or s3://; needs --backbone."""
    backbone: str | None = None
    """Registry backbone the --weights are for: densenet121 (CheXNet), resnet18, mobilenet_v3_small, dwsep_cnn,
    vgg16."""
    onnx: str | None = None
    """ONNX model file, local or s3://."""
    ir: str | None = None
    """OpenVINO IR .xml (its .bin beside it), local or s3://."""
    labels: tuple[str, ...] = ()
    """The model's outputs in order: ChestX-ray14 names, '-' for an output to leave out; default the 14 in
    CheXNet order."""
    input_size: int | None = None
    """Square input side in pixels; default 224 for --weights, the model's own for a static ONNX/IR input."""
    mean: tuple[float, ...] = ()
    """Normalisation mean on the 0-1 scale, one value or one per channel; default ImageNet's."""
    std: tuple[float, ...] = ()
    """Normalisation std on the 0-1 scale, one value or one per channel; default ImageNet's."""
    outputs: OutputKind = OutputKind.LOGITS
    """ONNX/IR: the output holds logits (a sigmoid is added) or probabilities."""
    output_name: str | None = None
    """ONNX/IR: the output holding the findings, when the model has several."""
    input_layout: InputLayout = InputLayout.NCHW
    """ONNX/IR: nchw or nhwc."""
    name: str | None = None
    """ONNX/IR: model name in the artifact and in result paths; default the file's name."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto; default from the environment."""


@dataclass(frozen=True)
class ImportSummary:
    out: str
    sha256: str
    kind: str
    """checkpoint (from --weights) or model (from --onnx / --ir)."""
    model: str
    labels: tuple[str, ...]
    input_size: int
    notes: tuple[str, ...]
    seconds: float


def _floats(cfg: ImportConfig, name: str, problems: list[str]) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in getattr(cfg, name))
    except ValueError:
        problems.append(f"--{name} {' '.join(map(str, getattr(cfg, name)))}: not numbers")
        return ()
    object.__setattr__(cfg, name, values)  # frozen: the same values, as floats (the CLI passes strings)
    return values


def validate(cfg: ImportConfig) -> None:
    problems = coerce_choices(cfg)
    given = [flag for flag, v in (("--weights", cfg.weights), ("--onnx", cfg.onnx), ("--ir", cfg.ir)) if v]
    if len(given) != 1:
        problems.append(f"give exactly one of --weights, --onnx, --ir (got {', '.join(given) or 'none'})")
    if cfg.weights:
        from xray.models.registry import BACKBONES  # torch: only a weights import needs it

        if cfg.backbone not in BACKBONES:
            problems.append(f"--weights needs --backbone, one of {', '.join(BACKBONES)} (got {cfg.backbone!r})")
    if not cfg.weights:
        if cfg.backbone:
            problems.append("--backbone goes with --weights (an ONNX/IR model brings its own architecture)")
    else:
        for flag, value, default in (("--outputs", cfg.outputs, OutputKind.LOGITS), ("--output-name",
                                     cfg.output_name, None), ("--input-layout", cfg.input_layout, InputLayout.NCHW),
                                     ("--name", cfg.name, None)):
            if value != default:
                problems.append(f"{flag} applies to --onnx / --ir (a checkpoint is named by its --backbone, and its "
                                "head gives logits)")
    if cfg.ir and not cfg.ir.endswith(".xml"):
        problems.append(f"--ir {cfg.ir}: name the IR's .xml (its .bin beside it)")
    if cfg.input_size is not None and cfg.input_size < 32:
        problems.append(f"--input-size {cfg.input_size} is below 32 pixels")
    mean, std = _floats(cfg, "mean", problems), _floats(cfg, "std", problems)
    if bool(mean) != bool(std) or len(mean) not in (0, 1, 3) or len(std) not in (0, 1, 3):
        problems.append("--mean and --std go together, one value or three each")
    if any(not (s > 0 and math.isfinite(s)) for s in std):
        problems.append("--std values must be positive")
    if not cfg.out.strip():
        problems.append("--out is empty; name a local path or s3:// URI")
    require_valid(problems)


def run(cfg: ImportConfig) -> ImportSummary:
    validate(cfg)
    t0 = time.perf_counter()
    require_new(cfg.out, cfg.s3_endpoint)
    summary = _import_weights(cfg) if cfg.weights else _import_graph(cfg)
    summary = ImportSummary(**{**asdict(summary), "seconds": time.perf_counter() - t0})
    print(f"imported {summary.model} ({summary.kind} artifact {summary.out}, sha256 {summary.sha256[:12]}): "
          f"{len(summary.labels)} label columns ({', '.join(summary.labels)}), input {summary.input_size} px"
          + (f"; {'; '.join(summary.notes)}" if summary.notes else ""), flush=True)
    nxt = "quantize --checkpoint" if summary.kind == "checkpoint" else "score --precision fp32 --model"
    print(f"next: tilescope {nxt} {summary.out} ...", flush=True)
    return summary


def _normalisation(cfg: ImportConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (cfg.mean, cfg.std) if cfg.mean else (IMAGENET_MEAN, IMAGENET_STD)


def _import_weights(cfg: ImportConfig) -> ImportSummary:
    import torch

    assert cfg.weights and cfg.backbone
    data = read_bytes(resolve(cfg.weights, cfg.s3_endpoint))
    mean, std = _normalisation(cfg)
    size = cfg.input_size or DEFAULT_WEIGHTS_SIZE
    imported = import_weights(data, cfg.weights, cfg.backbone, cfg.labels, size, mean, std)
    source = {"format": "safetensors" if data[8:9] == b"{" else "pytorch", "file": cfg.weights,
              "sha256": sha256_hex(data), "renamed": list(imported.notes), "outputs": imported.outputs.to_json()}
    manifest = CheckpointManifest(model=imported.spec, split=None, config=asdict(cfg),
                                  versions={"torch": torch.__version__, **tilescope_versions()}, source=source)
    sha = write_artifact(cfg.out, {"model.pt": imported.model_pt}, manifest, cfg.s3_endpoint)
    return ImportSummary(cfg.out, sha, "checkpoint", imported.spec.name, imported.spec.labels, size,
                         imported.notes, 0.0)


def _import_graph(cfg: ImportConfig) -> ImportSummary:
    import openvino as ov

    from actors.openvino_ir import ir_bytes

    uri = cfg.onnx or cfg.ir
    assert uri
    main = "model.onnx" if cfg.onnx else "model.xml"
    files = {main: read_bytes(resolve(uri, cfg.s3_endpoint))}
    if cfg.ir:
        files["model.bin"] = read_bytes(_beside(uri, uri.rsplit("/", 1)[-1][: -len(".xml")] + ".bin", cfg))
    else:
        # ONNX models over 2 GB (and some exporters) keep tensors in files beside the model: read those, and
        # only those, from the model's folder (import_stages.onnx_external_data refuses anything else).
        for location in onnx_external_data(files[main], uri):
            files[location] = read_bytes(_beside(uri, location, cfg))
    foreign = read_foreign(files, main, cfg.input_layout)
    size = cfg.input_size or foreign.size
    if size is None:
        raise ValueError(f"{uri}: the model's input size is dynamic; give --input-size")
    if foreign.size is not None and size != foreign.size:
        raise ValueError(f"--input-size {size}: the model's input is {foreign.size} x {foreign.size} px")
    mean, std = _normalisation(cfg)
    if foreign.channels == 1 and len(mean) == 3:
        raise ValueError(f"{uri}: the model takes one grey channel; give its normalisation as one value each: "
                         "--mean M --std S" + (" (ImageNet's has three)" if not cfg.mean else ""))
    wrapped, mapping = wrap_foreign(foreign, cfg.output_name, cfg.labels, size, mean, std, cfg.outputs,
                                    cfg.input_layout, uri)
    parts = uri.rstrip("/").split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    # An IR is usually <name>/model.xml: then the folder names it.
    name = safe_component(cfg.name or (parts[-2] if stem == "model" and len(parts) > 1 else stem))
    source = {"format": "onnx" if cfg.onnx else "openvino_ir", "file": uri,
              "sha256": sha256_hex(b"".join(files[k] for k in sorted(files))), "outputs": mapping.to_json(),
              "output_kind": cfg.outputs.value, "input_layout": cfg.input_layout.value,
              "input_channels": foreign.channels}
    manifest = ModelManifest(model=name, labels=mapping.labels, input_size=size, irs={IRKind.FP32: IRKind.FP32.xml()},
                             split=None, normalization=normalization_text(mean, std), source=source,
                             versions={"openvino": ov.__version__, **tilescope_versions()}, config=asdict(cfg))
    sha = write_artifact(cfg.out, ir_bytes(wrapped, IRKind.FP32), manifest, cfg.s3_endpoint)
    return ImportSummary(cfg.out, sha, "model", name, mapping.labels, size, (), 0.0)


def _beside(uri: str, relative: str, cfg: ImportConfig):
    """A file in the folder of the model at `uri`, as a Location; a symbolic link that leads out of that folder is
    refused, naming it (an IR's .bin or an ONNX model's external data must be the model's own files)."""
    folder = uri.rsplit("/", 1)[0] if "/" in uri else "."
    loc = resolve(f"{folder}/{relative}", cfg.s3_endpoint)
    if not loc.is_s3 and os.path.lexists(loc.path):
        real_folder, real = os.path.realpath(folder), os.path.realpath(loc.path)
        if os.path.commonpath([real_folder, real]) != real_folder:
            raise ValueError(f"{loc.uri}: a symbolic link to {real}, outside the model's folder {folder}; copy the "
                             "file beside the model instead")
    return loc


def main(argv: list[str] | None = None) -> int:
    return job_main(ImportConfig, run, "tilescope import", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
