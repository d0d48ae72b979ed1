"""OpenVINO and NNCF plumbing shared by the quantize and import jobs, the tile trainer and the scorers: export a
PyTorch classifier to IR, quantize it to INT8, serialise IR to bytes, scope what NNCF's compiles use (threads,
f32), compile an artifact's IR for async inference in a chosen precision, run it, and read back what ran.

IR contract (every IR tilescope writes): input u8 (N, 1, S, S) grayscale, normalisation inside the graph;
output `probabilities` (N, L) float32, sigmoid applied. openvino, nncf and torch are imported inside the
functions that need them, so importing this module costs nothing on a node that only scores.

Precision: every compile sets OpenVINO's inference-precision hint (IRPrecision.hint): f32 for FP32 and for
the float layers of INT8, bf16 only when asked. Without it OpenVINO runs "FP32" in bf16 on AMX and
avx512_bf16 CPUs. What a compiled model actually runs is read from its runtime graph (what_ran).
"""
from __future__ import annotations

import enum
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xray.metadata.manifests import IRKind
from xray.models.cpu_isa import CpuIsa, this_cpu

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
    """What a scorer runs (`score --precision`): which IR of an artifact (its manifest key, `.ir`) and the
    inference precision OpenVINO is told to use for what is not INT8 (`.hint`).

    Why a hint at all: on a CPU with AMX or avx512_bf16, OpenVINO's default inference precision is bf16, so an
    "FP32" IR compiled without one runs in bf16. tilescope always sets it; what actually ran is read back from
    the compiled model (what_ran) and recorded.
    """

    INT8 = "int8"
    """The NNCF INT8 IR; the layers it keeps in float run in f32."""
    FP32 = "fp32"
    """The FP32 IR, in f32."""
    BF16 = "bf16"
    """The FP32 IR, in bf16: native on AMX / avx512_bf16 CPUs; OpenVINO runs it in f32 where the CPU has no
    bf16 at all (AVX2), and the rows then say fp32."""

    @property
    def ir(self) -> IRKind:
        """The artifact's IR this precision runs (a key of the manifest's precisions)."""
        return IRKind.INT8 if self is IRPrecision.INT8 else IRKind.FP32

    @property
    def hint(self) -> str:
        """OpenVINO's INFERENCE_PRECISION_HINT for it."""
        return "bf16" if self is IRPrecision.BF16 else "f32"


class ActivationRanges(enum.StrEnum):
    """How NNCF sets each activation quantizer's range from the calibration statistics."""

    HISTOGRAM = "histogram"
    """A range chosen on the histogram of the calibration activations, clipping rare outliers (NNCF's
    RangeEstimatorParametersSet.HISTOGRAM). Compared with min/max in bench.inference (docs/BENCHMARKS.md)."""
    MINMAX = "minmax"
    """NNCF's default: the calibration minimum and maximum."""


class BiasCorrection(enum.StrEnum):
    """NNCF's bias correction after quantization."""

    FULL = "full"
    """Layer by layer on the calibration images (nncf fast_bias_correction=False): slower, closer to FP32."""
    FAST = "fast"
    """NNCF's default: one pass."""


def export_fp32(model: torch.nn.Module, input_size: int):  # -> openvino.Model
    """PyTorch classifier -> OpenVINO model with input u8 (N, 1, S, S) and output probabilities (N, L)."""
    import openvino as ov
    import torch

    from xray.models.registry import WithSigmoid

    example = torch.zeros(1, 1, input_size, input_size, dtype=torch.uint8)
    ov_model = ov.convert_model(WithSigmoid(model).eval(), example_input=example,
                                input=[(ov.PartialShape([-1, 1, input_size, input_size]), ov.Type.u8)])
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


