"""`tilescope import --weights`: every way a DenseNet-121 is saved in the wild comes in as the same checkpoint;
a pickled whole model is refused with how to save a state dict, and nothing is written (no Ray needed)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save as safetensors_bytes

from jobs import import_model
from storage.artifacts import open_typed
from xray.metadata.labels import LABELS
from xray.metadata.manifests import ArtifactKind
from xray.models.registry import build_model, load_state


@pytest.fixture(scope="module")
def densenet() -> torch.nn.Module:
    """torchvision's DenseNet-121 with a 14-output head, random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = torchvision.models.densenet121(weights=None, num_classes=len(LABELS))
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, 64, 64))
    return net.eval()


def old_names(key: str) -> str:
    """torchvision < 0.3 DenseNet names: denselayerN.norm1 -> denselayerN.norm.1."""
    return re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key)


def saved(state: dict, form: str) -> bytes:
    if form == "safetensors":
        return safetensors_bytes({k: v.contiguous() for k, v in state.items()})
    objects = {
        "raw": state,
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
        "state_dict": {"state_dict": state, "epoch": 12, "best_auroc": 0.84},
        "model": {"model": state, "optimizer": {"lr": 1e-4}},
        # arnoweng/CheXNet's model.pth.tar: DataParallel around a module holding `densenet121`, old names, and a
        # Sequential(Linear, Sigmoid) head
        "chexnet": {"state_dict": {f"module.densenet121.{old_names(k)}".replace(".classifier.", ".classifier.0."): v
                                   for k, v in state.items()}, "epoch": 7, "arch": "DenseNet-121"},
    }
    buf = io.BytesIO()
    torch.save(objects[form], buf)
    return buf.getvalue()


@pytest.mark.parametrize("form", ["raw", "dataparallel", "state_dict", "model", "chexnet", "safetensors"])
def test_each_saved_form_imports_to_the_original_weights(form, densenet, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(saved(densenet.state_dict(), form))
    out = str(tmp_path / "ckpt")
    summary = import_model.run(import_model.ImportConfig(out=out, weights=str(path), backbone="densenet121",
                                                         input_size=64))
    assert (summary.kind, summary.model, summary.labels) == ("checkpoint", "densenet121", LABELS)
    artifact, manifest = open_typed(out, None, "--checkpoint", ArtifactKind.CHECKPOINT)
    assert manifest.split is None and manifest.source["format"] == ("safetensors" if form == "safetensors"
                                                                     else "pytorch")
    model = build_model(manifest.model)
    load_state(model, artifact.read("model.pt"), out)
    for key, value in densenet.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_outputs_in_another_order_and_a_subset_become_chexnet_columns(densenet, tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(saved(densenet.state_dict(), "raw"))
    # The model's 14 outputs named in reverse order, two of them without a tilescope column.
    names = ["-" if label in ("Edema", "Mass") else label for label in reversed(LABELS)]
    out = str(tmp_path / "ckpt")
    summary = import_model.run(import_model.ImportConfig(out=out, weights=str(path), backbone="densenet121",
                                                         input_size=64, labels=tuple(names)))
    kept = tuple(label for label in LABELS if label not in ("Edema", "Mass"))
    assert summary.labels == kept
    artifact, manifest = open_typed(out, None, "--checkpoint", ArtifactKind.CHECKPOINT)
    model = build_model(manifest.model)
    load_state(model, artifact.read("model.pt"), out)
    model.eval()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 1, 64, 64), dtype=np.uint8))
    normalised = (x.float().expand(-1, 3, -1, -1) / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        original = densenet(normalised)
        imported = model(x)
    rows = [names.index(label) for label in kept]  # the output of the original model holding each column
    torch.testing.assert_close(imported, original[:, rows], rtol=0, atol=1e-5)
    order = list(reversed(LABELS))
    assert manifest.source["outputs"]["dropped"] == sorted([order.index("Mass"), order.index("Edema")])


def test_a_grey_model_with_its_own_normalisation(tmp_path):
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # trained on one grey channel
    net.eval()
    path = tmp_path / "grey.pt"
    torch.save(net.state_dict(), path)
    out = str(tmp_path / "ckpt")
    import_model.run(import_model.ImportConfig(out=out, weights=str(path), backbone="resnet18", input_size=64,
                                               labels=("Nodule", "Mass", "Hernia"), mean=(0.5,), std=(0.25,)))
    artifact, manifest = open_typed(out, None, "--checkpoint", ArtifactKind.CHECKPOINT)
    assert (manifest.model.mean, manifest.model.std) == ((0.5,), (0.25,))
    model = build_model(manifest.model)
    load_state(model, artifact.read("model.pt"), out)
    model.eval()
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 1, 64, 64), dtype=np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x.float() / 255 - 0.5) / 0.25)[:, [1, 0, 2]], rtol=0, atol=1e-4)


def test_a_pickled_whole_model_is_refused_with_how_to_save_weights(densenet, tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(densenet, path)
    out = tmp_path / "ckpt"
    assert import_model.main(["--weights", str(path), "--backbone", "densenet121", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "torchvision.models.densenet.DenseNet" in err and "weights_only=True" in err
    assert "torch.save(model.state_dict(), 'weights.pt')" in err
    assert not out.exists()


def test_torchscript_is_refused_with_how_to_save_weights(tmp_path, capsys):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    assert import_model.main(["--weights", str(path), "--backbone", "dwsep_cnn", "--out", str(tmp_path / "c")]) == 2
    assert "TorchScript archive" in capsys.readouterr().err


def test_flags_are_checked_together(tmp_path):
    with pytest.raises(ValueError) as info:
        import_model.run(import_model.ImportConfig(out=str(tmp_path / "c"), weights="w.pt", onnx="m.onnx",
                                                   mean=(0.5, 0.4), std=("x",), outputs="raw"))
    msg = str(info.value)
    assert "give exactly one of --weights, --onnx, --ir (got --weights, --onnx)" in msg
    assert "--weights needs --backbone" in msg and "--std x: not numbers" in msg
    assert "--outputs 'raw' is not one of logits, probabilities" in msg
    assert "--mean and --std go together, one value or three each" in msg


class _Payload:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_payload_is_refused_keeping_its_reason(tmp_path, capsys):
    path = tmp_path / "payload.pt"
    torch.save({"classifier.weight": torch.zeros(2, 2), "x": _Payload()}, path)
    out = tmp_path / "ckpt"
    assert import_model.main(["--weights", str(path), "--backbone", "dwsep_cnn", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "system" in err and "pickled Python objects" in err and "refuses" in err  # the reason, not cut
    assert "weights_only` set to `False`" not in err  # torch's advice to load it anyway is not repeated
    assert not out.exists()
