"""Export a trained checkpoint to OpenVINO IR and quantize it to INT8 with NNCF post-training quantization.

Calibration uses a seeded subset of the archive's train_val images (default 300). With --max-drop, NNCF's
accuracy-control loop keeps layers in FP32 until the mean AUROC on a labelled validation subset drops by at
most that much. The result is an artifact directory with fp32/ and int8/ IR and a manifest (labels, input
contract, sha256 of every file, versions, calibration, FP32 vs INT8 metrics).

    tilescope quantize --checkpoint runs/ckpt --archive runs/synth --out runs/model
    ray job submit --working-dir . -- python -m jobs.quantize --checkpoint s3://b/ckpt --archive s3://b/nih \
        --out s3://b/model
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from jobs.cli import config_from_args, parser_for, require_valid
from jobs.train import labels_for, split_ids
from storage.artifacts import open_artifact, write_artifact
from storage.fs import check_reachable, exists, resolve
from storage.image_sets import load_image_set
from storage.metadata_files import default_metadata_uri, load_metadata
from xray.metrics import mean_auroc, per_label_auroc
from xray.models import ModelSpec, WithSigmoid, build_model, load_state

PRESETS = ("performance", "mixed")


@dataclass(frozen=True)
class QuantizeConfig:
    checkpoint: str
    """Checkpoint artifact written by `tilescope train` (local or s3://)."""
    archive: str
    """Archive to draw the calibration and evaluation images from."""
    out: str
    """Model artifact URI to create (fp32/ and int8/ IR + manifest.json); must not exist yet."""
    metadata: str | None = None
    """Data_Entry_2017.csv URI; default: beside the shards."""
    calibration_size: int = 300
    """Images in the seeded calibration subset (drawn from train_val)."""
    eval_size: int = 500
    """Labelled test-split images on which FP32 and INT8 AUROC are compared (0 = skip)."""
    preset: str = "performance"
    """NNCF preset: performance (symmetric) or mixed (asymmetric activations)."""
    ignored_names: tuple[str, ...] = ()
    """Layer names NNCF must leave in FP32."""
    ignored_types: tuple[str, ...] = ()
    """OpenVINO op types NNCF must leave in FP32 (e.g. Sigmoid)."""
    max_drop: float | None = None
    """Accuracy control: maximum absolute drop of mean AUROC allowed for INT8 (off when unset)."""
    seed: int = 0
    """Seed of the calibration subset."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto; default from the environment."""


@dataclass(frozen=True)
class QuantizeSummary:
    out: str
    sha256: str
    fp32_auroc: tuple[float, ...]
    int8_auroc: tuple[float, ...]
    fp32_mean_auroc: float
    int8_mean_auroc: float
    max_abs_prob_diff: float
    seconds: float


def validate(cfg: QuantizeConfig) -> None:
    problems = []
    if cfg.calibration_size < 1:
        problems.append("--calibration-size must be at least 1")
    if cfg.eval_size < 0:
        problems.append("--eval-size must be >= 0")
    if cfg.preset not in PRESETS:
        problems.append(f"--preset {cfg.preset!r} is not one of {', '.join(PRESETS)}")
    if cfg.max_drop is not None and not 0.0 <= cfg.max_drop < 1.0:
        problems.append("--max-drop must be in [0, 1)")
    if cfg.max_drop is not None and cfg.eval_size < 10:
        problems.append("--max-drop needs --eval-size of at least 10 labelled images")
    require_valid(problems)


def export_fp32(model: torch.nn.Module, input_size: int):  # -> openvino.Model
    """PyTorch classifier -> OpenVINO model with input u8 (N, 1, S, S) and output probabilities (N, L)."""
    import openvino as ov

    example = torch.zeros(1, 1, input_size, input_size, dtype=torch.uint8)
    ov_model = ov.convert_model(WithSigmoid(model).eval(), example_input=example,
                                input=[(ov.PartialShape([-1, 1, input_size, input_size]), ov.Type.u8)])
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


def infer_probs(ov_model, pixels: np.ndarray, batch: int = 16, threads: int | None = None) -> np.ndarray:
    """Synchronous inference for evaluation: (N, 1, S, S) uint8 -> (N, L) float32.

    threads: inside an actor, its CPUs (unpinned), so that it does not spread over cores other actors hold;
    None lets OpenVINO use the whole machine (a job run on its own).
    """
    import openvino as ov

    config = {} if threads is None else {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    out = [compiled(pixels[i : i + batch])[0] for i in range(0, len(pixels), batch)]
    return np.concatenate(out).astype(np.float32)


@contextmanager
def openvino_threads(threads: int | None):
    """Within the block, an OpenVINO CPU compile that sets no thread count (NNCF's calibration engine,
    nncf/openvino/engine.py, offers no way to) uses `threads` threads, unpinned, instead of every core, pinned.

    Why: in a Ray actor holding one CPU, NNCF's statistics pass otherwise runs one pinned thread per core of
    the machine; two actors quantizing at once pinned both their threads onto the same two cores and took
    1.8x as long as one alone (docs/BENCHMARKS.md, tile ensembles). A Ray actor runs one call at a time, so
    the patch, undone on exit, cannot leak into other work. None: leave OpenVINO's defaults.
    """
    import openvino as ov

    if threads is None:
        yield
        return
    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kw):
        if device_name in (None, "CPU") and "INFERENCE_NUM_THREADS" not in (config or {}):
            device_name = "CPU"
            config = {**(config or {}), "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
        return original(self, model, device_name, config, **kw)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def quantize_int8(ov_model, calibration: np.ndarray, cfg: QuantizeConfig, evaluation: tuple | None):
    import nncf

    calib = nncf.Dataset(list(calibration), lambda x: x[None])
    scope = nncf.IgnoredScope(names=list(cfg.ignored_names), types=list(cfg.ignored_types)) \
        if (cfg.ignored_names or cfg.ignored_types) else None
    preset = nncf.QuantizationPreset(cfg.preset)
    if cfg.max_drop is None:
        return nncf.quantize(ov_model, calib, preset=preset, subset_size=len(calibration), ignored_scope=scope)
    pixels, labels = evaluation

    def validation_fn(compiled, items) -> tuple[float, None]:
        probs = np.concatenate([compiled(x[None])[0] for x, _ in items])
        return mean_auroc(per_label_auroc(np.stack([y for _, y in items]), probs)), None

    val = nncf.Dataset(list(zip(pixels, labels, strict=True)))
    return nncf.quantize_with_accuracy_control(
        ov_model, calib, val, validation_fn, max_drop=cfg.max_drop, drop_type=nncf.DropType.ABSOLUTE,
        preset=preset, subset_size=len(calibration), ignored_scope=scope,
    )


def ir_bytes(ov_model, name: str) -> dict[str, bytes]:
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "model.xml")
        ov.save_model(ov_model, xml, compress_to_fp16=False)
        files = {}
        for ext in ("xml", "bin"):
            with open(os.path.join(tmp, f"model.{ext}"), "rb") as f:
                files[f"{name}/model.{ext}"] = f.read()
    return files


def run(cfg: QuantizeConfig) -> QuantizeSummary:
    import nncf
    import openvino as ov

    validate(cfg)
    t0 = time.perf_counter()
    out_loc = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out_loc)
    if exists(out_loc.join("manifest.json")):
        raise FileExistsError(f"--out {cfg.out}: an artifact already exists there; choose a new --out")
    ckpt = open_artifact(cfg.checkpoint, cfg.s3_endpoint)
    spec = ModelSpec(**{**ckpt.manifest["model"], "labels": tuple(ckpt.manifest["model"]["labels"])})
    model = build_model(spec)
    load_state(model, ckpt.read("model.pt"), cfg.checkpoint)
    model.eval()

    meta = load_metadata(cfg.metadata or default_metadata_uri(cfg.archive), cfg.s3_endpoint)
    train_ids, val_ids, test_ids = split_ids(meta, 0.15, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    pool = sorted(train_ids | val_ids)
    calib_ids = set(rng.choice(pool, size=min(cfg.calibration_size, len(pool)), replace=False).tolist())
    eval_pool = sorted(test_ids)
    eval_ids = set(rng.choice(eval_pool, size=min(cfg.eval_size, len(eval_pool)), replace=False).tolist()) \
        if cfg.eval_size else set()
    images = load_image_set(cfg.archive, calib_ids | eval_ids, spec.input_size, cfg.s3_endpoint)
    pick = {i: k for k, i in enumerate(images.ids)}
    calibration = images.pixels[[pick[i] for i in images.ids if i in calib_ids]]
    eval_order = tuple(i for i in images.ids if i in eval_ids)
    evaluation = (images.pixels[[pick[i] for i in eval_order]], labels_for(eval_order, meta))
    if len(calibration) == 0:
        raise ValueError(f"--archive {cfg.archive}: no decodable calibration images found")
    print(f"calibration: {len(calibration)} images, evaluation: {len(eval_order)}", flush=True)

    fp32 = export_fp32(model, spec.input_size)
    int8 = quantize_int8(fp32, calibration, cfg, evaluation)
    fp32_auroc: list[float] = []
    int8_auroc: list[float] = []
    max_diff = float("nan")
    if len(eval_order):
        p32, p8 = infer_probs(fp32, evaluation[0]), infer_probs(int8, evaluation[0])
        fp32_auroc, int8_auroc = per_label_auroc(evaluation[1], p32), per_label_auroc(evaluation[1], p8)
        max_diff = float(np.abs(p32 - p8).max())
    files = {**ir_bytes(fp32, "fp32"), **ir_bytes(int8, "int8")}
    manifest = {
        "kind": "model",
        "model": spec.name,
        "labels": list(spec.labels),
        "input": {"shape": [-1, 1, spec.input_size, spec.input_size], "dtype": "uint8",
                  "layout": "NCHW", "color": "grayscale",
                  "normalization": "inside the graph: x/255, ImageNet mean/std, grey replicated to 3 channels"},
        "output": {"name": "probabilities", "activation": "sigmoid"},
        "precisions": {"fp32": "fp32/model.xml", "int8": "int8/model.xml"},
        "checkpoint": {"uri": ckpt.uri, "sha256": ckpt.sha256},
        "calibration": {"archive": cfg.archive, "images": len(calibration), "seed": cfg.seed,
                        "split": "train_val", "preset": cfg.preset, "ignored_names": list(cfg.ignored_names),
                        "ignored_types": list(cfg.ignored_types), "max_drop": cfg.max_drop},
        "metrics": {"eval_images": len(eval_order), "fp32_auroc": fp32_auroc, "int8_auroc": int8_auroc,
                    "fp32_mean_auroc": mean_auroc(fp32_auroc), "int8_mean_auroc": mean_auroc(int8_auroc),
                    "max_abs_prob_diff": max_diff},
        "versions": {"torch": torch.__version__, "openvino": ov.__version__, "nncf": nncf.__version__},
        "config": asdict(cfg),
    }
    sha = write_artifact(cfg.out, files, manifest, cfg.s3_endpoint)
    summary = QuantizeSummary(cfg.out, sha, tuple(fp32_auroc), tuple(int8_auroc), mean_auroc(fp32_auroc),
                              mean_auroc(int8_auroc), max_diff, time.perf_counter() - t0)
    print(f"artifact {cfg.out} (sha256 {sha[:12]}): mean AUROC FP32 {summary.fp32_mean_auroc:.4f} "
          f"INT8 {summary.int8_mean_auroc:.4f}, max |p32 - p8| {max_diff:.4f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(QuantizeConfig, "tilescope quantize", __doc__.splitlines()[0])
    cfg = config_from_args(QuantizeConfig, parser.parse_args(argv))
    try:
        run(cfg)
    except (ValueError, OSError) as exc:
        print(f"tilescope quantize: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
