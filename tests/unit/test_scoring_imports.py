"""Scoring and reporting run on nodes that need no training stack: importing them loads no torch or nncf."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_score_report_and_the_scorer_actors_import_no_torch_torchvision_or_nncf():
    code = ("import sys, jobs.score, jobs.report, actors.scorer, actors.ensemble_scorer, storage.artifacts; "
            "print(sorted(m for m in ('torch', 'torchvision', 'nncf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
