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

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from actors.openvino_ir import QuantizationPreset, export_fp32, infer_probs, ir_bytes, quantize_int8
from jobs.cli import coerce_choices, job_main, require_valid
from storage.artifacts import open_typed, write_artifact
from storage.fs import check_reachable, exists, resolve
from storage.image_sets import load_image_set
from storage.metadata_files import default_metadata_uri, load_metadata
from xray.manifests import ArtifactKind, ModelManifest
from xray.metrics import mean_auroc, per_label_auroc
from xray.models import build_model, load_state
from xray.splits import labels_for, split_by_patient


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
    preset: QuantizationPreset = QuantizationPreset.PERFORMANCE
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
    problems += coerce_choices(cfg)
    if cfg.max_drop is not None and not 0.0 <= cfg.max_drop < 1.0:
        problems.append("--max-drop must be in [0, 1)")
    if cfg.max_drop is not None and cfg.eval_size < 10:
        problems.append("--max-drop needs --eval-size of at least 10 labelled images")
    require_valid(problems)


def run(cfg: QuantizeConfig) -> QuantizeSummary:
    import nncf
    import openvino as ov

    validate(cfg)
    t0 = time.perf_counter()
    out_loc = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out_loc)
    if exists(out_loc.join("manifest.json")):
        raise FileExistsError(f"--out {cfg.out}: an artifact already exists there; choose a new --out")
    ckpt, trained = open_typed(cfg.checkpoint, cfg.s3_endpoint, "--checkpoint", ArtifactKind.CHECKPOINT)
    spec = trained.model
    model = build_model(spec)
    load_state(model, ckpt.read("model.pt"), cfg.checkpoint)
    model.eval()

    meta = load_metadata(cfg.metadata or default_metadata_uri(cfg.archive), cfg.s3_endpoint)
    # The checkpoint's own patient split: calibration from its train_val patients, evaluation on its test ones.
    split = split_by_patient(meta, trained.split.val_fraction, trained.split.seed)
    rng = np.random.default_rng(cfg.seed)
    pool = sorted(split.train | split.val)
    calib_ids = set(rng.choice(pool, size=min(cfg.calibration_size, len(pool)), replace=False).tolist())
    eval_pool = sorted(split.test)
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
    int8 = quantize_int8(fp32, calibration, cfg.preset, cfg.ignored_names, cfg.ignored_types, cfg.max_drop,
                         evaluation, metric=lambda y, p: mean_auroc(per_label_auroc(y, p)))
    fp32_auroc: list[float] = []
    int8_auroc: list[float] = []
    max_diff = float("nan")
    if len(eval_order):
        p32, p8 = infer_probs(fp32, evaluation[0]), infer_probs(int8, evaluation[0])
        fp32_auroc, int8_auroc = per_label_auroc(evaluation[1], p32), per_label_auroc(evaluation[1], p8)
        max_diff = float(np.abs(p32 - p8).max())
    files = {**ir_bytes(fp32, "fp32"), **ir_bytes(int8, "int8")}
    manifest = ModelManifest(
        model=spec.name, labels=spec.labels, input_size=spec.input_size,
        irs={"fp32": "fp32/model.xml", "int8": "int8/model.xml"}, split=trained.split,
        checkpoint={"uri": ckpt.uri, "sha256": ckpt.sha256},
        calibration={"archive": cfg.archive, "images": len(calibration), "seed": cfg.seed,
                     "split": "train_val", "preset": cfg.preset, "ignored_names": list(cfg.ignored_names),
                     "ignored_types": list(cfg.ignored_types), "max_drop": cfg.max_drop},
        metrics={"eval_images": len(eval_order), "fp32_auroc": fp32_auroc, "int8_auroc": int8_auroc,
                 "fp32_mean_auroc": mean_auroc(fp32_auroc), "int8_mean_auroc": mean_auroc(int8_auroc),
                 "max_abs_prob_diff": max_diff},
        versions={"torch": torch.__version__, "openvino": ov.__version__, "nncf": nncf.__version__},
        config=asdict(cfg),
    )
    sha = write_artifact(cfg.out, files, manifest, cfg.s3_endpoint)
    summary = QuantizeSummary(cfg.out, sha, tuple(fp32_auroc), tuple(int8_auroc), mean_auroc(fp32_auroc),
                              mean_auroc(int8_auroc), max_diff, time.perf_counter() - t0)
    print(f"artifact {cfg.out} (sha256 {sha[:12]}): mean AUROC FP32 {summary.fp32_mean_auroc:.4f} "
          f"INT8 {summary.int8_mean_auroc:.4f}, max |p32 - p8| {max_diff:.4f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    return job_main(QuantizeConfig, run, "tilescope quantize", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
