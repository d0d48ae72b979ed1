"""Trains, exports and quantizes tile-position models: a plain class that jobs/train_tiles.py runs as a
pool of Ray actors (one per CPU slot, restarted on failure), each taking one epoch of one position at a
time from xray.tiles.schedule, then the position's export.

Inputs are small and picklable: a PositionPlan, the LabelledSplit (image ids per split + labels) and the decoded
shards (DecodedShard, passed as top-level object refs so every actor on a node reads the same shared
memory: each image is decoded once per job, never once per position). The actor cuts the position's tiles
out of them for each call (a copy of one tile per image: milliseconds beside an epoch).

Checkpoint: after every epoch the weights, optimizer state and history go to
`<work>/p<position:03d>/checkpoint.pt` (atomic write, deterministic key). It carries a position from one
actor to the next, and lets a restarted actor (same node, or another after a node is lost) or a rerun
resume; a position already trained is not trained again. Each actor also keeps the last checkpoints it
wrote in memory, so the next epoch of a position it just trained skips the read. The weights do not depend
on which actor trains which epoch: epoch e is seeded by (seed, position, e) alone.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import torch

from actors.openvino_ir import export_fp32, infer_probs, ir_bytes, openvino_threads, quantize_int8
from storage.fs import exists, read_bytes, resolve, write_bytes_atomic
from storage.image_sets import DecodedShard
from xray.metadata.manifests import IRKind, position_dir
from xray.metadata.splits import LabelledSplit
from xray.models.precision import choose_math_path
from xray.models.registry import ModelSpec, build_model
from xray.models.training import EpochResult, fit
from xray.tiles.grid import TileGrid, tile_at


@dataclass(frozen=True)
class PositionPlan:
    """Everything needed to train one position besides data and the actor's CPUs."""

    position: int
    grid: TileGrid
    backbone: str
    labels: tuple[str, ...]
    epochs: int
    batch_size: int
    lr: float
    seed: int
    calibration_size: int
    preset: str
    work_uri: str
    endpoint: str | None = None

    @property
    def tag(self) -> str:
        return f"p{self.position:03d}"

    @property
    def train_seed(self) -> int:
        return self.seed * 1000 + self.position


@dataclass(frozen=True)
class EpochReport:
    """What one train_epoch call did to a position."""

    position: int
    epochs_before: int
    """Epochs in the position's checkpoint when the call started."""
    epochs_done: int
    node_id: str
    trained: dict | None
    """The epoch's history record (EpochResult as a dict), or None if the position was already trained."""


@dataclass(frozen=True)
class PositionResult:
    position: int
    history: tuple[dict, ...]
    resumed_from_epoch: int
    nodes: tuple[str, ...]
    """Nodes that trained this run's epochs of the position, in order of first use."""
    math_path: str
    tiles_per_s: float


