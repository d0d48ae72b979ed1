"""Trains, exports and quantizes the model of one tile position: a plain class that jobs/train_tiles.py
runs as a Ray actor (one per position, restarted on failure).

Inputs are small and picklable: a PositionPlan, the Split (image ids per split + labels) and the decoded
shards (DecodedShard, passed as top-level object refs so every actor on a node reads the same shared
memory: each image is decoded once per job, never once per position). The actor cuts its own position's
tiles out of them.

Checkpoint: after every epoch the weights, optimizer state and history go to
`<work>/p<position:03d>/checkpoint.pt` (atomic write, deterministic key). A restarted actor — same node
or another after a node is lost — resumes from it; a position already trained is not trained again.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from storage.fs import exists, read_bytes, resolve, write_bytes_atomic
from storage.image_sets import DecodedShard
from xray.models import ModelSpec, build_model
from xray.precision import choose_math_path
from xray.tiles import TileGrid, tile_at
from xray.training import EpochResult, fit


@dataclass(frozen=True)
class PositionPlan:
    """Everything one position's trainer needs besides data."""

    position: int
    grid: TileGrid
    backbone: str
    labels: tuple[str, ...]
    epochs: int
    batch_size: int
    lr: float
    seed: int
    precision: str
    threads: int
    calibration_size: int
    preset: str
    work_uri: str
    endpoint: str | None = None

    @property
    def tag(self) -> str:
        return f"p{self.position:03d}"


@dataclass(frozen=True)
class Split:
    """Image ids of each split and the multi-hot labels (N, L) in the same order."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    train_labels: np.ndarray
    val_labels: np.ndarray


@dataclass(frozen=True)
class PositionResult:
    position: int
    history: tuple[dict, ...]
    resumed_from_epoch: int
    node_id: str
    math_path: str
    tiles_per_s: float


@dataclass(frozen=True)
class PositionExport:
    """The position's FP32 and INT8 IR files and their probabilities on validation and test tiles (N, L)."""

    position: int
    files: dict[str, bytes]
    val_fp32: np.ndarray
    val_int8: np.ndarray
    test_fp32: np.ndarray
    test_int8: np.ndarray


def position_tiles(shards: tuple[DecodedShard, ...], ids: tuple[str, ...], grid: TileGrid,
                   position: int) -> np.ndarray:
    """Decoded shards -> (len(ids), 1, t, t) uint8 tiles of one position, in the order of ids."""
    where = {}
    for s, shard in enumerate(shards):
        for row, image_id in enumerate(shard.ids):
            where[image_id] = (s, row)
    missing = [i for i in ids if i not in where]
    if missing:
        raise ValueError(f"{len(missing)} images of the split were not decoded, e.g. {missing[:3]}")
    out = np.empty((len(ids), 1, grid.tile_size, grid.tile_size), dtype=np.uint8)
    by_shard: dict[int, list[tuple[int, int]]] = {}
    for k, image_id in enumerate(ids):
        s, row = where[image_id]
        by_shard.setdefault(s, []).append((k, row))
    for s, pairs in by_shard.items():
        ks, rows = (np.array(v) for v in zip(*pairs, strict=True))
        out[ks] = tile_at(shards[s].pixels[rows], grid, position)
    return out


