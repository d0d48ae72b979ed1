"""Several models in one pass (`tilescope score --model A --model B`): each model's run directory holds exactly what
a single-model run writes (rows, probabilities byte for byte, manifest), and each resumes and commits on its own."""

from __future__ import annotations

import json
import os

import pyarrow.dataset as pads
import pytest
import yaml

from jobs import score
from tests.integration.run_manifests import assert_cost, read_cost
from xray.metadata.labels import LABELS, prob_column

COLUMNS = ["image_id", "status", "error", "model", "artifact_sha256", "precision", *map(prob_column, LABELS)]


def _rows(results_uri: str) -> list[dict]:
    table = pads.dataset(results_uri, format="parquet").to_table(columns=COLUMNS)
    return sorted(table.to_pylist(), key=lambda r: r["image_id"])


def _config(archive: str, model, out: str) -> score.ScoreConfig:
    return score.ScoreConfig(archive=archive, model=model, out=out, chunk_size=8, progress_every_s=1.0)


def _manifest(results_uri: str) -> dict:
    with open(os.path.join(results_uri, "_manifest.json")) as f:
        return json.load(f)


def test_one_pass_writes_what_single_runs_write_for_each_model(local_ray, tiny_models, tmp_path, capsys):
    archive, (a, b) = tiny_models["archive"], tiny_models["models"]
    single_a = score.run(_config(archive, a, str(tmp_path / "single")))
    single_b = score.run(_config(archive, b, str(tmp_path / "single")))
    capsys.readouterr()
    both = score.run(_config(archive, (a, b), str(tmp_path / "pass")))
    assert [m.results_uri for m in both.models] == [
        str(tmp_path / "pass" / os.path.basename(s.results_uri)) for s in (single_a, single_b)]
    out = capsys.readouterr().out
    assert "compile 2 models" in out and out.count(" complete: 80 rows") == 2
    for single, passed in zip((single_a, single_b), both.models, strict=True):
        assert passed.rows == passed.scored_now == 80 and not passed.already_complete
        # The same rows, and the same probabilities to the bit: the same scorer, settings and batches.
        assert _rows(passed.results_uri) == _rows(single.results_uri)
        one, many = _manifest(single.results_uri), _manifest(passed.results_uri)
        assert many["run_id"] == one["run_id"] and many["config"]["model"] == one["config"]["model"]
        assert many["artifact_sha256"] == one["artifact_sha256"] and many["rows"] == one["rows"] == 80
        cost = read_cost(passed.results_uri)
        assert_cost(cost, positions=1, decode_size=64, model_input_size=64, images=80)
        assert cost["models_in_pass"] == 2 and cost["other_models_infer_core_ms_per_image"] > 0.0
    # Both models share the pass's read, decode and CPU total; each has its own inference.
    ca, cb = (read_cost(m.results_uri) for m in both.models)
    assert ca["all_core_ms_per_image"] == cb["all_core_ms_per_image"]
    assert ca["decode_core_ms_per_image"] == cb["decode_core_ms_per_image"]
    assert ca["other_models_infer_core_ms_per_image"] == pytest.approx(cb["infer_core_ms_per_image"])

    # Rerun: both committed runs are verified, nothing is scored again.
    again = score.run(_config(archive, (a, b), str(tmp_path / "pass")))
    assert [m.already_complete for m in again.models] == [True, True]
    assert [m.scored_now for m in again.models] == [0, 0]


def test_a_model_already_committed_is_left_alone_while_the_other_is_scored(local_ray, tiny_models, tmp_path):
    archive, (a, b) = tiny_models["archive"], tiny_models["models"]
    out = str(tmp_path / "scores")
    first = score.run(_config(archive, a, out))
    files = {name: os.path.getmtime(os.path.join(first.results_uri, name)) for name in os.listdir(first.results_uri)}
    both = score.run(_config(archive, (a, b), out))
    assert both.models[0].already_complete and both.models[0].scored_now == 0
    assert both.models[1].scored_now == 80 and both.models[1].rows == 80
    # Not one file of the committed run was rewritten.
    assert {name: os.path.getmtime(os.path.join(first.results_uri, name))
            for name in os.listdir(first.results_uri)} == files


def test_a_model_with_lost_rows_is_completed_in_the_pass_and_the_other_left_alone(local_ray, tiny_models,
                                                                                  tmp_path):
    archive, (a, b) = tiny_models["archive"], tiny_models["models"]
    out = str(tmp_path / "scores")
    both = score.run(_config(archive, (a, b), out))
    run_b = both.models[1].results_uri
    parts = sorted(p for p in os.listdir(run_b) if p.startswith("part-"))
    before = _rows(run_b)
    os.remove(os.path.join(run_b, parts[0]))  # rows lost after the commit
    again = score.run(_config(archive, (a, b), out))
    assert again.models[0].already_complete
    assert 0 < again.models[1].scored_now < 80 and again.models[1].rows == 80
    assert _rows(run_b) == before


def test_the_same_model_twice_is_refused_before_anything_runs(tiny_models, tmp_path):
    a = tiny_models["models"][0]
    with pytest.raises(ValueError, match="named more than once"):
        score.run(_config(tiny_models["archive"], (a, a), str(tmp_path / "scores")))
    assert not (tmp_path / "scores").exists()


def test_repeated_model_flags_on_the_command_line(tiny_models, tmp_path, capsys):
    a, b = tiny_models["models"]
    argv = ["--archive", tiny_models["archive"], "--model", a, "--model", b, "--out", str(tmp_path), "--print-config"]
    assert score.main(argv) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"] == [a, b]
