"""`tilescope import` end to end: a random-weight DenseNet-121 saved as CheXNet-style weights, as ONNX and as
OpenVINO IR, imported, scored in FP32, gives the original torch model's probabilities on the same decoded pixels
to 1e-4, in CheXNet column order, with only the labels the model has; bf16 runs and says what ran."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import openvino as ov
import pyarrow.parquet as pq
import pytest
import torch
import torchvision

from actors.openvino_ir import IRPrecision, compile_cpu, read_ir, what_ran
from actors.scorer import Int8Scorer
from jobs import import_model, quantize, score, synth
from storage.artifacts import open_typed
from storage.image_sets import load_image_set
from xray.metadata.labels import LABELS, prob_column
from xray.metadata.manifests import ArtifactKind
from xray.models.cpu_isa import this_cpu

SIZE = 64
# The model's 14 outputs, as its authors ordered them: another order, and two findings tilescope has no
# column for in the ONNX case (named "-").
MODEL_ORDER = ("Hernia", "Pneumonia", "Effusion", "Atelectasis", "Cardiomegaly", "Infiltration", "Mass", "Nodule",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening")


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    """An archive, its decoded pixels, and the torch model's probabilities on them (N images, 14 outputs)."""
    root = tmp_path_factory.mktemp("import")
    archive = str(root / "archive")
    synth.run(synth.SynthConfig(out=archive, n_images=20, size=128, shards=1, seed=11))
    torch.manual_seed(0)
    net = torchvision.models.densenet121(weights=None, num_classes=len(LABELS))
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net(torch.randn(8, 3, SIZE, SIZE))
    net.eval()
    images = load_image_set(archive, None, SIZE)
    x = torch.from_numpy(images.pixels).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = torch.sigmoid(net((x.expand(-1, 3, -1, -1) - mean) / std)).numpy()
    assert probs.std() > 0.05  # outputs that differ between images and labels: the comparison means something
    return {"root": root, "archive": archive, "net": net, "ids": images.ids, "pixels": images.pixels,
            "probs": probs}


def expected(case: dict, labels: tuple[str, ...], names: tuple[str, ...] = MODEL_ORDER) -> np.ndarray:
    """The torch model's probabilities for `labels`, its output for each found by the name its authors gave it."""
    return case["probs"][:, [names.index(label) for label in labels]]


def chexnet_weights(net: torch.nn.Module) -> bytes:
    """arnoweng/CheXNet's model.pth.tar layout: DataParallel around `densenet121`, torchvision < 0.3 names,
    a Sequential(Linear, Sigmoid) head, beside the epoch."""
    state = {}
    for key, value in net.state_dict().items():
        key = re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key).replace("classifier.",
                                                                                             "classifier.0.")
        state[f"module.densenet121.{key}"] = value
    buf = io.BytesIO()
    torch.save({"epoch": 9, "arch": "DenseNet-121", "state_dict": state}, buf)
    return buf.getvalue()


def scored_rows(run_dir: str) -> tuple[dict, dict]:
    table = pq.read_table([os.path.join(run_dir, f) for f in sorted(os.listdir(run_dir)) if f.endswith(".parquet")])
    with open(os.path.join(run_dir, "_manifest.json")) as f:
        return table.to_pydict(), json.load(f)


def test_chexnet_weights_import_quantize_and_score_in_fp32_like_torch(case, local_ray, tmp_path):
    weights = tmp_path / "model.pth.tar"
    weights.write_bytes(chexnet_weights(case["net"]))
    ckpt, model = str(tmp_path / "ckpt"), str(tmp_path / "model")
    imported = import_model.run(import_model.ImportConfig(out=ckpt, weights=str(weights), backbone="densenet121",
                                                          input_size=SIZE, labels=MODEL_ORDER))
    assert imported.labels == LABELS  # any order in, CheXNet order out
    quantize.run(quantize.QuantizeConfig(checkpoint=ckpt, archive=case["archive"], out=model, calibration_size=8,
                                         eval_size=0, bf16_metrics=False, recipe="histogram-fast",
                                         allow_over_budget=True))
    summary = score.run(score.ScoreConfig(archive=case["archive"], model=model, out=str(tmp_path / "scores"),
                                          precision="fp32", chunk_size=8))
    rows, manifest = scored_rows(summary.results_uri)
    order = [rows["image_id"].index(i) for i in case["ids"]]
    got = np.array([[rows[prob_column(label)][k] for label in LABELS] for k in order])
    np.testing.assert_allclose(got, expected(case, LABELS), rtol=0, atol=1e-4)
    assert set(rows["precision"]) == {"fp32"} and set(rows["cpu_isa"]) == {this_cpu().isa.value}
    assert (manifest["precision"], manifest["requested_precision"]) == ("fp32", "fp32")
    assert manifest["ran"] == [{"precision": "fp32", "cpu_isa": this_cpu().isa.value, "rows": len(case["ids"])}]
    assert manifest["results_schema_version"] == 2