class TileTrainer:
    """One tile position: fit (with per-epoch checkpoints and resume), then export + INT8."""

    def __init__(self, plan: PositionPlan) -> None:
        self.plan = plan
        # Ray sets OMP_NUM_THREADS, but torch's intra-op pool must match the actor's CPUs explicitly.
        torch.set_num_threads(max(1, plan.threads))
        self.path = choose_math_path(plan.precision)
        self.spec = ModelSpec(plan.backbone, plan.labels, plan.grid.tile_size)
        self.ckpt = resolve(plan.work_uri, plan.endpoint).join(plan.tag, "checkpoint.pt")

    def _load_checkpoint(self) -> dict | None:
        if not exists(self.ckpt):
            return None
        return torch.load(io.BytesIO(read_bytes(self.ckpt)), weights_only=True)

    def run(self, split: Split, *shards: DecodedShard) -> tuple[PositionResult, PositionExport]:
        """Train (or resume) then export. One call, so a restarted actor's retry redoes both in order."""
        return self.fit(split, *shards), self.export(split, *shards)

    def fit(self, split: Split, *shards: DecodedShard) -> PositionResult:
        import ray

        plan = self.plan
        torch.manual_seed(plan.seed * 1000 + plan.position)
        model = build_model(self.spec)
        state = self._load_checkpoint()
        start = 0
        history: list[dict] = []
        optimizer_state = None
        if state is not None:
            model.load_state_dict(state["model"])
            start, history, optimizer_state = int(state["epochs_done"]), list(state["history"]), state["optimizer"]
            print(f"[{plan.tag}] resuming from checkpoint after epoch {start}/{plan.epochs}", flush=True)
        if start < plan.epochs:
            train = (position_tiles(shards, split.train, plan.grid, plan.position), split.train_labels)
            val = (position_tiles(shards, split.val, plan.grid, plan.position), split.val_labels)

            def checkpoint(r: EpochResult, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
                history.append(asdict(r))
                buf = io.BytesIO()
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epochs_done": r.epoch + 1,
                            "history": history, "math_path": self.path.describe()}, buf)
                write_bytes_atomic(self.ckpt, buf.getvalue())
                print(f"[{plan.tag}] epoch {r.epoch + 1}/{plan.epochs} loss {r.loss:.4f} "
                      f"val mean AUROC {r.val_mean_auroc:.4f} {r.images_per_s:.1f} tiles/s", flush=True)

            fit(model, train, val, plan.epochs, plan.batch_size, plan.lr, self.path,
                seed=plan.seed * 1000 + plan.position, start_epoch=start, optimizer_state=optimizer_state,
                on_epoch=checkpoint)
        rates = [h["images_per_s"] for h in history[start:]]
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        return PositionResult(plan.position, tuple(history), start, node, self.path.describe(),
                              float(np.mean(rates)) if rates else 0.0)

    def export(self, split: Split, *shards: DecodedShard) -> PositionExport:
        """Trained checkpoint -> OpenVINO FP32 IR -> NNCF INT8 with a seeded calibration subset of train tiles."""
        import nncf

        from jobs.quantize import export_fp32, infer_probs, ir_bytes

        plan = self.plan
        state = self._load_checkpoint()
        if state is None or int(state["epochs_done"]) < plan.epochs:
            raise RuntimeError(f"[{plan.tag}] export before training finished ({self.ckpt.uri})")
        model = build_model(self.spec)
        model.load_state_dict(state["model"])
        model.eval()
        rng = np.random.default_rng([plan.seed, plan.position])
        n_calib = min(plan.calibration_size, len(split.train))
        calib_ids = tuple(split.train[i] for i in sorted(rng.choice(len(split.train), n_calib, replace=False)))
        calibration = position_tiles(shards, calib_ids, plan.grid, plan.position)
        fp32 = export_fp32(model, plan.grid.tile_size)
        int8 = nncf.quantize(fp32, nncf.Dataset(list(calibration), lambda x: x[None]),
                             preset=nncf.QuantizationPreset(plan.preset), subset_size=len(calibration))
        val = position_tiles(shards, split.val, plan.grid, plan.position)
        test = position_tiles(shards, split.test, plan.grid, plan.position)
        t0 = time.perf_counter()
        threads = max(1, plan.threads)
        probs = {name: (infer_probs(m, val, threads=threads), infer_probs(m, test, threads=threads))
                 for name, m in (("fp32", fp32), ("int8", int8))}
        print(f"[{plan.tag}] exported FP32 + INT8 ({n_calib} calibration tiles); "
              f"evaluated in {time.perf_counter() - t0:.1f}s", flush=True)
        prefix = f"positions/{plan.tag}"
        files = {**ir_bytes(fp32, f"{prefix}/fp32"), **ir_bytes(int8, f"{prefix}/int8")}
        return PositionExport(plan.position, files, val_fp32=probs["fp32"][0], val_int8=probs["int8"][0],
                              test_fp32=probs["fp32"][1], test_int8=probs["int8"][1])
