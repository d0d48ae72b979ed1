"""The stages of `tilescope import`: weights -> a checkpoint's model.pt, and ONNX / OpenVINO IR -> an FP32 IR
that keeps tilescope's contract.

Weights: the file's state dict is renamed to a registry backbone's keys (xray/models/weights.py), the head's rows
are cut to the kept outputs in CheXNet order (xray/models/outputs.py), and the model is saved as a tilescope state
dict (normalisation buffers included). torch is imported here only, so an ONNX or IR import needs none.

ONNX / IR: the graph gets tilescope's input and output in front of and behind the user's own:

    pixels u8 (N, 1, S, S) -> f32 -> x/255 -> (x - mean) / std -> grey x channels [-> NHWC] -> <model>
        -> [sigmoid] -> gather(kept outputs, CheXNet order) -> probabilities f32 (N, L)

so it is quantized and scored like any model `tilescope quantize` writes.
"""

from __future__ import annotations

import enum
import io
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.openvino_ir import IRPrecision, compile_cpu, infer_compiled
from xray.metadata.manifests import ModelSpec
from xray.models.outputs import OutputMap, output_map
from xray.models.weights import WeightsError, fit_problems, select_rows


class OutputKind(enum.StrEnum):
    """What an ONNX / IR model's output holds."""

    LOGITS = "logits"
    """Scores before the sigmoid: tilescope adds one."""
    PROBABILITIES = "probabilities"
    """Per-label probabilities in [0, 1] (the model ends in a sigmoid)."""


class InputLayout(enum.StrEnum):
    NCHW = "nchw"
    NHWC = "nhwc"


# ---- weights --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedWeights:
    """A state dict ready for a tilescope checkpoint (model.pt bytes), its spec and what was done to it."""

    model_pt: bytes
    spec: ModelSpec
    outputs: OutputMap
    notes: tuple[str, ...]


def import_weights(data: bytes, source: str, backbone: str, labels: tuple[str, ...], input_size: int,
                   mean: tuple[float, ...], std: tuple[float, ...]) -> ImportedWeights:
    """A weights file for a registry backbone -> a checkpoint state dict whose head outputs exactly the labels
    the model has, in CheXNet order. Raises ValueError (WeightsError) naming the file and what does not fit."""
    import torch

    from xray.models.registry import HEADS, XrayClassifier, backbone_state, build_model, shapes

    probe = build_model(ModelSpec(backbone, ("x",), input_size, mean, std))
    state, notes = backbone_state(data, probe.backbone, source)
    head = HEADS[backbone]
    weight = state.get(f"{head}.weight")
    if weight is None or len(weight.shape) != 2:
        problems = fit_problems(state, shapes(probe.backbone), shown_as="backbone.")
        raise WeightsError(f"{source}: weights do not fit {backbone}: no head {head}.weight; " + "; ".join(problems))
    mapping = output_map(labels, int(weight.shape[0]))
    model: XrayClassifier = build_model(ModelSpec(backbone, mapping.labels, input_size, mean, std))
    state = select_rows(state, head, list(mapping.rows))
    problems = fit_problems(state, shapes(model.backbone), shown_as="backbone.")
    if problems:
        raise WeightsError(f"{source}: weights do not fit {backbone}: " + "; ".join(problems))
    model.backbone.load_state_dict(state)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return ImportedWeights(buf.getvalue(), ModelSpec(backbone, mapping.labels, input_size, mean, std), mapping,
                           notes)


# ---- ONNX / OpenVINO IR ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignModel:
    """An ONNX or IR model read from its bytes: its one input's layout facts and its outputs."""

    model: Any  # openvino.Model
    channels: int
    size: int | None
    """Static spatial side, or None when dynamic."""
    output_names: tuple[str, ...]


_LOCATION_ENTRY = re.compile(rb"\x0a\x08location\x12")


