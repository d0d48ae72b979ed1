"""The training step shared by the whole-image trainer and the per-position tile trainers.

Data contract: images are (N, 1, S, S) uint8 pixels (the models normalise inside), labels are (N, L)
float32 multi-hot. Loss: class-weighted BCE (pos_weight = negatives / positives per label).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xray.evaluation.metrics import mean_auroc, per_label_auroc
from xray.models.precision import MathPath, Precision


@dataclass(frozen=True)
class EpochResult:
    """One epoch: mean training loss, validation AUROC per label and its mean, and throughput."""

    epoch: int
    loss: float
    val_auroc: tuple[float, ...]
    val_mean_auroc: float
    images_per_s: float
    seconds: float


def positive_weights(labels: np.ndarray, cap: float = 50.0) -> torch.Tensor:
    """(N, L) multi-hot -> (L,) negatives/positives, capped; labels with no positives get weight 1."""
    pos = labels.sum(axis=0)
    neg = labels.shape[0] - pos
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(w, 1.0, cap), dtype=torch.float32)


def prepare_model(model: nn.Module, path: MathPath) -> nn.Module:
    if path.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _as_input(batch: np.ndarray, path: MathPath) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(batch)).float()
    if path.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(path: MathPath) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=path.precision == Precision.BF16)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    path: MathPath,
    rng: np.random.Generator,
    on_batch: Callable[[int, int], None] | None = None,
) -> float:
    """One pass over (images, labels) in a seeded random order; returns the mean loss. on_batch(images done,
    images in the epoch) after each step (progress lines)."""
    model.train()
    order = rng.permutation(images.shape[0])
    total, seen = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = np.sort(order[start : start + batch_size])
        if len(idx) < 2:  # BatchNorm cannot train on a batch of one
            continue
        x = _as_input(images[idx], path)
        y = torch.from_numpy(labels[idx])
        with _autocast(path):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        if on_batch is not None:
            on_batch(start + len(idx), len(order))
    return total / max(seen, 1)


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, batch_size: int, path: MathPath) -> np.ndarray:
    """(N, 1, S, S) uint8 -> (N, L) float32 probabilities."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        with _autocast(path):
            logits = model(_as_input(images[start : start + batch_size], path))
        out.append(torch.sigmoid(logits.float()).numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    epochs: int,
    batch_size: int,
    lr: float,
    path: MathPath,
    seed: int,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    on_epoch: Callable[[EpochResult, nn.Module, torch.optim.Optimizer], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> list[EpochResult]:
    """Train for epochs [start_epoch, epochs), validating after each; on_epoch may checkpoint; on_batch(epoch,
    images done, images in the epoch) after each step.

    Resuming: pass the epoch to start at and the optimizer state saved with the weights. Every epoch is
    seeded by (seed, epoch) alone (batch order and torch's generator), so training epochs one call at a
    time, resuming between them, gives the same weights as one call for all of them.
    """
    model = prepare_model(model, path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if path.ipex:
        # Only when intel-extension-for-pytorch imports and matches torch (xray.models.precision.ipex_version).
        import intel_extension_for_pytorch as ipex

        dtype = torch.bfloat16 if path.precision == Precision.BF16 else torch.float32
        model, optimizer = ipex.optimize(model, optimizer=optimizer, dtype=dtype)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=positive_weights(train[1]))
    history = []
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
        t0 = time.perf_counter()
        loss = train_epoch(model, optimizer, loss_fn, train[0], train[1], batch_size, path, rng,
                           None if on_batch is None else (lambda done, n, e=epoch: on_batch(e, done, n)))
        seconds = time.perf_counter() - t0
        probs = predict_probs(model, val[0], batch_size, path) if len(val[0]) else None
        aurocs = per_label_auroc(val[1], probs) if probs is not None else [math.nan] * train[1].shape[1]
        result = EpochResult(
            epoch=epoch,
            loss=loss,
            val_auroc=tuple(aurocs),
            val_mean_auroc=mean_auroc(aurocs),
            images_per_s=len(train[0]) / seconds if seconds > 0 else math.nan,
            seconds=seconds,
        )
        history.append(result)
        if on_epoch is not None:
            on_epoch(result, model, optimizer)
    return history
