"""What a training job is configured with, importable without torch: the backbone names of the registry and the
training settings train and train-tiles share. A job's config (and so its --help, and submit's check of its
flags on a client without the [train] extra) needs nothing heavier.
"""

from __future__ import annotations

from dataclasses import dataclass

from xray.models.precision import Precision

BACKBONE_NAMES = ("densenet121", "resnet18", "mobilenet_v3_small", "dwsep_cnn", "vgg16")
"""The registry's backbones (xray/models/registry.py BACKBONES, which a test holds equal to this)."""


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The settings `train` and `train-tiles` share, declared and validated once: each job's config inherits them
    (keyword-only, so the job's own required fields still come first) and adds its own."""

    epochs: int = 5
    """Training epochs (per position, for train-tiles)."""
    batch_size: int = 32
    """Images (tiles, for train-tiles) per optimiser step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    val_fraction: float = 0.15
    """Share of train_val patients held out for validation (and, for train-tiles, to fit the join)."""
    train_precision: Precision = Precision.AUTO
    """Training math: auto (bf16 autocast on AMX CPUs, else fp32), bf16 or fp32. (Which IR scores is score's
    --precision.)"""
    seed: int = 0
    """Seed for the patient split, initialisation, shuffling (and train-tiles' calibration subsets)."""

    def training_problems(self, backbone: str) -> list[str]:
        """What is wrong with these settings and `backbone`, each naming its flag."""
        problems = []
        if backbone not in BACKBONE_NAMES:
            problems.append(f"--backbone {backbone!r} is unknown; choose one of: {', '.join(sorted(BACKBONE_NAMES))}")
        if self.epochs < 1:
            problems.append("--epochs must be at least 1")
        if self.batch_size < 2:
            problems.append("--batch-size must be at least 2 (BatchNorm)")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append("--val-fraction must be in (0, 1)")
        return problems