@dataclass(frozen=True)
class AccuracyControl:
    """NNCF's accuracy-control loop: keep layers in float until `score` on `pixels` drops by at most max_drop.

    pixels (M, 1, S, S) uint8 and reference (M, L), the FP32 model's probabilities on them (f32);
    score(rows, probs) -> float, higher is better, where rows (K,) index the images NNCF evaluated (it ranks
    layers on a subset) and probs (K, L) are the candidate model's outputs on them. The score must not be 0 for
    the FP32 model (NNCF divides by it).
    """

    pixels: np.ndarray
    reference: np.ndarray
    score: Callable[[np.ndarray, np.ndarray], float]
    max_drop: float


def quantize_int8(ov_model, calibration: np.ndarray, preset: QuantizationPreset = QuantizationPreset.PERFORMANCE,
                  ignored_names: Sequence[str] = (), ignored_types: Sequence[str] = (),
                  control: AccuracyControl | None = None,
                  ranges: ActivationRanges = ActivationRanges.MINMAX,
                  bias_correction: BiasCorrection = BiasCorrection.FAST,
                  on_item: Callable[[], None] | None = None):  # -> openvino.Model
    """NNCF post-training INT8 of an FP32 IR from calibration pixels (N, 1, S, S) uint8.

    on_item, if given, is called each time NNCF reads a calibration image (for a progress line; NNCF may read
    the set more than once).

    Every model NNCF compiles meanwhile (statistics, accuracy control) runs in f32 whatever the CPU, so the
    result does not depend on whether OpenVINO would have picked bf16 (f32_compiles). The defaults are NNCF's
    own (min/max ranges, fast bias correction); `tilescope quantize` passes better ones (docs/BENCHMARKS.md).
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    def transform(x: np.ndarray) -> np.ndarray:
        if on_item is not None:
            on_item()
        return x[None]

    calib = nncf.Dataset(list(calibration), transform)
    scope = nncf.IgnoredScope(names=list(ignored_names), types=list(ignored_types)) \
        if (ignored_names or ignored_types) else None
    options = {
        "preset": nncf.QuantizationPreset(QuantizationPreset(preset).value), "subset_size": len(calibration),
        "ignored_scope": scope, "fast_bias_correction": BiasCorrection(bias_correction) is BiasCorrection.FAST,
    }
    if ActivationRanges(ranges) is ActivationRanges.HISTOGRAM:
        options["advanced_parameters" if control is None else "advanced_quantization_parameters"] = \
            AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM)
    with f32_compiles():
        if control is None:
            return nncf.quantize(ov_model, calib, **options)
        pixels = control.pixels

        def validation_fn(compiled, items) -> tuple[float, list[float]]:
            rows = np.fromiter((i for i in items), dtype=np.int64)
            probs = np.concatenate([compiled(pixels[rows[k : k + 16]])[0] for k in range(0, len(rows), 16)])
            # Per image, for NNCF's choice of the images it ranks layers on: how far it is from FP32 (a metric
            # of one image, such as AUROC, means nothing).
            per_image = -np.abs(probs - control.reference[rows]).max(axis=1)
            return float(control.score(rows, probs)), per_image.tolist()

        val = nncf.Dataset(list(range(len(pixels))))
        return nncf.quantize_with_accuracy_control(ov_model, calib, val, validation_fn, max_drop=control.max_drop,
                                                   drop_type=nncf.DropType.ABSOLUTE, **options)


def cpu_config(precision: IRPrecision = IRPrecision.FP32, threads: int | None = None) -> dict:
    """OpenVINO CPU compile settings for `precision`: its inference-precision hint, and with threads (inside an
    actor: its CPUs) that many threads, unpinned, so it does not spread over cores other actors hold."""
    config: dict = {"INFERENCE_PRECISION_HINT": IRPrecision(precision).hint}
    if threads is not None:
        config.update({"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})
    return config


def compile_cpu(ov_model, precision: IRPrecision = IRPrecision.FP32, threads: int | None = None):
    """An OpenVINO model compiled for the CPU in `precision` (cpu_config)."""
    import openvino as ov

    return ov.Core().compile_model(ov_model, "CPU", cpu_config(precision, threads))


def infer_probs(ov_model, pixels: np.ndarray, batch: int = 16, threads: int | None = None,
                precision: IRPrecision = IRPrecision.FP32) -> np.ndarray:
    """Synchronous inference for evaluation: (N, 1, S, S) uint8 -> (N, L) float32, in f32 unless told otherwise.

    threads: inside an actor, its CPUs; None lets OpenVINO use the whole machine (a job run on its own).
    """
    return infer_compiled(compile_cpu(ov_model, precision, threads), pixels, batch)


def infer_compiled(compiled, pixels: np.ndarray, batch: int = 16,
                   on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, 1, S, S) uint8 -> (N, L) float32 through a compiled model, `batch` images per request.

    on_batch, if given, is called with the number of images of each request once it has run (a progress line).
    """
    if len(pixels) == 0:
        return np.zeros((0, compiled.outputs[0].get_partial_shape()[1].get_length()), np.float32)
    out = []
    for i in range(0, len(pixels), batch):
        out.append(compiled(pixels[i : i + batch])[0])
        if on_batch is not None:
            on_batch(len(pixels[i : i + batch]))
    return np.concatenate(out).astype(np.float32)


