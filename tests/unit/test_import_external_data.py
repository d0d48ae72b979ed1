"""ONNX external data beside the model is imported (and only from the model's folder), an IR whose .bin links out
of its folder is refused, and OpenVINO's refusal keeps its reason (no Ray needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from jobs import import_model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _tiny_onnx() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["Y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 32, 32])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _import(path: Path, out: Path) -> int:
    return import_model.main(["--onnx", str(path), "--labels", "Mass", "Nodule", "--mean", "0.5", "--std", "0.25",
                              "--out", str(out)])


def test_external_data_beside_the_model_imports_like_the_embedded_model(tmp_path):
    (tmp_path / "embedded").mkdir()
    (tmp_path / "external").mkdir()
    onnx.save_model(_tiny_onnx(), str(tmp_path / "embedded" / "tiny.onnx"))
    onnx.save_model(_tiny_onnx(), str(tmp_path / "external" / "tiny.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="tiny.onnx.data", size_threshold=0)
    assert (tmp_path / "external" / "tiny.onnx.data").stat().st_size == 2 * 9 * 4
    assert _import(tmp_path / "embedded" / "tiny.onnx", tmp_path / "a") == 0
    assert _import(tmp_path / "external" / "tiny.onnx", tmp_path / "b") == 0
    assert (tmp_path / "a" / "fp32" / "model.bin").read_bytes() == (tmp_path / "b" / "fp32" / "model.bin").read_bytes()


@pytest.mark.parametrize("location", ["../secret.data", "/etc/passwd", "sub/../../secret.data"])
def test_external_data_outside_the_folder_is_refused_before_reading(tmp_path, capsys, location):
    (tmp_path / "secret.data").write_bytes(b"\0" * 72)
    folder = tmp_path / "model"
    folder.mkdir()
    model = _tiny_onnx()
    onnx.save_model(model, str(folder / "tiny.onnx"), save_as_external_data=True, location="tiny.onnx.data",
                    size_threshold=0)
    data = (folder / "tiny.onnx").read_bytes().replace(b"\x12\x0etiny.onnx.data",
                                                       bytes([0x12, len(location)]) + location.encode())
    (folder / "tiny.onnx").write_bytes(data)
    assert _import(folder / "tiny.onnx", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"external data location {location!r} is outside the model's folder" in err
    assert not (tmp_path / "out").exists()


def test_an_ir_bin_linking_out_of_its_folder_is_refused(tmp_path, capsys):
    import openvino as ov

    onnx.save_model(_tiny_onnx(), str(tmp_path / "tiny.onnx"))
    folder = tmp_path / "ir"
    folder.mkdir()
    ov.save_model(ov.Core().read_model(str(tmp_path / "tiny.onnx")), str(folder / "model.xml"))
    os.replace(folder / "model.bin", tmp_path / "elsewhere.bin")
    os.symlink(tmp_path / "elsewhere.bin", folder / "model.bin")
    code = import_model.main(["--ir", str(folder / "model.xml"), "--labels", "Mass", "Nodule", "--mean", "0.5",
                              "--std", "0.25", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "a symbolic link to" in err and "outside the model's folder" in err
    assert not (tmp_path / "out").exists()


def test_openvino_refusals_keep_their_reason(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model at all")
    assert _import(tmp_path / "bad.onnx", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "OpenVINO cannot read it (" in err and "Unable to read the model" in err
    assert "core.cpp" not in err and "/tmp" not in err.split("OpenVINO cannot read it")[1]