def test_onnx_with_a_subset_of_labels_scores_like_torch_and_bf16_says_what_ran(case, local_ray, tmp_path):
    onnx = tmp_path / "chexnet.onnx"
    torch.onnx.export(case["net"], torch.zeros(1, 3, SIZE, SIZE), str(onnx), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    names = tuple("-" if label in ("Edema", "Mass") else label for label in MODEL_ORDER)
    model = str(tmp_path / "model")
    summary = import_model.run(import_model.ImportConfig(out=model, onnx=str(onnx), labels=names))
    kept = tuple(label for label in LABELS if label not in ("Edema", "Mass"))
    assert (summary.kind, summary.model, summary.labels, summary.input_size) == ("model", "chexnet", kept, SIZE)
    artifact, manifest = open_typed(model, None, "--model", ArtifactKind.MODEL)
    assert manifest.precisions == ("fp32",) and manifest.split is None and manifest.source["format"] == "onnx"

    scorer = Int8Scorer(model, precision="fp32", threads=2)
    np.testing.assert_allclose(scorer.infer(case["pixels"]), expected(case, kept, names), rtol=0, atol=1e-4)
    assert scorer.ran.precision == "fp32"

    out = str(tmp_path / "scores")
    run = score.run(score.ScoreConfig(archive=case["archive"], model=model, out=out, precision="bf16", chunk_size=8))
    rows, run_manifest = scored_rows(run.results_uri)
    assert sorted(c for c in rows if c.startswith("prob_")) == sorted(prob_column(label) for label in kept)
    # What bf16 runs here, read from a plain compile: bf16 where the CPU plugin has it, fp32 on AVX2. The rows and
    # the run manifest must say the same.
    plain = what_ran(compile_cpu(read_ir(artifact, "fp32/model.xml"), IRPrecision.BF16), IRPrecision.BF16)
    assert plain.precision in ("bf16", "fp32")
    assert set(rows["precision"]) == {plain.precision} and set(rows["cpu_isa"]) == {this_cpu().isa.value}
    assert (run_manifest["precision"], run_manifest["requested_precision"]) == (plain.precision, "bf16")
    order = [rows["image_id"].index(i) for i in case["ids"]]
    got = np.array([[rows[prob_column(label)][k] for label in kept] for k in order])
    assert np.abs(got - expected(case, kept, names)).max() < 0.05


def test_openvino_ir_that_ends_in_a_sigmoid_imports_as_probabilities(case, tmp_path):
    with_sigmoid = torch.nn.Sequential(case["net"], torch.nn.Sigmoid()).eval()
    xml = tmp_path / "published" / "model.xml"
    ov.save_model(ov.convert_model(with_sigmoid, example_input=torch.zeros(1, 3, SIZE, SIZE)), str(xml),
                  compress_to_fp16=False)
    with pytest.raises(ValueError, match="give --input-size"):  # converted with a dynamic input
        import_model.run(import_model.ImportConfig(out=str(tmp_path / "m0"), ir=str(xml), outputs="probabilities"))
    model = str(tmp_path / "model")
    summary = import_model.run(import_model.ImportConfig(out=model, ir=str(xml), input_size=SIZE,
                                                         outputs="probabilities", labels=MODEL_ORDER))
    assert summary.model == "published" and summary.labels == LABELS
    scorer = Int8Scorer(model, precision="fp32", threads=2)
    np.testing.assert_allclose(scorer.infer(case["pixels"]), expected(case, LABELS), rtol=0, atol=1e-4)
    # Declared as logits, it would be squeezed by a second sigmoid: a model whose outputs are logits declared
    # as probabilities is refused.
    onnx = tmp_path / "logits.onnx"
    torch.onnx.export(case["net"], torch.zeros(1, 3, SIZE, SIZE), str(onnx), dynamo=False)
    with pytest.raises(ValueError, match="they are logits; import with --outputs logits"):
        import_model.run(import_model.ImportConfig(out=str(tmp_path / "m2"), onnx=str(onnx), outputs="probabilities"))
    assert not (tmp_path / "m2").exists()
