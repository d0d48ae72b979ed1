"""train -> quantize on a synthetic archive: artifacts, accuracy control, ignored scope, and bad input."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from cli.provenance import tilescope_versions
from jobs import quantize, train
from jobs.quantize_limits import AgreementNotReached
from storage.artifacts import open_artifact, open_typed, sha256_hex
from tests.conftest import REPO
from tests.integration.above_chance import fp32_probs, relabel
from xray.metadata.labels import LABELS
from xray.metadata.manifests import ArtifactKind
from xray.models.cpu_isa import this_cpu
from xray.models.registry import ModelSpec, build_model, load_state


def test_model_artifact_is_complete_and_verifiable(tiny_models):
    art = open_artifact(tiny_models["models"][0])
    m = art.manifest
    assert m["model"] == "dwsep_cnn" and m["labels"] == list(LABELS)
    assert m["input"]["shape"] == [-1, 1, 64, 64] and m["input"]["dtype"] == "uint8"
    assert set(m["files"]) == {"fp32/model.xml", "fp32/model.bin", "int8/model.xml", "int8/model.bin"}
    for rel, digest in m["files"].items():
        assert sha256_hex(art.read(rel)) == digest
    assert set(m["versions"]) - {"tilescope_commit"} == {"torch", "openvino", "nncf", "tilescope"}
    assert {k: v for k, v in m["versions"].items() if k.startswith("tilescope")} == tilescope_versions()
    assert m["calibration"]["images"] == 24 and m["calibration"]["seed"] == 0
    assert len(m["metrics"]["fp32_auroc"]) == len(LABELS) == len(m["metrics"]["int8_auroc"])
    # INT8 really is quantized: the IR holds FakeQuantize / int8 constants, FP32 does not.
    assert b"FakeQuantize" in art.read("int8/model.xml") or b'element_type="i8"' in art.read("int8/model.xml")
    assert b"FakeQuantize" not in art.read("fp32/model.xml")


def test_checkpoint_records_history_and_math_path(tiny_models, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    summary = train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, backbone="dwsep_cnn",
                                          input_size=48, epochs=2, batch_size=8, seed=4))
    art = open_artifact(ckpt)
    assert [h["epoch"] for h in art.manifest["history"]] == [0, 1]
    assert art.manifest["math_path"] == summary.math_path
    assert summary.math_path.split(",")[0] in ("fp32", "bf16")
    assert summary.n_train + summary.n_val + summary.n_test == 80
    state = torch.load(io.BytesIO(art.read("model.pt")), weights_only=True)
    head = [v for k, v in state.items() if k.endswith(".weight") and v.ndim == 2]
    assert head[-1].shape == (len(LABELS), 128)
    model = build_model(ModelSpec(name="dwsep_cnn", labels=LABELS, input_size=48))
    load_state(model, art.read("model.pt"), ckpt)  # the checkpoint fits a freshly built model
    with pytest.raises(FileExistsError):
        train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, backbone="dwsep_cnn", input_size=48))


def test_same_archive_seed_and_threads_train_the_same_weights(tiny_models, tmp_path):
    """The initialisation is seeded too (it was not: two runs of one command trained different models)."""

    def weights(seed: int, name: str) -> dict:
        # Another model built first moves torch's global generator: a seeded run must not depend on it.
        torch.randn(100)
        ckpt = str(tmp_path / name)
        train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, backbone="dwsep_cnn", input_size=32,
                                    epochs=1, batch_size=8, seed=seed, threads=1))
        return torch.load(io.BytesIO(open_artifact(ckpt).read("model.pt")), weights_only=True)

    a, b, c = weights(5, "a"), weights(5, "b"), weights(6, "c")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def above_chance(tiny_models, tmp_path_factory) -> dict:
    """A tiny checkpoint, and a relabelled copy of the archive's metadata on which its FP32 AUROC is 1.0
    (tests/integration/above_chance.py)."""
    root = tmp_path_factory.mktemp("above_chance")
    ckpt = str(root / "ckpt")
    # 4 epochs at a high learning rate: still a poor model, but its outputs differ between images by far more
    # than float differences between CPUs (after one epoch they are nearly constant).
    train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, backbone="dwsep_cnn", input_size=48,
                                epochs=4, batch_size=8, lr=3e-3))
    ids, probs = fp32_probs(ckpt, tiny_models["archive"])
    metadata, gaps = relabel(tiny_models["archive"], ids, probs, str(root / "relabelled"))
    assert (gaps > 1e-4).all()  # every cut sits in a real gap, far above float differences between CPUs
    return {"checkpoint": ckpt, "archive": tiny_models["archive"], "metadata": metadata}


def _quantize(case: dict, out: str, **kw) -> quantize.QuantizeSummary:
    kw.setdefault("allow_over_budget", True)
    if not {"ranges", "bias_correction", "recipe"} & set(kw):
        kw["recipe"] = "histogram-fast"
    return quantize.run(quantize.QuantizeConfig(checkpoint=case["checkpoint"], archive=case["archive"],
                                                metadata=case["metadata"], out=out, calibration_size=16,
                                                eval_size=16, **kw))


def test_accuracy_control_and_ignored_scope(above_chance, tmp_path):
    out = str(tmp_path / "model")
    summary = _quantize(above_chance, out, max_drop=0.01, max_prob_diff=0.05, ignored_types=("Sigmoid",))
    m = open_artifact(out).manifest
    assert m["calibration"]["max_drop"] == 0.01 and m["calibration"]["ignored_types"] == ["Sigmoid"]
    assert m["calibration"]["max_prob_diff"] == 0.05
    # FP32 ranks the relabelled evaluation images perfectly by construction, on any CPU.
    assert summary.fp32_mean_auroc == 1.0
    # What the job enforces, measured on the written artifact's own evaluation images.
    assert summary.int8_mean_auroc >= summary.fp32_mean_auroc - 0.01
    assert summary.p99_abs_prob_diff <= 0.05
    agreement = m["metrics"]["int8_vs_fp32"]
    assert agreement["auroc_drop"] <= 0.01 and agreement["abs_prob_diff"]["p99"] <= 0.05


def test_agreement_beyond_auroc_is_recorded(above_chance, tmp_path):
    out = str(tmp_path / "model")
    summary = _quantize(above_chance, out)
    m = open_artifact(out).manifest
    metrics = m["metrics"]
    int8 = metrics["int8_vs_fp32"]
    assert int8["images"] == metrics["eval_images"] == 16
    assert len(int8["auroc"]) == len(LABELS) == len(int8["fp32_youden_thresholds"]) == len(int8["flag_flip_share"])
    assert int8["auroc"] == metrics["int8_auroc"] and summary.fp32_mean_auroc == 1.0
    diff = int8["abs_prob_diff"]
    assert 0.0 <= diff["median"] <= diff["p99"] <= diff["max"] == metrics["max_abs_prob_diff"] < 1.0
    assert (diff["median"], diff["p99"], diff["max"]) == (summary.median_abs_prob_diff, summary.p99_abs_prob_diff,
                                                          summary.max_abs_prob_diff)
    # Flag flips: a share of the 16 images per label, NaN only for a label without both classes.
    for share, threshold in zip(int8["flag_flip_share"], int8["fp32_youden_thresholds"], strict=True):
        assert math.isnan(share) == math.isnan(threshold)
        assert math.isnan(share) or (0.0 <= share <= 1.0 and round(share * 16) == share * 16)
    assert m["calibration"]["ranges"] == "histogram" and m["calibration"]["preset"] == "performance"
    # What ran, read back from the compiled models: the FP32 IR in f32 and the INT8 IR in int8, everywhere.
    ran = metrics["ran"]
    assert (ran["fp32"]["precision"], ran["fp32"]["inference_precision_hint"]) == ("fp32", "f32")
    assert ran["int8"]["precision"] == "int8"
    assert ran["bf16"]["requested"] == "bf16" and ran["bf16"]["precision"] in ("bf16", "fp32")
    assert ran["bf16"]["precision"] == ("bf16" if any(k.endswith(":bf16") for k in ran["bf16"]["compute_layers"])
                                        else "fp32")
    assert {r["cpu_isa"] for r in ran.values()} == {this_cpu().isa.value}
    assert metrics["bf16_vs_fp32"]["abs_prob_diff"]["max"] < 0.05  # bf16, or exactly fp32 where it cannot run


def test_int8_that_misses_the_limits_is_refused_and_nothing_written(above_chance, tmp_path, monkeypatch):
    # NNCF's accuracy control normally reverts layers until the limit holds; here it is bypassed, so the job's own
    # measurement of the result is what must refuse it.
    real = quantize.quantize_int8
    monkeypatch.setattr(quantize, "quantize_int8", lambda *args, control=None, **kwargs: real(*args, **kwargs))
    out = tmp_path / "model"
    args = ["--checkpoint", above_chance["checkpoint"], "--archive", above_chance["archive"], "--metadata",
            above_chance["metadata"], "--out", str(out), "--calibration-size", "16", "--eval-size", "16",
            "--max-prob-diff", "0.000001", "--no-bf16-metrics"]
    with pytest.raises(AgreementNotReached) as info:
        _quantize(above_chance, str(out), max_prob_diff=1e-6, bf16_metrics=False)
    assert "p99 |p_fp32 - p_int8| is" in str(info.value) and "above --max-prob-diff 1e-06" in str(info.value)
    assert "Nothing was written" in str(info.value)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".model")]
    assert quantize.main(args) == 2 and not out.exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_cli_bad_input_exits_nonzero_naming_the_cause(tiny_models, tmp_path):
    missing = run_cli("train", "--archive", str(tmp_path / "none"), "--out", str(tmp_path / "c"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    unknown = run_cli("train", "--archive", tiny_models["archive"], "--out", str(tmp_path / "c"),
                      "--backbone", "vgg99")
    assert unknown.returncode == 2 and "vgg99" in unknown.stderr and "densenet121" in unknown.stderr
    bad_csv = tmp_path / "Data_Entry_2017.csv"
    bad_csv.write_text("Image Index,Labels\nx.png,Cardiomegaly\n")  # a label table needs Finding Labels
    malformed = run_cli("train", "--archive", tiny_models["archive"], "--out", str(tmp_path / "c"),
                        "--metadata", str(bad_csv))
    assert malformed.returncode == 2 and "Data_Entry_2017.csv" in malformed.stderr
    assert "no 'Finding Labels' column" in malformed.stderr
    weights = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.zeros(3)}, weights)
    misfit = run_cli("train", "--archive", tiny_models["archive"], "--out", str(tmp_path / "c"),
                     "--backbone", "dwsep_cnn", "--init-weights", str(weights))
    assert misfit.returncode == 2 and "do not fit" in misfit.stderr
    assert not os.path.exists(tmp_path / "c")
    no_artifact = run_cli("quantize", "--checkpoint", str(tmp_path), "--archive", tiny_models["archive"],
                          "--out", str(tmp_path / "m"))
    assert no_artifact.returncode == 2 and "manifest.json" in no_artifact.stderr
    for proc in (missing, unknown, malformed, misfit, no_artifact):
        assert "Traceback" not in proc.stderr


def test_calibration_without_patient_data_is_recorded_and_evaluated_on_the_archive_test_split(above_chance, tmp_path):
    summaries, manifests = {}, {}
    for source in ("archive", "synthetic", "fractal"):
        out = str(tmp_path / source)
        summaries[source] = _quantize(above_chance, out, calibration=source, bf16_metrics=False)
        manifests[source] = open_artifact(out)
    for source, art in manifests.items():
        m = art.manifest
        cal, evaluation = m["calibration"], m["metrics"]["evaluation"]
        assert cal["source"] == source == summaries[source].calibration and cal["images"] == 16
        assert cal["patient_images"] is (source == "archive")
        assert (cal["archive"], cal["split"]) == ((above_chance["archive"], "train_val") if source == "archive"
                                                  else (None, None))
        assert (cal["generator"] is None) is (source == "archive")
        assert evaluation["archive"] == above_chance["archive"] and evaluation["split"] == "test"
        assert evaluation["images"] == m["metrics"]["eval_images"] == summaries[source].eval_images == 16
        assert open_typed(art.uri, None, "--model", ArtifactKind.MODEL)[1].calibration_source == source
        # The relabelled test images: FP32 ranks them perfectly whatever calibrated INT8.
        assert summaries[source].fp32_mean_auroc == 1.0
        spread = m["metrics"]["fp32_prob_std"]
        assert len(spread) == len(LABELS) and list(summaries[source].fp32_prob_std) == spread
        assert all(s > 0 for s in spread)  # every label has images on both sides of its cut
    # One --seed: every source is evaluated on the same test images (same FP32 probabilities, same thresholds),
    # while the calibration images, and so the INT8 weights, differ.
    thresholds = {s: a.manifest["metrics"]["int8_vs_fp32"]["fp32_youden_thresholds"] for s, a in manifests.items()}
    assert thresholds["archive"] == thresholds["synthetic"] == thresholds["fractal"]
    assert len({json.dumps(a.manifest["calibration"]["pixels"]) for a in manifests.values()}) == 3
    assert len({a.read("int8/model.bin") for a in manifests.values()}) == 3
    assert manifests["archive"].read("fp32/model.bin") == manifests["fractal"].read("fp32/model.bin")


def test_quantize_without_an_archive_says_nothing_was_evaluated(above_chance, tmp_path, capsys):
    out = tmp_path / "blind"
    rc = quantize.main(["--checkpoint", above_chance["checkpoint"], "--out", str(out), "--calibration", "fractal",
                        "--calibration-size", "8", "--no-bf16-metrics"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "tilescope quantize: warning: no --archive" in captured.err and "NOT evaluated" in captured.err
    assert "NOT evaluated against FP32" in captured.out
    m = open_artifact(str(out)).manifest
    assert m["metrics"]["evaluation"] is None and m["metrics"]["eval_images"] == 0
    assert m["metrics"]["fp32_prob_std"] == []
    assert m["calibration"]["source"] == "fractal" and m["calibration"]["images"] == 8
    assert m["config"]["archive"] is None and m["config"]["calibration"] == "fractal"
    assert b"FakeQuantize" in open_artifact(str(out)).read("int8/model.xml") or \
        b'element_type="i8"' in open_artifact(str(out)).read("int8/model.xml")
