"""The epoch-level schedule of tile positions over a pool of trainers (pure, no Ray)."""

from __future__ import annotations

import pytest

from xray.tiles.schedule import PositionSchedule, Step, Unit


def _simulate(n_positions: int, epochs: int, trainers: int) -> tuple[int, list[list[tuple[int, Step]]]]:
    """Every unit takes one tick; returns the ticks to finish and what each trainer ran."""
    s = PositionSchedule(n_positions, epochs)
    log: list[list[tuple[int, Step]]] = [[] for _ in range(trainers)]
    ticks = 0
    while not s.complete:
        units = [(t, s.next_for(t)) for t in range(trainers)]
        units = [(t, u) for t, u in units if u is not None]
        positions = [u.position for _, u in units]
        assert len(positions) == len(set(positions)), "a position ran in two trainers at once"
        for t, u in units:
            log[t].append((u.position, u.step))
            s.finished(u, None if u.step is Step.EXPORT else (u.epochs_done or 0) + 1)
        ticks += 1
    return ticks, log


@pytest.mark.parametrize("positions,epochs,trainers", [(9, 12, 2), (4, 8, 3), (9, 1, 2), (1, 5, 2), (16, 3, 5)])
def test_the_pool_finishes_within_a_tick_of_perfect_balance(positions, epochs, trainers):
    ticks, log = _simulate(positions, epochs, trainers)
    units = positions * (epochs + 1)  # every epoch and one export per position
    # Whole positions per trainer would need ceil(positions / trainers) * (epochs + 1) ticks (5 * 13 = 65 for
    # 9 positions on 2 trainers); epoch units need only ceil(units / trainers), bounded by one position's chain.
    assert ticks == max(-(-units // trainers), epochs + 1)
    assert sum(len(x) for x in log) == units
    for p in range(positions):
        steps = [step for t in log for q, step in t if q == p]
        assert steps.count(Step.EPOCH) == epochs and steps.count(Step.EXPORT) == 1


def test_epochs_of_a_position_run_in_order_and_export_comes_last():
    s = PositionSchedule(2, 3)
    seen: dict[int, list[int | None]] = {0: [], 1: []}
    while not s.complete:
        u = s.next_for(0)
        seen[u.position].append(u.epochs_done if u.step is Step.EPOCH else -1)
        s.finished(u, None if u.step is Step.EXPORT else (u.epochs_done or 0) + 1)
    assert seen == {0: [None, 1, 2, -1], 1: [None, 1, 2, -1]}


def test_a_trainer_keeps_its_positions_when_the_pool_moves_in_step():
    _, log = _simulate(8, 6, 2)
    for t in range(2):
        assert {p for p, _ in log[t]} == {p for p, _ in log[t][:4]}, "positions should stay with their trainer"


def test_busy_positions_are_not_handed_out_twice():
    s = PositionSchedule(2, 1)
    a, b = s.next_for(0), s.next_for(1)
    assert {a.position, b.position} == {0, 1}
    assert s.next_for(2) is None


def test_a_failed_unit_goes_back_and_resumes_from_the_checkpoint():
    s = PositionSchedule(1, 4)
    u = s.next_for(0)
    s.finished(u, 3)  # a rerun: the checkpoint already held 2 epochs, this call trained the third
    u = s.next_for(0)
    assert u == Unit(Step.EPOCH, 0, 3)
    s.failed(u)  # its trainer died: perhaps after writing epoch 4, perhaps before
    u = s.next_for(1)
    assert u == Unit(Step.EPOCH, 0, None)  # so the next trainer reads the checkpoint to find out
    s.finished(u, 4)
    assert s.next_for(1) == Unit(Step.EXPORT, 0, 4)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least one position and one epoch"):
        PositionSchedule(0, 3)
    s = PositionSchedule(1, 2)
    with pytest.raises(ValueError, match="without an epoch count"):
        s.finished(s.next_for(0))
