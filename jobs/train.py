"""Train one whole-image model on an archive's train split (the 1x1 case of the tile grid).

Class-weighted BCE, validation split by patient out of train_val_list.txt, per-label AUROC every epoch,
and a final AUROC on test_list.txt. Writes a checkpoint artifact (model.pt + manifest) that
`tilescope quantize` turns into OpenVINO FP32/INT8.

    tilescope train --archive runs/synth --out runs/ckpt --backbone dwsep_cnn --input-size 128
    ray job submit --working-dir . -- python -m jobs.train --archive s3://bucket/nih --out s3://bucket/ckpt
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cli.flags import coerce_choices, require_valid
from cli.job_main import job_main
from cli.progress import BatchLine
from cli.provenance import tilescope_versions
from storage.artifacts import require_new, write_artifact
from storage.fs import resolve
from storage.image_sets import load_image_set
from storage.metadata_files import default_metadata_uri, load_metadata
from xray.evaluation.metrics import mean_auroc, per_label_auroc
from xray.metadata.labels import LABELS
from xray.metadata.manifests import CheckpointManifest, SplitRecord
from xray.metadata.splits import labels_for, split_by_patient
from xray.models.settings import BACKBONE_NAMES, TrainingSettings

if TYPE_CHECKING:
    from xray.models.training import EpochResult

FLAG_ALIASES = {"model": "backbone", "precision": "train_precision"}
"""Old flag spellings (old name -> field), accepted with a warning for one release: --model now names only an
artifact (score), and --precision only which IR runs (score)."""


@dataclass(frozen=True)
class TrainConfig(TrainingSettings):
    archive: str
    """Archive URI: directory or s3:// prefix of tar.gz shards or PNGs."""
    out: str
    """Checkpoint artifact URI to create (local path or s3://); must not exist yet."""
    metadata: str | None = None
    """Data_Entry_2017.csv URI; default: beside the shards. Split lists are read from beside it."""
    backbone: str = field(default="densenet121", metadata={"choices": BACKBONE_NAMES})
    """Architecture from the registry: densenet121 (CheXNet), resnet18, mobilenet_v3_small, dwsep_cnn, or vgg16
    (VGG-16)."""
    input_size: int = 224
    """Square model input in pixels."""
    threads: int = 0
    """torch threads; 0 = all cores of this process."""
    init_weights: str | None = None
    """Optional state_dict file (local or s3://) to start from, loaded with weights_only=True."""
    imagenet_backbone: bool = False
    """Start from ImageNet weights found in torchvision's local cache (never downloaded)."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto (e.g. http://127.0.0.1:9000); default from the environment."""


@dataclass(frozen=True)
class TrainSummary:
    out: str
    sha256: str
    math_path: str
    history: tuple[EpochResult, ...]
    test_auroc: tuple[float, ...]
    test_mean_auroc: float
    n_train: int
    n_val: int
    n_test: int
    seconds: float


def validate(cfg: TrainConfig) -> None:
    problems = cfg.training_problems(cfg.backbone)
    if cfg.input_size < 32:
        problems.append(f"--input-size {cfg.input_size} is below 32 pixels")
    problems += coerce_choices(cfg)
    require_valid(problems)


def run(cfg: TrainConfig) -> TrainSummary:
    # torch and the model code load here, after parsing: --help, flag errors and submit's check of these flags
    # need neither (nor the [train] extra).
    import torch

    from xray.models.precision import choose_math_path
    from xray.models.registry import ModelSpec, build_model, load_state
    from xray.models.training import fit, predict_probs

    validate(cfg)
    t0 = time.perf_counter()
    require_new(cfg.out, cfg.s3_endpoint, "a checkpoint")
    meta = load_metadata(cfg.metadata or default_metadata_uri(cfg.archive), cfg.s3_endpoint)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = choose_math_path(cfg.train_precision)
    spec = ModelSpec(cfg.backbone, LABELS, cfg.input_size)
    # The fresh weights come from torch's global generator: seeded here, or every run starts elsewhere (fit seeds
    # each epoch, not the initialisation). Same archive, seed and threads -> the same checkpoint bytes.
    torch.manual_seed(cfg.seed)
    model = build_model(spec, imagenet_backbone=cfg.imagenet_backbone)
    if cfg.init_weights:
        from storage.fs import read_bytes

        load_state(model, read_bytes(resolve(cfg.init_weights, cfg.s3_endpoint)), cfg.init_weights)

    split = split_by_patient(meta, cfg.val_fraction, cfg.seed)
    images = load_image_set(cfg.archive, split.all, cfg.input_size, cfg.s3_endpoint)
    index = {i: k for k, i in enumerate(images.ids)}

    def subset(ids: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
        chosen = tuple(i for i in images.ids if i in ids)
        return images.pixels[[index[i] for i in chosen]], labels_for(chosen, meta)

    train, val, test = subset(split.train), subset(split.val), subset(split.test)
    if len(train[0]) < 2:
        raise ValueError(f"--archive {cfg.archive}: only {len(train[0])} decodable training images found")
    print(f"train: {len(train[0])} images, val: {len(val[0])}, test: {len(test[0])}, "
          f"skipped {len(images.errors)} unreadable; math path: {path.describe()}", flush=True)

    def report(r: EpochResult, *_: object) -> None:
        print(f"epoch {r.epoch + 1}/{cfg.epochs} loss {r.loss:.4f} val mean AUROC {r.val_mean_auroc:.4f} "
              f"{r.images_per_s:.1f} img/s", flush=True)

    batches = BatchLine("train", cfg.epochs)

    def on_batch(epoch: int, done: int, total: int) -> None:
        if done <= cfg.batch_size:
            batches.start_epoch(epoch)
        batches.update(done, total)

    history = fit(model, train, val, cfg.epochs, cfg.batch_size, cfg.lr, path, cfg.seed, on_epoch=report,
                  on_batch=on_batch)
    test_auroc = per_label_auroc(test[1], predict_probs(model, test[0], cfg.batch_size, path))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    manifest = CheckpointManifest(
        model=spec, split=SplitRecord(cfg.val_fraction, cfg.seed, len(train[0]), len(val[0]), len(test[0])),
        config=asdict(cfg), math_path=path.describe(), history=tuple(asdict(r) for r in history),
        test_auroc=tuple(test_auroc), test_mean_auroc=mean_auroc(test_auroc),
        versions={"torch": torch.__version__, **tilescope_versions()},
    )
    sha = write_artifact(cfg.out, {"model.pt": buf.getvalue()}, json.loads(json.dumps(manifest.to_json())),
                         cfg.s3_endpoint)
    summary = TrainSummary(cfg.out, sha, path.describe(), tuple(history), tuple(test_auroc),
                           mean_auroc(test_auroc), len(train[0]), len(val[0]), len(test[0]),
                           time.perf_counter() - t0)
    print(f"checkpoint {cfg.out} (sha256 {sha[:12]}), test mean AUROC {summary.test_mean_auroc:.4f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    return job_main(TrainConfig, run, "tilescope train", __doc__, argv, aliases=FLAG_ALIASES)


if __name__ == "__main__":
    raise SystemExit(main())
