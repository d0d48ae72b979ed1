"""Which tile position a free trainer takes next: the position models are trained an epoch at a time, so a
pool of A trainers shares P positions evenly whatever P is.

Giving each trainer whole positions wastes the last round: 9 positions on 2 trainers take 5 rounds, one
trainer idle in the last, so at best 1.8x the speed of one trainer. Handing out one epoch at a time,
fewest-epochs-first, keeps every position within an epoch of the others, and the pool finishes within one
epoch of P * E / A. Each epoch still depends on the one before (a position is never in two trainers at
once); the per-epoch checkpoint carries it from one trainer to the next. Ties go to the trainer that ran
the position's previous epoch, which still holds its weights in memory.

A unit of work is one epoch of one position, or, after the last epoch, its export. Pure: no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Step(Enum):
    EPOCH = "epoch"
    EXPORT = "export"


@dataclass(frozen=True)
class Unit:
    step: Step
    position: int
    epochs_done: int | None
    """Epochs done before this unit as far as the driver knows; None until a trainer has read the position's
    checkpoint (a rerun after a crash starts wherever the checkpoints are)."""


class PositionSchedule:
    """Epoch-level work queue over positions 0..n_positions-1, each trained for `epochs` then exported."""

    def __init__(self, n_positions: int, epochs: int) -> None:
        if n_positions < 1 or epochs < 1:
            raise ValueError(f"need at least one position and one epoch (got {n_positions}, {epochs})")
        self.epochs = epochs
        self.done: list[int | None] = [None] * n_positions
        self.exported: set[int] = set()
        self.busy: dict[int, int] = {}
        """position -> trainer running its unit now."""
        self.last_trainer: dict[int, int] = {}

    @property
    def complete(self) -> bool:
        return len(self.exported) == len(self.done)

    def next_for(self, trainer: int) -> Unit | None:
        """The unit `trainer` should run now (and mark busy), or None when every open position is busy."""
        open_ = [p for p in range(len(self.done)) if p not in self.busy and p not in self.exported]
        if not open_:
            return None
        position = min(open_, key=lambda p: (self.done[p] or 0, self.last_trainer.get(p) != trainer, p))
        self.busy[position] = trainer
        done = self.done[position]
        step = Step.EXPORT if done is not None and done >= self.epochs else Step.EPOCH
        return Unit(step, position, done)

    def finished(self, unit: Unit, epochs_done: int | None = None) -> None:
        """`unit` succeeded: an epoch unit reports the position's epochs done after it."""
        trainer = self.busy.pop(unit.position)
        self.last_trainer[unit.position] = trainer
        if unit.step is Step.EXPORT:
            self.exported.add(unit.position)
        else:
            if epochs_done is None:
                raise ValueError(f"epoch unit of position {unit.position} finished without an epoch count")
            self.done[unit.position] = epochs_done

    def failed(self, unit: Unit) -> None:
        """`unit`'s trainer died: the unit goes back to the queue (the checkpoint decides where it resumes)."""
        self.busy.pop(unit.position)
        self.last_trainer.pop(unit.position, None)
        self.done[unit.position] = None