# Layer types of OpenVINO's CPU runtime graph that do the arithmetic: their runtime precision is what ran.
COMPUTE_LAYERS = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"})
_INT8 = frozenset({"u8", "i8"})
_FLOAT_NAMES = {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}


def compute_precisions(compiled) -> dict[str, int]:
    """A compiled model's compute layers counted by `type:runtime precision` (e.g. {"Convolution:u8": 9}), read
    from its runtime graph: what the CPU plugin actually runs, not what was asked."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in COMPUTE_LAYERS:
            key = f"{layer}:{info['runtimePrecision'].astype(str)}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def precision_label(counts: dict[str, int]) -> str:
    """What ran, in one word, from compute_precisions: `int8` (quantized layers, any others in f32),
    `int8+bf16`, `bf16`, `fp16` or `fp32`; `unknown` when the graph has no compute layer."""
    kinds = {key.rpartition(":")[2] for key in counts}
    floats = [name for prec, name in _FLOAT_NAMES.items() if prec in kinds]  # lowest precision first
    if kinds & _INT8:
        return "int8" if not floats or floats[0] == "fp32" else f"int8+{floats[0]}"
    return floats[0] if floats else "unknown"


@dataclass(frozen=True)
class RanPrecision:
    """What one compiled model ran: the mode asked for, what the CPU plugin chose (label and per-layer counts),
    its inference-precision hint as compiled, and the CPU's ISA class."""

    requested: str
    precision: str
    hint: str
    cpu: CpuIsa
    compute: dict[str, int]

    def to_json(self) -> dict:
        return {"requested": self.requested, "precision": self.precision, "inference_precision_hint": self.hint,
                **self.cpu.to_json(), "compute_layers": dict(self.compute)}


