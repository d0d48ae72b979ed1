"""The console a person sees: a small score and a small train-tiles, run as `tilescope JOB` with output to a
pipe (as under `ray job logs`), print tilescope's own lines; at most 10% of the lines are anyone else's, none
carries a colour code, and the job's summary is the last line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import REPO

# Every line tilescope's score and train-tiles print on their own (jobs/score.py, jobs/score_stages.py,
# jobs/train_tiles.py, cli/progress.py). Anything else on the console is a third party's.
OURS = [re.compile(p) for p in (
    r"run \S+: \d+ shards \(\d+ already complete\), model ",
    r"\[score\] \d+(/\d+)? images ",
    r"\[score\] (starting Ray|joining the cluster)( \.\.\.|: done in \S+)$",
    r"\[score\] \d+ scorer actors start and compile the model",
    r"run \S+ complete: \d+ rows, ",
    r"grid \d+x\d+ of \d+px tiles ",
    r"decoded \d+ images once ",
    r"\d+ trainer actors x \S+ CPU for \d+ positions ",
    r"\[train-tiles\] (round \d+/\d+: |exported \d+/\d+ positions)",
    r"ensemble \S+ \(sha256 [0-9a-f]{12}\): test mean AUROC ",
)]


def console_of(*args: str, verbose: bool = False) -> list[str]:
    """The job's console, stdout and stderr interleaved as a terminal or `ray job logs` shows them."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "TILESCOPE_VERBOSE", "PYTHONWARNINGS")}
    proc = subprocess.run([sys.executable, "-m", "jobs", *args, *(["--verbose"] if verbose else [])], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout
    return [line for line in proc.stdout.splitlines() if line.strip()]


def not_ours(lines: list[str]) -> list[str]:
    return [line for line in lines if not any(p.match(line) for p in OURS)]


def assert_quiet(lines: list[str]) -> None:
    others = not_ours(lines)
    assert len(others) <= 0.10 * len(lines), "\n".join(["not tilescope's:", *others, "", "all:", *lines])
    assert not any("\x1b[" in line for line in lines), lines  # no colour codes into a pipe
    assert not any("[repeated" in line for line in lines), lines  # nothing for Ray's dedup to fold


def test_score_console_is_tilescopes_and_counts_listed_images_missing_from_the_archive(tiny_models, tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(tiny_models["archive"], archive)
    (archive / "images_002.tar.gz").unlink()  # Data_Entry_2017.csv still lists its 40 images
    lines = console_of("score", "--archive", str(archive), "--model", tiny_models["models"][0],
                       "--out", str(tmp_path / "scores"), "--chunk-size", "8", "--progress-every-s", "0.5")
    assert_quiet(lines)
    # The metadata beside the shards is read without --metadata: progress has a total, and the summary
    # (the last line) counts what the metadata lists but the archive lacks.
    assert re.fullmatch(r"run \S+ complete: 40 rows, 40 ok, 0 errors in \d+ files; 40 listed in the metadata but "
                        r"missing from the archive; 40 scored now in .*", lines[-1]), lines[-1]
    progress = [line for line in lines if line.startswith("[score] ") and " images " in line]
    assert progress and all(line.startswith("[score] ") and "/80 images" in line for line in progress), progress
    assert progress[-1].startswith("[score] 40/80 images (50.0%)")

    verbose = console_of("score", "--archive", str(archive), "--model", tiny_models["models"][0],
                         "--out", str(tmp_path / "verbose"), "--chunk-size", "8", verbose=True)
    shown = " ".join(not_ours(verbose))
    assert "Started a local Ray instance" in shown and "Starting execution of Dataset" in shown  # --verbose: all


def test_train_tiles_console_is_one_line_per_round_from_the_driver(tiny_models, tmp_path):
    epochs = 3
    lines = console_of("train-tiles", "--archive", tiny_models["archive"], "--out", str(tmp_path / "ens"),
                       "--image-size", "96", "--tile-size", "48", "--stride", "48", "--backbone", "dwsep_cnn",
                       "--epochs", str(epochs), "--batch-size", "16", "--calibration-size", "16",
                       "--train-precision", "fp32")
    assert_quiet(lines)
    rounds = [line for line in lines if line.startswith("[train-tiles] round ")]
    assert [line.split(":")[0] for line in rounds] == [f"[train-tiles] round {k}/{epochs}" for k in (1, 2, 3)]
    assert all(f"/{4 * epochs} epochs (" in line and " tiles/s on " in line and "val mean AUROC " in line
               and ", ETA " in line for line in rounds), rounds
    assert rounds[-1].startswith(f"[train-tiles] round {epochs}/{epochs}: {4 * epochs}/{4 * epochs} epochs (4/4 ")
    assert not any("pid=" in line for line in lines), lines  # no actor printed anything
    # The summary is the last line: nothing from an actor arrives after it.
    assert lines[-2] == "[train-tiles] exported 4/4 positions to FP32 + INT8 IR; joining"
    assert re.match(r"ensemble \S+ \(sha256 [0-9a-f]{12}\): test mean AUROC mean ", lines[-1]), lines[-1]
