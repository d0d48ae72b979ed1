"""train -> quantize on a synthetic archive: artifacts, accuracy control, ignored scope, and bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from jobs import quantize, train
from storage.artifacts import open_artifact, sha256_hex
from tests.conftest import REPO
from xray.labels import LABELS
from xray.models import ModelSpec, build_model, load_state


def test_model_artifact_is_complete_and_verifiable(tiny_models):
    art = open_artifact(tiny_models["models"][0])
    m = art.manifest
    assert m["model"] == "dwsep_cnn" and m["labels"] == list(LABELS)
    assert m["input"]["shape"] == [-1, 1, 64, 64] and m["input"]["dtype"] == "uint8"
    assert set(m["files"]) == {"fp32/model.xml", "fp32/model.bin", "int8/model.xml", "int8/model.bin"}
    for rel, digest in m["files"].items():
        assert sha256_hex(art.read(rel)) == digest
    assert set(m["versions"]) == {"torch", "openvino", "nncf"}
    assert m["calibration"]["images"] == 24 and m["calibration"]["seed"] == 0
    assert len(m["metrics"]["fp32_auroc"]) == len(LABELS) == len(m["metrics"]["int8_auroc"])
    # INT8 really is quantized: the IR holds FakeQuantize / int8 constants, FP32 does not.
    assert b"FakeQuantize" in art.read("int8/model.xml") or b'element_type="i8"' in art.read("int8/model.xml")
    assert b"FakeQuantize" not in art.read("fp32/model.xml")


def test_checkpoint_records_history_and_math_path(tiny_models, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    summary = train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, model="dwsep_cnn",
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
        train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, model="dwsep_cnn", input_size=48))


def test_accuracy_control_and_ignored_scope(tiny_models, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    train.run(train.TrainConfig(archive=tiny_models["archive"], out=ckpt, model="dwsep_cnn", input_size=48,
                                epochs=1, batch_size=8))
    out = str(tmp_path / "model")
    summary = quantize.run(quantize.QuantizeConfig(checkpoint=ckpt, archive=tiny_models["archive"], out=out,
                                                   calibration_size=16, eval_size=16, max_drop=0.01,
                                                   ignored_types=("Sigmoid",)))
    m = open_artifact(out).manifest
    assert m["calibration"]["max_drop"] == 0.01 and m["calibration"]["ignored_types"] == ["Sigmoid"]
    assert summary.int8_mean_auroc >= summary.fp32_mean_auroc - 0.01 - 1e-9


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_cli_bad_input_exits_nonzero_naming_the_cause(tiny_models, tmp_path):
    missing = run_cli("train", "--archive", str(tmp_path / "none"), "--out", str(tmp_path / "c"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    unknown = run_cli("train", "--archive", tiny_models["archive"], "--out", str(tmp_path / "c"),
                      "--model", "vgg99")
    assert unknown.returncode == 2 and "vgg99" in unknown.stderr and "densenet121" in unknown.stderr
    bad_csv = tmp_path / "Data_Entry_2017.csv"
    bad_csv.write_text("Image Index,Finding Labels\nx.png,Cardiomegaly\n")
    malformed = run_cli("train", "--archive", tiny_models["archive"], "--out", str(tmp_path / "c"),
                        "--metadata", str(bad_csv))
    assert malformed.returncode == 2 and "Data_Entry_2017.csv" in malformed.stderr
    weights = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.zeros(3)}, weights)
    misfit = run_cli("train", "--archive", tiny_models["archive"], "--out", str(tmp_path / "c"),
                     "--model", "dwsep_cnn", "--init-weights", str(weights))
    assert misfit.returncode == 2 and "do not fit" in misfit.stderr
    assert not os.path.exists(tmp_path / "c")
    no_artifact = run_cli("quantize", "--checkpoint", str(tmp_path), "--archive", tiny_models["archive"],
                          "--out", str(tmp_path / "m"))
    assert no_artifact.returncode == 2 and "manifest.json" in no_artifact.stderr
    for proc in (missing, unknown, malformed, misfit, no_artifact):
        assert "Traceback" not in proc.stderr
