"""actors.openvino_ir.openvino_threads: OpenVINO compiles that set no thread count (NNCF's calibration engine)
get the actor's threads, unpinned, inside the block, and OpenVINO's defaults again after it."""

from __future__ import annotations

import openvino as ov
import pytest

from actors.openvino_ir import export_fp32, openvino_threads
from xray.metadata.labels import LABELS
from xray.models.registry import ModelSpec, build_model


@pytest.fixture(scope="module")
def ov_model():
    return export_fp32(build_model(ModelSpec("dwsep_cnn", LABELS, 32)).eval(), 32)


def _threads_and_pinning(compiled) -> tuple[int, bool]:
    return int(compiled.get_property("INFERENCE_NUM_THREADS")), bool(compiled.get_property("ENABLE_CPU_PINNING"))


def test_compiles_without_a_thread_count_get_the_actors_threads_unpinned(ov_model):
    # what nncf/openvino/engine.py does: a fresh Core, device CPU, a config without threads
    with openvino_threads(1):
        nncf_like = ov.Core().compile_model(ov_model, device_name="CPU",
                                            config={"INFERENCE_PRECISION_HINT": ov.Type.f32})
        bare = ov.Core().compile_model(ov_model)
        explicit = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": 2})
    assert _threads_and_pinning(nncf_like) == (1, False)
    assert nncf_like.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # its own setting is kept
    assert _threads_and_pinning(bare) == (1, False)
    assert int(explicit.get_property("INFERENCE_NUM_THREADS")) == 2  # an explicit choice wins


def test_defaults_come_back_after_the_block_and_with_none(ov_model):
    default = _threads_and_pinning(ov.Core().compile_model(ov_model, "CPU"))
    with openvino_threads(1):
        pass
    assert _threads_and_pinning(ov.Core().compile_model(ov_model, "CPU")) == default
    with openvino_threads(None):
        assert _threads_and_pinning(ov.Core().compile_model(ov_model, "CPU")) == default
    with pytest.raises(RuntimeError), openvino_threads(1):
        raise RuntimeError("boom")
    assert _threads_and_pinning(ov.Core().compile_model(ov_model, "CPU")) == default
