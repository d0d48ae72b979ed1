"""DenseNet-121 at 224x224: PyTorch FP32 eager vs OpenVINO FP32 vs OpenVINO INT8 (async), in one run.

Also trains a small model with `tilescope train` on a synthetic archive and compares INT8 vs FP32 mean AUROC
on the test split (from `tilescope quantize`'s evaluation).

    .venv/bin/python -m bench.inference            (about 5-8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from actors.openvino_ir import export_fp32
from bench.doc_sections import machine_line, write_section
from jobs import quantize, synth, train
from xray.labels import LABELS
from xray.models import ModelSpec, WithSigmoid, build_model
from xray.synth import synth_case

SIZE = 224


def calibration_images(n: int) -> np.ndarray:
    from PIL import Image

    out = []
    for i in range(n):
        img = Image.fromarray(synth_case(i, 0, 512).image).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        out.append(np.asarray(img)[None])
    return np.stack(out).astype(np.uint8)


def torch_eager(model: torch.nn.Module, batch: int, seconds: float) -> float:
    x = torch.randint(0, 255, (batch, 1, SIZE, SIZE), dtype=torch.uint8).float()
    with torch.inference_mode():
        model(x)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
    return n / (time.perf_counter() - t0)


def openvino_async(ov_model, batch: int, seconds: float) -> float:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    nreq = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(compiled, nreq)
    x = np.random.default_rng(0).integers(0, 255, (batch, 1, SIZE, SIZE), dtype=np.uint8)
    for _ in range(nreq):
        queue.start_async({0: x})
    queue.wait_all()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        queue.start_async({0: x})
        n += batch
    queue.wait_all()
    return n / (time.perf_counter() - t0)


def speed(seconds: float) -> dict:
    import nncf

    torch.manual_seed(0)
    model = build_model(ModelSpec("densenet121", LABELS, SIZE)).eval()
    results: dict[str, dict[int, float]] = {"pytorch_fp32_eager": {}, "openvino_fp32": {}, "openvino_int8": {}}
    for batch in (1, 8, 32):
        results["pytorch_fp32_eager"][batch] = torch_eager(WithSigmoid(model).eval(), batch, seconds)
    fp32 = export_fp32(model, SIZE)
    calib = calibration_images(64)
    int8 = nncf.quantize(fp32, nncf.Dataset(list(calib), lambda x: x[None]), subset_size=len(calib))
    for batch in (1, 8):
        results["openvino_fp32"][batch] = openvino_async(fp32, batch, seconds)
        results["openvino_int8"][batch] = openvino_async(int8, batch, seconds)
    return results


def accuracy(workdir: str) -> quantize.QuantizeSummary:
    archive = os.path.join(workdir, "archive")
    synth.run(synth.SynthConfig(out=archive, n_images=1200, size=256, shards=2, seed=7))
    train.run(train.TrainConfig(archive=archive, out=os.path.join(workdir, "ckpt"), model="dwsep_cnn",
                                input_size=128, epochs=15, seed=0))
    return quantize.run(quantize.QuantizeConfig(checkpoint=os.path.join(workdir, "ckpt"), archive=archive,
                                                out=os.path.join(workdir, "model"), calibration_size=300,
                                                eval_size=1000, seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per configuration")
    args = parser.parse_args()
    res = speed(args.seconds)
    best = {k: max(v.values()) for k, v in res.items()}
    base = best["pytorch_fp32_eager"]
    with tempfile.TemporaryDirectory() as tmp:
        acc = accuracy(tmp)
    rows = "\n".join(
        f"| {name} | " + ", ".join(f"b{b}: {v:.1f}" for b, v in per.items()) + f" | {best[name]:.1f} | "
        f"{best[name] / base:.2f}x |" for name, per in res.items())
    delta = acc.int8_mean_auroc - acc.fp32_mean_auroc
    md = f"""## Inference: DenseNet-121 at 224x224 (issue 2)

Command: `.venv/bin/python -m bench.inference --seconds {args.seconds:g}`
Machine: {machine_line()}; torch threads = {torch.get_num_threads()}.

| path | images/s per batch size | best images/s | vs PyTorch FP32 eager |
|---|---|---|---|
{rows}

INT8 vs FP32 accuracy on a model trained by `tilescope train` (dwsep_cnn, 128 px, 15 epochs, synthetic archive
of 1200 images), evaluated on its test split: mean AUROC FP32 {acc.fp32_mean_auroc:.4f}, INT8
{acc.int8_mean_auroc:.4f}, delta {delta:+.4f} (target |delta| <= 0.005: {'met' if abs(delta) <= 0.005 else 'NOT met'});
max |p_fp32 - p_int8| {acc.max_abs_prob_diff:.4f}.
"""
    write_section("inference", md)
    print(md)


if __name__ == "__main__":
    main()