def onnx_external_data(model: bytes, source: str) -> list[str]:
    """The files an ONNX model keeps its tensors in (TensorProto.external_data `location` entries), read from the
    protobuf bytes without the onnx package. Each must be a plain relative path inside the model's folder:
    anything else (absolute, `..`, a drive) is refused naming it, before any file is read."""
    found: list[str] = []
    for match in _LOCATION_ENTRY.finditer(model):
        pos, length, shift = match.end(), 0, 0
        while pos < len(model):  # the value's length, a protobuf varint
            byte = model[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if not byte & 0x80:
                break
        location = model[pos:pos + length].decode("utf-8", "replace")
        parts = location.replace("\\", "/").split("/")
        if (not location or location.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts
                or any(p in ("", ".") for p in parts)):
            raise ValueError(f"{source}: external data location {location[:120]!r} is outside the model's folder; "
                             "tilescope reads external data only from files beside the model")
        if location not in found:
            found.append(location)
    return found


def _reason(exc: BaseException, tmp: str, main: str) -> str:
    """OpenVINO's error without its source-location lines ('Exception from src/...cpp:84:') and with the
    temporary folder named as the model, so the reason is what is left."""
    lines = [line.strip().replace(tmp + os.sep, "").replace(tmp, "") for line in str(exc).splitlines()]
    why = [line for line in lines if line and not re.match(r"Exception from src/.*:\d+:?$", line)]
    return " ".join(why)[:300] or f"{type(exc).__name__} without a message ({main})"


def read_foreign(files: dict[str, bytes], main: str, layout: InputLayout) -> ForeignModel:
    """Read an ONNX file (with its external data files, by their relative names) or an IR (.xml + .bin) with
    OpenVINO; check it has one 4-D image input."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        try:
            model = ov.Core().read_model(os.path.join(tmp, main))
        except RuntimeError as exc:
            raise ValueError(f"{main}: OpenVINO cannot read it ({_reason(exc, tmp, main)})") from exc
    if len(model.inputs) != 1:
        raise ValueError(f"{main}: the model has {len(model.inputs)} inputs; tilescope feeds one image tensor")
    shape = model.inputs[0].get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise ValueError(f"{main}: input shape {shape} is not 4-D ({layout.value.upper()}); an image model is")
    nchw = layout is InputLayout.NCHW
    c_dim, spatial = (shape[1], (shape[2], shape[3])) if nchw else (shape[3], (shape[1], shape[2]))
    if c_dim.is_dynamic or c_dim.get_length() not in (1, 3):
        raise ValueError(f"{main}: input {shape} has {c_dim} channels in {layout.value.upper()} layout; tilescope "
                         "feeds 1 (grey) or 3 (grey replicated); is --input-layout right?")
    sizes = {d.get_length() for d in spatial if d.is_static}
    if len(sizes) > 1:
        raise ValueError(f"{main}: input {shape} is not square; tilescope feeds S x S images")
    names = tuple(output_name_of(o, i) for i, o in enumerate(model.outputs))
    return ForeignModel(model, c_dim.get_length(), sizes.pop() if sizes else None, names)


def wrap_foreign(foreign: ForeignModel, output_name: str | None, labels: tuple[str, ...], size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], outputs: OutputKind, layout: InputLayout,
                 source: str) -> tuple[Any, OutputMap]:
    """The model with tilescope's input and output contract (module docstring); returns it and its OutputMap."""
    import openvino as ov
    import openvino.opset13 as ops

    model = foreign.model
    out = _pick_output(model, output_name, source)
    width = out.get_partial_shape()
    if width.rank.is_dynamic or width.rank.get_length() != 2 or width[1].is_dynamic:
        raise ValueError(f"{source}: the model's output has shape {width}; tilescope needs (N, outputs)")
    mapping = output_map(labels, width[1].get_length())

    pixels = ops.parameter([-1, 1, size, size], ov.Type.u8, name="pixels")
    pixels.output(0).get_tensor().set_names({"pixels"})
    c = foreign.channels
    x = ops.multiply(ops.convert(pixels, ov.Type.f32), np.float32(1.0 / 255.0))
    if c == 3:
        x = ops.concat([x, x, x], axis=1)
    mean_c = np.broadcast_to(np.asarray(mean, np.float32), (c,)).reshape(1, c, 1, 1)
    inv_std = (1.0 / np.broadcast_to(np.asarray(std, np.float32), (c,))).reshape(1, c, 1, 1)
    x = ops.multiply(ops.subtract(x, ops.constant(mean_c)), ops.constant(inv_std.astype(np.float32)))
    if layout is InputLayout.NHWC:
        x = ops.transpose(x, ops.constant(np.array([0, 2, 3, 1], np.int64)))
    old = model.get_parameters()[0]
    if old.get_element_type() != ov.Type.f32:
        x = ops.convert(x, old.get_element_type())
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(x.output(0))

    # `out` is the Result node's port: take what feeds it, and unhook the old Result from the graph.
    old_result = out.get_node()
    src = old_result.input_value(0)
    src.remove_target_input(old_result.input(0))
    src.get_tensor().set_names(set())
    y = src if src.get_element_type() == ov.Type.f32 else ops.convert(src, ov.Type.f32).output(0)
    if outputs is OutputKind.LOGITS:
        y = ops.sigmoid(y).output(0)
    if not mapping.identity:
        y = ops.gather(y, ops.constant(np.array(mapping.rows, np.int64)), ops.constant(np.int64(1))).output(0)
    result = ops.result(y)
    result.output(0).get_tensor().set_names({"probabilities"})
    wrapped = ov.Model([result], [pixels], model.get_friendly_name() or "imported")
    wrapped.validate_nodes_and_infer_types()
    check_outputs(wrapped, outputs, size, source)
    return wrapped, mapping


def output_name_of(output, index: int) -> str:
    """An output's first tensor name, or `output<i>` for an unnamed one (IR converted from PyTorch)."""
    names = sorted(output.get_names())
    return names[0] if names else f"output{index}"


def _pick_output(model, name: str | None, source: str):
    names = [output_name_of(o, i) for i, o in enumerate(model.outputs)]
    if name is None:
        if len(model.outputs) != 1:
            raise ValueError(f"{source}: the model has {len(names)} outputs ({', '.join(names)}); name the one "
                             "holding the findings with --output-name")
        return model.outputs[0]
    for i, o in enumerate(model.outputs):
        if name in o.get_names() or name == output_name_of(o, i):
            return o
    raise ValueError(f"{source}: no output named {name!r}; it has {', '.join(names)}")


def check_outputs(wrapped, outputs: OutputKind, size: int, source: str) -> None:
    """Run the wrapped model on a few images. With --outputs probabilities the model's own outputs must lie in
    [0, 1]; logits that all do (probabilities here all in [0.5, sigmoid(1)]) suggest a sigmoid inside already."""
    values = infer_compiled(compile_cpu(wrapped, IRPrecision.FP32), probe_images(size))
    lo, hi = float(values.min()), float(values.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{source}: the model gives NaN or infinite outputs on test images")
    if outputs is OutputKind.PROBABILITIES and (lo < -1e-6 or hi > 1 + 1e-6):
        raise ValueError(f"{source}: --outputs probabilities, but the model's outputs range over [{lo:.3g}, "
                         f"{hi:.3g}] on test images: they are logits; import with --outputs logits")
    if outputs is OutputKind.LOGITS and 0.5 - 1e-6 <= lo and hi <= 1.0 / (1.0 + math.exp(-1.0)) + 1e-6:
        print(f"note: {source}: every output lies in [0, 1] on test images; if the model ends in a sigmoid, "
              "import it with --outputs probabilities (a second sigmoid squeezes everything into 0.5-0.73)",
              flush=True)


def probe_images(size: int) -> np.ndarray:
    """(4, 1, S, S) uint8: black, white, mid-grey noise and a gradient."""
    rng = np.random.default_rng(0)
    gradient = np.tile(np.linspace(0, 255, size, dtype=np.float32), (size, 1)).astype(np.uint8)
    stack = [np.zeros((size, size), np.uint8), np.full((size, size), 255, np.uint8),
             rng.integers(64, 192, (size, size), dtype=np.uint8), gradient]
    return np.stack(stack)[:, None]