def what_ran(compiled, requested: IRPrecision | str) -> RanPrecision:
    """Read back from a compiled model what it runs (and on which CPU class)."""
    counts = compute_precisions(compiled)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return RanPrecision(str(requested), precision_label(counts), getattr(hint, "type_name", str(hint)) or str(hint),
                        this_cpu(), counts)


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
def compile_defaults(threads: int | None = None, hint: str | None = None):
    """Within the block, an OpenVINO CPU compile that does not set them itself (NNCF's calibration and
    validation engines, nncf/openvino/engine.py, offer no way to) gets `threads` threads, unpinned, and the
    inference-precision `hint`. A setting the caller passes wins. Nothing given: OpenVINO's defaults.

    A Ray actor runs one call at a time, so the patch, undone on exit, cannot leak into other work.
    """
    import openvino as ov

    extra: dict = {}
    if threads is not None:
        extra.update({"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False})
    if hint is not None:
        extra["INFERENCE_PRECISION_HINT"] = hint
    if not extra:
        yield
        return
    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kw):
        if device_name in (None, "CPU"):
            device_name = "CPU"
            config = {**{k: v for k, v in extra.items() if not _set_by_caller(k, config)}, **(config or {})}
        return original(self, model, device_name, config, **kw)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def _set_by_caller(key: str, config: dict | None) -> bool:
    """Pinning goes with the thread count: a caller that chose its threads keeps OpenVINO's pinning too."""
    config = config or {}
    return key in config or (key == "ENABLE_CPU_PINNING" and "INFERENCE_NUM_THREADS" in config)


def openvino_threads(threads: int | None):
    """compile_defaults with threads only: NNCF's compiles inside the block use `threads` threads, unpinned,
    instead of every core, pinned.

    Why: in a Ray actor holding one CPU, NNCF's statistics pass otherwise runs one pinned thread per core of
    the machine; two actors quantizing at once pinned both their threads onto the same two cores and took
    1.8x as long as one alone (docs/BENCHMARKS.md, tile ensembles). None: leave OpenVINO's defaults.
    """
    return compile_defaults(threads=threads)


def f32_compiles():
    """compile_defaults with the f32 hint: NNCF's statistics and its accuracy-control validation see the
    FP32 model's f32 numbers, not the bf16 OpenVINO picks by default on AMX / avx512_bf16 CPUs."""
    return compile_defaults(hint=IRPrecision.FP32.hint)


def ir_files(artifact: Artifact, xml_path: str) -> dict[str, bytes]:
    """An IR of an artifact as its two files' bytes (verified against the manifest): {xml_path: ..., bin: ...}."""
    bin_path = xml_path[: -len(".xml")] + ".bin"
    return {xml_path: artifact.read(xml_path), bin_path: artifact.read(bin_path)}


def read_ir(artifact: Artifact, xml_path: str, core=None):  # -> openvino.Model
    """An IR of an artifact as an OpenVINO model, read from memory."""
    import openvino as ov

    xml, weights = ir_files(artifact, xml_path).values()
    core = core or ov.Core()
    return core.read_model(model=xml.decode(), weights=ov.Tensor(np.frombuffer(weights, np.uint8)))


@dataclass
class CompiledIR:
    """An IR compiled for a scorer: its async queue and what it runs."""

    queue: object  # openvino.AsyncInferQueue, one request per stream
    ran: RanPrecision


@contextmanager
def cache_lock(cache_dir: str):
    """Hold an exclusive lock on a compiled-model cache directory (a file lock: one per node's disk).

    OpenVINO writes a cache blob and then sets its permissions; two processes compiling the same model into the
    same CACHE_DIR at once race there ("filesystem error: cannot set permissions: No such file or directory",
    seen with two ensemble scorers on one node). Compiling under this lock serialises them: the first compiles
    and writes the blob, the others wait and then load it, which is also faster than compiling again."""
    import fcntl

    with open(os.path.join(cache_dir, ".compile.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compile_ir(artifact: Artifact, xml_path: str, threads: int, streams: int, cache_dir: str,
               precision: IRPrecision = IRPrecision.INT8) -> CompiledIR:
    """One IR of an artifact, compiled in `precision` (its hint) with threads and streams sized to the actor's
    CPUs; an AsyncInferQueue with one request per stream, and what the compiled model runs."""
    import openvino as ov

    core = ov.Core()
    os.makedirs(cache_dir, exist_ok=True)
    core.set_property({"CACHE_DIR": cache_dir})
    model = read_ir(artifact, xml_path, core)
    with cache_lock(cache_dir):
        compiled = core.compile_model(model, "CPU", {
            **cpu_config(precision, threads),
            "NUM_STREAMS": streams,
            "PERFORMANCE_HINT": "THROUGHPUT",
        })
    # One infer request per stream keeps every stream busy with async requests.
    return CompiledIR(ov.AsyncInferQueue(compiled, streams), what_ran(compiled, precision))


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