@dataclass(frozen=True)
class PositionExport:
    """The position's FP32 and INT8 IR files, its training history and its probabilities on validation and
    test tiles (N, L)."""

    position: int
    files: dict[str, bytes]
    history: tuple[dict, ...]
    math_path: str
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
    """A trainer slot: trains any position one epoch per call (checkpointing it), then exports it + INT8."""

    def __init__(self, threads: int, precision: str = "auto", keep_positions: int = 2) -> None:
        # Ray sets OMP_NUM_THREADS, but torch's intra-op pool must match the actor's CPUs explicitly.
        self.threads = max(1, threads)
        torch.set_num_threads(self.threads)
        self.path = choose_math_path(precision)
        self.keep_positions = max(0, keep_positions)
        self._recent: OrderedDict[int, dict] = OrderedDict()
        """position -> the checkpoint this actor last wrote for it (weights, optimizer, history)."""

    def node(self) -> str:
        """The node this actor runs on; also the driver's ping after a restart."""
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"

    def _checkpoint_uri(self, plan: PositionPlan):
        return resolve(plan.work_uri, plan.endpoint).join(plan.tag, "checkpoint.pt")

    def _state(self, plan: PositionPlan, epochs_done: int | None) -> dict | None:
        """The position's latest checkpoint: from memory when it holds the epoch the driver expects, else
        from the artifact store (None if the position has not started)."""
        recent = self._recent.get(plan.position)
        if recent is not None and epochs_done is not None and recent["epochs_done"] == epochs_done:
            return recent
        uri = self._checkpoint_uri(plan)
        if not exists(uri):
            if epochs_done:
                raise RuntimeError(f"[{plan.tag}] checkpoint {uri.uri} is missing but {epochs_done} epochs "
                                   f"were reported done; was the work directory removed mid-run?")
            return None
        try:
            state = torch.load(io.BytesIO(read_bytes(uri)), weights_only=True)
            int(state["epochs_done"]), state["model"], state["history"]  # the keys train_epoch and export use
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing: unusable
            raise ValueError(f"[{plan.tag}] checkpoint {uri.uri} is unreadable ({type(exc).__name__}); delete it "
                             "to train this position again from scratch, then rerun the same command") from None
        return state

    def _remember(self, position: int, state: dict) -> None:
        self._recent[position] = state
        self._recent.move_to_end(position)
        while len(self._recent) > self.keep_positions:
            self._recent.popitem(last=False)

    def train_epoch(self, plan: PositionPlan, epochs_done: int | None, split: LabelledSplit,
                    *shards: DecodedShard) -> EpochReport:
        """Train the position's next epoch from its checkpoint (none: fresh seeded weights) and checkpoint it.

        Idempotent: a position already at plan.epochs is left alone, so a retried call never overtrains.
        """
        state = self._state(plan, epochs_done)
        before = int(state["epochs_done"]) if state is not None else 0
        if before >= plan.epochs:
            return EpochReport(plan.position, before, before, self.node(), None)
        torch.manual_seed(plan.train_seed)
        model = build_model(ModelSpec(plan.backbone, plan.labels, plan.grid.tile_size))
        history: list[dict] = []
        if state is not None:
            model.load_state_dict(state["model"])
            history = list(state["history"])
        train = (position_tiles(shards, split.train, plan.grid, plan.position), split.train_labels)
        val = (position_tiles(shards, split.val, plan.grid, plan.position), split.val_labels)
        written: dict = {}

        def checkpoint(r: EpochResult, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
            history.append(asdict(r))
            written.update(model=net.state_dict(), optimizer=opt.state_dict(), epochs_done=r.epoch + 1,
                           history=list(history), math_path=self.path.describe())
            buf = io.BytesIO()
            torch.save(written, buf)
            write_bytes_atomic(self._checkpoint_uri(plan), buf.getvalue())
            # No print: the driver prints progress from the EpochReport this call returns (cli/progress.py).

        fit(model, train, val, before + 1, plan.batch_size, plan.lr, self.path, seed=plan.train_seed,
            start_epoch=before, optimizer_state=state["optimizer"] if state is not None else None,
            on_epoch=checkpoint)
        self._remember(plan.position, written)
        return EpochReport(plan.position, before, before + 1, self.node(), history[-1])

    def export(self, plan: PositionPlan, split: LabelledSplit, *shards: DecodedShard) -> PositionExport:
        """Trained checkpoint -> OpenVINO FP32 IR -> NNCF INT8 with a seeded calibration subset of train tiles."""
        state = self._state(plan, plan.epochs)
        if state is None or int(state["epochs_done"]) < plan.epochs:
            raise RuntimeError(f"[{plan.tag}] export before training finished ({self._checkpoint_uri(plan).uri})")
        model = build_model(ModelSpec(plan.backbone, plan.labels, plan.grid.tile_size))
        model.load_state_dict(state["model"])
        model.eval()
        rng = np.random.default_rng([plan.seed, plan.position])
        n_calib = min(plan.calibration_size, len(split.train))
        calib_ids = tuple(split.train[i] for i in sorted(rng.choice(len(split.train), n_calib, replace=False)))
        calibration = position_tiles(shards, calib_ids, plan.grid, plan.position)
        fp32 = export_fp32(model, plan.grid.tile_size)
        with openvino_threads(self.threads):
            int8 = quantize_int8(fp32, calibration, plan.preset)
        val = position_tiles(shards, split.val, plan.grid, plan.position)
        test = position_tiles(shards, split.test, plan.grid, plan.position)
        probs = {kind: (infer_probs(m, val, threads=self.threads), infer_probs(m, test, threads=self.threads))
                 for kind, m in ((IRKind.FP32, fp32), (IRKind.INT8, int8))}
        prefix = position_dir(plan.position)
        files = {**ir_bytes(fp32, f"{prefix}/{IRKind.FP32}"), **ir_bytes(int8, f"{prefix}/{IRKind.INT8}")}
        self._recent.pop(plan.position, None)
        return PositionExport(plan.position, files, tuple(state["history"]),
                              str(state.get("math_path", self.path.describe())), val_fp32=probs[IRKind.FP32][0],
                              val_int8=probs[IRKind.INT8][0], test_fp32=probs[IRKind.FP32][1],
                              test_int8=probs[IRKind.INT8][1])
