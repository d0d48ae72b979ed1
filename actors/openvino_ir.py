"""OpenVINO and NNCF plumbing shared by the quantize job, the tile trainer and the scorers: export a PyTorch
classifier to IR, quantize it to INT8, serialise IR to bytes, scope NNCF's thread use, compile an artifact's
IR for async inference and run it.

IR contract (every IR tilescope writes): input u8 (N, 1, S, S) grayscale, normalisation inside the graph;
output `probabilities` (N, L) float32, sigmoid applied. openvino, nncf and torch are imported inside the
functions that need them, so importing this module costs nothing on a node that only scores.
"""

from __future__ import annotations

import enum
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

# OpenVINO's Python package starts its telemetry on import (openvino.tools.ovc): it writes a client id and
# stats under ~/intel and tries to send an event. A batch job must write nothing outside --out, so it is
# turned off here, before any `import openvino`: with openvino_telemetry not importable, OpenVINO falls back to
# its own no-op stub (openvino/tools/ovc/utils.py). Every module that imports openvino imports this one first.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    import torch

    from storage.artifacts import Artifact


class QuantizationPreset(enum.StrEnum):
    """NNCF presets: symmetric weights and activations, or asymmetric activations."""

    PERFORMANCE = "performance"
    MIXED = "mixed"


class IRPrecision(enum.StrEnum):
    """Which IR of an artifact runs: the NNCF INT8 one or the FP32 export (an artifact's manifest keys)."""

    INT8 = "int8"
    FP32 = "fp32"


def export_fp32(model: torch.nn.Module, input_size: int):  # -> openvino.Model
    """PyTorch classifier -> OpenVINO model with input u8 (N, 1, S, S) and output probabilities (N, L)."""
    import openvino as ov
    import torch

    from xray.models import WithSigmoid

    example = torch.zeros(1, 1, input_size, input_size, dtype=torch.uint8)
    ov_model = ov.convert_model(WithSigmoid(model).eval(), example_input=example,
                                input=[(ov.PartialShape([-1, 1, input_size, input_size]), ov.Type.u8)])
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


def quantize_int8(ov_model, calibration: np.ndarray, preset: QuantizationPreset = QuantizationPreset.PERFORMANCE,
                  ignored_names: Sequence[str] = (), ignored_types: Sequence[str] = (),
                  max_drop: float | None = None,
                  evaluation: tuple[np.ndarray, np.ndarray] | None = None,
                  metric: Callable[[np.ndarray, np.ndarray], float] | None = None):  # -> openvino.Model
    """NNCF post-training INT8 of an FP32 IR from calibration pixels (N, 1, S, S) uint8.

    With max_drop, NNCF's accuracy-control loop keeps layers in FP32 until metric(labels, probs) on
    `evaluation` = (pixels (M, 1, S, S), labels (M, L)) drops by at most max_drop (absolute).
    """
    import nncf

    calib = nncf.Dataset(list(calibration), lambda x: x[None])
    scope = nncf.IgnoredScope(names=list(ignored_names), types=list(ignored_types)) \
        if (ignored_names or ignored_types) else None
    nncf_preset = nncf.QuantizationPreset(QuantizationPreset(preset).value)
    if max_drop is None:
        return nncf.quantize(ov_model, calib, preset=nncf_preset, subset_size=len(calibration), ignored_scope=scope)
    if evaluation is None or metric is None:
        raise ValueError("accuracy control (max_drop) needs evaluation images and a metric")
    pixels, labels = evaluation

    def validation_fn(compiled, items) -> tuple[float, None]:
        probs = np.concatenate([compiled(x[None])[0] for x, _ in items])
        return metric(np.stack([y for _, y in items]), probs), None

    val = nncf.Dataset(list(zip(pixels, labels, strict=True)))
    return nncf.quantize_with_accuracy_control(
        ov_model, calib, val, validation_fn, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE,
        preset=nncf_preset, subset_size=len(calibration), ignored_scope=scope,
    )


def infer_probs(ov_model, pixels: np.ndarray, batch: int = 16, threads: int | None = None) -> np.ndarray:
    """Synchronous inference for evaluation: (N, 1, S, S) uint8 -> (N, L) float32.

    threads: inside an actor, its CPUs (unpinned), so that it does not spread over cores other actors hold;
    None lets OpenVINO use the whole machine (a job run on its own).
    """
    import openvino as ov

    config = {} if threads is None else {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    out = [compiled(pixels[i : i + batch])[0] for i in range(0, len(pixels), batch)]
    return np.concatenate(out).astype(np.float32)


def ir_bytes(ov_model, name: str) -> dict[str, bytes]:
    """An OpenVINO model -> {f"{name}/model.xml": ..., f"{name}/model.bin": ...}, weights kept in FP32."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "model.xml")
        ov.save_model(ov_model, xml, compress_to_fp16=False)
        files = {}
        for ext in ("xml", "bin"):
            with open(os.path.join(tmp, f"model.{ext}"), "rb") as f:
                files[f"{name}/model.{ext}"] = f.read()
    return files


@contextmanager
def openvino_threads(threads: int | None):
    """Within the block, an OpenVINO CPU compile that sets no thread count (NNCF's calibration engine,
    nncf/openvino/engine.py, offers no way to) uses `threads` threads, unpinned, instead of every core, pinned.

    Why: in a Ray actor holding one CPU, NNCF's statistics pass otherwise runs one pinned thread per core of
    the machine; two actors quantizing at once pinned both their threads onto the same two cores and took
    1.8x as long as one alone (docs/BENCHMARKS.md, tile ensembles). A Ray actor runs one call at a time, so
    the patch, undone on exit, cannot leak into other work. None: leave OpenVINO's defaults.
    """
    import openvino as ov

    if threads is None:
        yield
        return
    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kw):
        if device_name in (None, "CPU") and "INFERENCE_NUM_THREADS" not in (config or {}):
            device_name = "CPU"
            config = {**(config or {}), "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
        return original(self, model, device_name, config, **kw)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def compile_ir(artifact: Artifact, xml_path: str, threads: int, streams: int, cache_dir: str):
    """One IR of an artifact -> an AsyncInferQueue with one request per stream, sized to the actor's CPUs."""
    import openvino as ov

    xml = artifact.read(xml_path)
    weights = artifact.read(xml_path[: -len(".xml")] + ".bin")
    core = ov.Core()
    os.makedirs(cache_dir, exist_ok=True)
    core.set_property({"CACHE_DIR": cache_dir})
    model = core.read_model(model=xml.decode(), weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "ENABLE_CPU_PINNING": False,
        "PERFORMANCE_HINT": "THROUGHPUT",
    })
    # One infer request per stream keeps every stream busy with async requests.
    return ov.AsyncInferQueue(compiled, streams)


def infer_async(queue, pixels: np.ndarray, infer_batch: int, n_outputs: int) -> np.ndarray:
    """(N, 1, S, S) uint8 -> (N, n_outputs) float32, sub-batches of infer_batch over the queue's requests."""
    n = pixels.shape[0]
    out = np.empty((n, n_outputs), dtype=np.float32)

    def done(request, start: int) -> None:
        result = request.get_output_tensor(0).data
        out[start : start + result.shape[0]] = result

    queue.set_callback(done)
    for start in range(0, n, infer_batch):
        queue.start_async({0: np.ascontiguousarray(pixels[start : start + infer_batch])}, userdata=start)
    queue.wait_all()
    return out
