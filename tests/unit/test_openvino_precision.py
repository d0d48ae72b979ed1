"""What precision OpenVINO runs, set and read back (actors/openvino_ir.py).

On AMX and avx512_bf16 CPUs OpenVINO's default inference precision is bf16: an "FP32" IR compiled without a hint
runs in bf16 there. tilescope sets the hint on every compile, and reads what ran from the compiled model's
runtime graph. Every assertion here holds on AVX2, AVX-512/VNNI and AMX CPUs alike.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
import torch

from actors.openvino_ir import (
    IRPrecision,
    compile_cpu,
    export_fp32,
    f32_compiles,
    infer_compiled,
    precision_label,
    quantize_int8,
    what_ran,
)
from xray.metadata.labels import LABELS
from xray.models.cpu_isa import this_cpu
from xray.models.registry import ModelSpec, WithSigmoid, build_model


def pixels(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def densenet() -> torch.nn.Module:
    """A random-weight DenseNet-121 with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("densenet121", LABELS, 64))
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(pixels(8, 64, 1)).float())
    return model.eval()


@pytest.mark.parametrize("name", ["densenet121", "dwsep_cnn"])
def test_fp32_with_the_f32_hint_matches_torch_to_1e_4(name, densenet):
    torch.manual_seed(0)
    model = densenet if name == "densenet121" else build_model(ModelSpec(name, LABELS, 64)).eval()
    x = pixels(6, 64, 2)
    with torch.no_grad():
        expected = WithSigmoid(model)(torch.from_numpy(x)).numpy()
    assert expected.std() > 0.005  # the outputs differ between images and labels: the comparison means something
    compiled = compile_cpu(export_fp32(model, 64), IRPrecision.FP32)
    np.testing.assert_allclose(infer_compiled(compiled, x), expected, rtol=0, atol=1e-4)
    ran = what_ran(compiled, IRPrecision.FP32)
    assert (ran.requested, ran.precision, ran.hint) == ("fp32", "fp32", "f32")
    assert ran.cpu == this_cpu() and all(key.endswith(":f32") for key in ran.compute)


def test_bf16_runs_everywhere_and_says_what_ran(densenet):
    ov_model = export_fp32(densenet, 64)
    x = pixels(4, 64, 3)
    p32 = infer_compiled(compile_cpu(ov_model, IRPrecision.FP32), x)
    compiled = compile_cpu(ov_model, IRPrecision.BF16)
    p16 = infer_compiled(compiled, x)
    ran = what_ran(compiled, IRPrecision.BF16)
    # bf16 where the CPU plugin runs it (AMX, AVX-512), f32 where it cannot (AVX2): the record says which.
    assert ran.requested == "bf16" and ran.precision in ("bf16", "fp32")
    assert ran.precision == ("bf16" if any(k.endswith(":bf16") for k in ran.compute) else "fp32")
    assert np.abs(p16 - p32).max() < 0.05


def test_int8_says_int8(densenet):
    ov_model = export_fp32(densenet, 64)
    int8 = quantize_int8(ov_model, pixels(8, 64, 4))
    ran = what_ran(compile_cpu(int8, IRPrecision.INT8), IRPrecision.INT8)
    assert ran.precision == "int8" and ran.hint == "f32"
    assert any(k.endswith((":u8", ":i8")) for k in ran.compute)
    assert ran.to_json()["cpu_isa"] == this_cpu().isa.value


@pytest.mark.parametrize(("counts", "label"), [
    ({"Convolution:f32": 9, "FullyConnected:f32": 1}, "fp32"),
    ({"Convolution:bf16": 9, "FullyConnected:bf16": 1}, "bf16"),
    ({"Convolution:bf16": 8, "Convolution:f32": 1}, "bf16"),
    ({"Convolution:u8": 9, "FullyConnected:u8": 1}, "int8"),
    ({"Convolution:u8": 6, "Convolution:f32": 3}, "int8"),  # accuracy control kept layers in f32
    ({"Convolution:i8": 6, "Convolution:bf16": 3}, "int8+bf16"),
    ({"Convolution:f16": 2}, "fp16"),
    ({}, "unknown"),
])
def test_precision_label(counts, label):
    assert precision_label(counts) == label


def test_ir_precision_maps_to_an_ir_and_a_hint():
    assert [(p.value, p.ir, p.hint) for p in IRPrecision] == [("int8", "int8", "f32"), ("fp32", "fp32", "f32"),
                                                              ("bf16", "fp32", "bf16")]


def test_f32_compiles_gives_bare_compiles_the_f32_hint_and_keeps_explicit_ones(densenet):
    ov_model = export_fp32(densenet, 64)
    with f32_compiles():
        bare = ov.Core().compile_model(ov_model, "CPU")
        explicit = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert bare.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert what_ran(bare, "fp32").precision == "fp32"
    assert what_ran(explicit, "bf16").hint in ("bf16", "f32")  # asked for bf16: kept (f32 where it cannot run)
    after = ov.Core().compile_model(ov_model, "CPU")
    assert after.get_property("INFERENCE_PRECISION_HINT") == ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
