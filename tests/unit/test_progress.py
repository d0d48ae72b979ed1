"""cli/progress.py and score's ProgressLine: rates from a recent window, train-tiles' line per round."""

from __future__ import annotations

import io
import math

import pytest

from cli.progress import RecentRate, RoundProgress, format_duration
from jobs.score_stages import ProgressLine


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (41.6, "42s"), (59.4, "59s"), (185, "3m05s"),
                                               (3599, "59m59s"), (7620, "2h07m"), (math.inf, "?"), (-1, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_recent_rate_forgets_a_slow_start_after_its_window():
    rate = RecentRate(window_s=60)
    assert rate.rate(0.0) is None
    rate.add(10, now=100.0)  # the first chunk after 100 s of start-up opens the window
    assert rate.rate(110.0) is None  # one point: no rate yet
    rate.add(5, now=101.0)
    assert rate.rate(101.5) is None  # two chunks at once are a burst, not a rate
    rate.add(15, now=110.0)
    assert rate.rate(110.0) == pytest.approx(2.0)  # 20 units in 10 s; the start-up is not in it
    for k in range(1, 13):  # then 10 units every 10 s for two minutes
        rate.add(10, now=110.0 + 10 * k)
    assert rate.rate(230.0) == pytest.approx(1.0)
    assert rate.points[0][0] >= 230.0 - 70.0  # old points dropped, the window's base kept


def test_score_progress_rate_comes_from_the_recent_window_not_the_start():
    clock = Clock(0.0)
    out = io.StringIO()
    line = ProgressLine(total=1000, every_s=30.0, stream=out, clock=clock)
    clock.t = 120.0  # two minutes of actor start-up and compilation before the first chunk
    line.update(rows=64, errors=0)
    for _ in range(9):
        clock.t += 8.0  # then 8 images/s
        line.update(rows=64, errors=1)
    assert out.getvalue().splitlines() == [  # every 30 s, from the second chunk on
        "[score] 128/1000 images (12.8%)  8.0 images/s  errors 1  ETA 1m49s",
        "[score] 384/1000 images (38.4%)  8.0 images/s  errors 5  ETA 1m17s",
        "[score] 640/1000 images (64.0%)  8.0 images/s  errors 9  ETA 45s",
    ]
    # A rate from the start would have said 128 / 128 s = 1.0 images/s and an ETA of 14 minutes.
    clock.t += 2.0
    line.finish()
    assert out.getvalue().splitlines()[-1] == "[score] 640/1000 images (64.0%)  3.3 images/s  errors 9  in 3m14s"
    assert len(out.getvalue().splitlines()) == 4


def test_score_progress_before_a_second_chunk_uses_the_whole_stream():
    clock = Clock(0.0)
    line = ProgressLine(total=100, every_s=1e9, stream=io.StringIO(), clock=clock)
    clock.t = 10.0
    line.update(rows=20, errors=0)
    assert line.render(10.0) == "[score] 20/100 images (20.0%)  2.0 images/s  errors 0  ETA 40s"
    fresh = ProgressLine(None, 1e9, io.StringIO(), clock)
    assert fresh.render(10.0) == "[score] 0 images  ? images/s  errors 0  ETA ?"
    assert fresh.render(12.0) == "[score] 0 images  0.0 images/s  errors 0  ETA ?"


def _epoch(auroc: float, tiles_per_s: float, seconds: float) -> dict:
    return {"epoch": 0, "loss": 0.5, "val_auroc": [], "val_mean_auroc": auroc, "images_per_s": tiles_per_s,
            "seconds": seconds}


def test_round_progress_prints_one_line_per_round_then_one_for_the_exports():
    clock = Clock(0.0)
    out = io.StringIO()
    progress = RoundProgress(n_positions=2, epochs=2, n_trainers=2, stream=out, clock=clock)
    progress.unit_started(0)
    progress.unit_started(1)
    clock.t = 10.0
    progress.epoch_finished(0, 1, _epoch(0.6, 100.0, 8.0))
    assert out.getvalue() == ""  # position 1 has no epoch yet: the round is not over
    progress.unit_started(0)
    clock.t = 12.0
    progress.epoch_finished(1, 1, _epoch(0.7, 50.0, 10.0))
    progress.unit_started(1)
    clock.t = 20.0
    progress.epoch_finished(0, 2, _epoch(0.8, 100.0, 8.0))
    progress.unit_started(0)  # its export
    clock.t = 23.0
    progress.epoch_finished(1, 2, _epoch(0.5, 100.0, 10.0))
    progress.unit_started(1)
    clock.t = 30.0
    progress.export_finished(0)
    clock.t = 33.0
    progress.export_finished(1)
    assert out.getvalue().splitlines() == [
        # (800 + 500) tiles in 18 s of training = 72.2 per actor; epochs of 10 and 12 s: 4 units left / 2 actors
        "[train-tiles] round 1/2: 2/4 epochs (0/2 positions trained), 144 tiles/s on 2 actors, "
        "val mean AUROC 0.60-0.70, ETA 22s",
        # epochs of 10, 12, 10, 11 s: two exports left, at the epochs' mean until an export has been timed
        "[train-tiles] round 2/2: 4/4 epochs (2/2 positions trained), 200 tiles/s on 2 actors, "
        "val mean AUROC 0.50-0.80, ETA 11s",
        "[train-tiles] exported 2/2 positions to FP32 + INT8 IR; joining",
    ]


def test_round_progress_verbose_lines_a_lost_unit_and_a_resumed_position():
    clock = Clock(0.0)
    out = io.StringIO()
    progress = RoundProgress(n_positions=1, epochs=3, n_trainers=1, stream=out, verbose=True, clock=clock)
    progress.unit_started(0)
    clock.t = 50.0
    progress.unit_lost(0)  # the actor died: its time is not an epoch's
    progress.unit_started(0)
    clock.t = 52.0
    progress.epoch_finished(0, 2, None)  # a rerun: the checkpoint already held two epochs
    progress.unit_started(0)
    clock.t = 60.0
    progress.epoch_finished(0, 3, {**_epoch(0.75, 300.0, 7.5), "loss": 0.4321})
    assert out.getvalue().splitlines() == [
        "[train-tiles] round 2/3: 2/3 epochs (0/1 positions trained), ETA ?",
        "[p000] epoch 3/3 loss 0.4321 val mean AUROC 0.7500 300.0 tiles/s",
        "[train-tiles] round 3/3: 3/3 epochs (1/1 positions trained), 300 tiles/s on 1 actor, "
        "val mean AUROC 0.75-0.75, ETA 8s",
    ]


def test_a_stage_says_when_it_starts_and_how_long_it_took():
    import io

    from cli.progress import stage

    out, times = io.StringIO(), iter([10.0, 25.0])
    with stage("quantize", "NNCF INT8 calibration on 300 images", stream=out, clock=lambda: next(times)):
        pass
    assert out.getvalue().splitlines() == ["[quantize] NNCF INT8 calibration on 300 images ...",
                                           "[quantize] NNCF INT8 calibration on 300 images: done in 15s"]


def test_batch_lines_within_an_epoch_are_throttled_and_carry_rate_and_eta():
    import io

    from cli.progress import BatchLine

    now = [0.0]
    out = io.StringIO()
    line = BatchLine("train", epochs=5, every_s=10.0, stream=out, clock=lambda: now[0])
    line.start_epoch(1)
    for done, t in ((32, 2.0), (64, 4.0), (320, 10.0), (352, 11.0), (640, 20.0), (1000, 31.0)):
        now[0] = t
        line.update(done, 1000)
    lines = out.getvalue().splitlines()
    assert lines == ["[train] epoch 2/5: 320/1000 images (32%), 32.0 images/s, epoch ETA 21s",
                     "[train] epoch 2/5: 640/1000 images (64%), 32.0 images/s, epoch ETA 11s"]  # none at the end


def test_count_lines_are_throttled_and_name_the_pass_when_the_items_are_read_again():
    import io

    from cli.progress import CountLine

    now = [0.0]
    out = io.StringIO()
    line = CountLine("quantize", "NNCF INT8 calibration", total=100, every_s=10.0, stream=out, clock=lambda: now[0],
                     then="now full bias correction")
    for i in range(1, 201):  # two passes over 100 images, 1 image per 0.25 s
        now[0] = i * 0.25
        line.tick()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[quantize] NNCF INT8 calibration: 40/100 images (40%), 4.0 images/s, ETA 15s"
    assert lines[1] == "[quantize] NNCF INT8 calibration: 80/100 images (80%), 4.0 images/s, ETA 5s"
    assert lines[2] == "[quantize] NNCF INT8 calibration: 100/100 images read; now full bias correction"  # once
    # t = 30 s; the second pass started its own clock at its first image (t = 25.25 s).
    assert lines[3] == "[quantize] NNCF INT8 calibration, pass 2: 20/100 images (20%), 4.2 images/s, ETA 19s"
    assert len(lines) == 5  # no count line at the end of a pass


def test_count_lines_count_a_batch_as_its_images():
    import io

    from cli.progress import CountLine

    now = [0.0]
    out = io.StringIO()
    line = CountLine("quantize", "FP32 evaluation", total=64, every_s=5.0, stream=out, clock=lambda: now[0])
    for t in (2.0, 6.0, 9.0, 12.0):
        now[0] = t
        line.tick(16)
    assert out.getvalue().splitlines() == ["[quantize] FP32 evaluation: 32/64 images (50%), 5.3 images/s, ETA 6s"]
