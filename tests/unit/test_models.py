"""xray.models.registry: the registry, the in-graph pixel normalisation, weight loading and torchvision's cache."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from torch import nn

from xray.metadata.labels import LABELS
from xray.models.registry import (
    BACKBONES,
    HEADS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    PixelNormalize,
    WithSigmoid,
    XrayClassifier,
    build_model,
    check_name,
    load_state,
    torchvision_cache_path,
)

UNPICKLED: list[str] = []


def _record_unpickle() -> str:
    UNPICKLED.append("ran")
    return "payload"


class CodeOnLoad:
    """Unpickling this runs code; weights_only=True must refuse it."""

    def __reduce__(self):
        return (_record_unpickle, ())


def spec(name: str, labels: tuple[str, ...] = LABELS, size: int = 64) -> ModelSpec:
    return ModelSpec(name, labels, size)


def fresh(name: str, seed: int, labels: tuple[str, ...] = LABELS) -> XrayClassifier:
    torch.manual_seed(seed)
    return build_model(spec(name, labels)).eval()


def to_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def pixels(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)


# ---- registry ----------------------------------------------------------------------------------------------


def test_registry_names():
    assert sorted(BACKBONES) == ["densenet121", "dwsep_cnn", "mobilenet_v3_small", "resnet18", "vgg16"]
    assert set(HEADS) == set(BACKBONES)


@pytest.fixture(scope="module")
def built() -> dict[str, XrayClassifier]:
    """Each registry model built once (densenet121 alone takes seconds to initialise on 2 cores)."""
    torch.manual_seed(0)
    return {name: build_model(spec(name)).eval() for name in sorted(BACKBONES)}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_registry_name_builds_with_one_output_per_label(name, built):
    model = built[name]
    assert isinstance(model, XrayClassifier)
    assert isinstance(model.normalize, PixelNormalize)
    heads = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    assert heads[-1].out_features == 14


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_heads_name_the_last_linear_with_one_row_per_label(name, built):
    head = built[name].backbone.get_submodule(HEADS[name])
    assert head is [m for m in built[name].backbone.modules() if isinstance(m, nn.Linear)][-1]
    assert head.out_features == 14


def test_vgg16_at_a_small_input_runs_in_torch_and_as_an_fp32_ir():
    from actors.openvino_ir import export_fp32, infer_probs

    torch.manual_seed(0)
    model = build_model(spec("vgg16", ("Effusion", "Mass", "Nodule"), size=32)).eval()
    assert isinstance(model.backbone.classifier[6], nn.Linear) and model.backbone.classifier[6].out_features == 3
    assert model.backbone.classifier[6].in_features == 4096
    x = pixels(n=3, size=32, seed=7)
    with torch.no_grad():
        logits = model(x)
        probs = torch.sigmoid(logits).numpy()
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    ir = infer_probs(export_fp32(model, 32), x.numpy())  # f32 hint: the same numbers on every CPU
    assert ir.shape == (3, 3)
    np.testing.assert_allclose(ir, probs, atol=1e-4)


def test_vgg16_checkpoints_as_saved_elsewhere_fit_without_renaming_the_head(built):
    from xray.models.registry import shapes
    from xray.models.weights import fit_problems, normalise_state

    target = shapes(built["vgg16"].backbone)
    assert {"features.0.weight", "classifier.0.weight", "classifier.3.weight", "classifier.6.weight"} <= set(target)
    # torchvision's names under DataParallel's prefix inside a training checkpoint (values: shape-only stand-ins)
    saved = {"epoch": 3, "state_dict": {f"module.{k}": np.broadcast_to(np.float32(0), shape)
                                        for k, shape in target.items()}}
    normalised = normalise_state(saved, target, "vgg.pth.tar")
    assert set(normalised.state) == set(target) and fit_problems(normalised.state, target) == []
    assert normalised.notes == ("stripped 'module.'",)  # classifier.N keys stay as they are


def test_label_count_sets_the_head():
    heads = [m for m in build_model(spec("dwsep_cnn", ("a", "b", "c"))).modules() if isinstance(m, nn.Linear)]
    assert [h.out_features for h in heads] == [3]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_forward_on_uint8_pixels_gives_one_logit_per_label(name, built):
    with torch.no_grad():
        out = built[name](pixels())
    assert out.shape == (2, 14)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # The two different images must not collapse to the same output.
    assert not torch.equal(out[0], out[1])


def test_uint8_and_float_pixels_give_the_same_output():
    model = fresh("dwsep_cnn", seed=0)
    x = pixels(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.float()))


def test_dwsep_cnn_is_small():
    n = sum(p.numel() for p in build_model(spec("dwsep_cnn")).parameters())
    assert 20_000 < n < 40_000  # 26,190 with 14 labels


def test_with_sigmoid_gives_probabilities_of_the_logits():
    model = fresh("dwsep_cnn", seed=0)
    x = pixels(seed=2)
    with torch.no_grad():
        probs = WithSigmoid(model)(x)
        torch.testing.assert_close(probs, torch.sigmoid(model(x)))
    assert ((probs > 0) & (probs < 1)).all()


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg19'; choose one of: densenet121, dwsep_cnn, "
                                         "mobilenet_v3_small, resnet18, vgg16"):
        build_model(spec("vgg19"))
    with pytest.raises(ValueError, match="unknown model"):
        check_name("")
    check_name("resnet18")  # a known name passes silently


# ---- PixelNormalize ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", range(3))
def test_pixel_value_255_times_mean_maps_to_zero_in_its_channel(channel):
    value = 255.0 * IMAGENET_MEAN[channel]
    out = PixelNormalize()(torch.full((2, 1, 5, 7), value))
    assert out.shape == (2, 3, 5, 7)
    torch.testing.assert_close(out[:, channel], torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
    others = [c for c in range(3) if c != channel]
    assert (out[:, others].abs() > 1e-3).all()


def test_pixel_normalize_matches_the_imagenet_formula():
    x = pixels(n=3, size=8, seed=3)
    out = PixelNormalize()(x)
    grey = x.float() / 255.0
    for c in range(3):
        torch.testing.assert_close(out[:, c], ((grey - IMAGENET_MEAN[c]) / IMAGENET_STD[c])[:, 0])
    # Extremes: 0 and 255.
    ends = PixelNormalize()(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
    for c in range(3):
        assert ends[0, c].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], rel=1e-5)
        assert ends[1, c].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-5)


def test_pixel_normalize_buffers_travel_with_the_state_dict():
    keys = set(build_model(spec("dwsep_cnn")).state_dict())
    assert {"normalize.mean", "normalize.inv_std"} <= keys


# ---- load_state --------------------------------------------------------------------------------------------


def test_load_state_round_trip_gives_identical_outputs():
    src, dst = fresh("dwsep_cnn", seed=0), fresh("dwsep_cnn", seed=1)
    # Make the BatchNorm running statistics non-trivial so that they have to travel too.
    src.train()
    with torch.no_grad():
        src(pixels(n=8, seed=4))
    src.eval()
    x = pixels(seed=5)
    with torch.no_grad():
        assert not torch.equal(src(x), dst(x))
        load_state(dst, to_bytes(src.state_dict()), "ckpt/model.pt")
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


@pytest.mark.parametrize("wrap", ["module_prefix", "state_dict", "model", "state_dict_and_module_prefix"])
def test_load_state_unwraps_checkpoints(wrap):
    src, dst = fresh("dwsep_cnn", seed=0), fresh("dwsep_cnn", seed=1)
    state = src.state_dict()
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "state_dict":
        obj = {"state_dict": state, "epoch": 3}
    elif wrap == "model":
        obj = {"model": state, "optimizer": {"lr": 0.1}}
    else:
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    load_state(dst, to_bytes(obj), "ckpt")
    x = pixels(seed=6)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_load_state_weights_of_another_model_do_not_fit():
    dst = fresh("dwsep_cnn", seed=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    data = to_bytes(build_model(spec("resnet18")).state_dict())
    with pytest.raises(ValueError) as info:
        load_state(dst, data, "s3://b/resnet.pt")
    msg = str(info.value)
    assert msg.startswith("s3://b/resnet.pt: ")
    assert "do not fit" in msg
    assert "missing" in msg and "backbone.0.weight" in msg  # a dwsep_cnn key
    assert "unexpected" in msg and "backbone.bn1" in msg  # a resnet18 key
    for k, v in dst.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k


def test_load_state_reports_shape_mismatch():
    dst = fresh("dwsep_cnn", seed=1)
    data = to_bytes(fresh("dwsep_cnn", seed=0, labels=("a", "b", "c")).state_dict())
    pattern = r"do not fit.*shape mismatch.*backbone\.\d+\.weight \(3, 128\) vs \(14, 128\)"
    with pytest.raises(ValueError, match=pattern):
        load_state(dst, data, "ckpt")


def test_load_state_garbage_bytes():
    with pytest.raises(ValueError, match="^weights.bin: not a loadable PyTorch weights file"):
        load_state(fresh("dwsep_cnn", 0), b"\x00garbage, not a zip or a pickle", "weights.bin")
    with pytest.raises(ValueError, match="not a loadable"):
        load_state(fresh("dwsep_cnn", 0), b"", "empty.pt")


def test_load_state_refuses_pickles_that_run_code():
    UNPICKLED.clear()
    data = to_bytes({"state_dict": CodeOnLoad()})
    with pytest.raises(ValueError, match="not a loadable"):
        load_state(fresh("dwsep_cnn", 0), data, "evil.pt")
    assert UNPICKLED == []


def test_load_state_non_dict():
    with pytest.raises(ValueError, match="expected a state_dict, found Tensor"):
        load_state(fresh("dwsep_cnn", 0), to_bytes(torch.zeros(3)), "t.pt")


# ---- ImageNet weights from torchvision's cache -------------------------------------------------------------


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch) -> str:
    """torch.hub's directory moved to an empty tmp dir (TORCH_HOME, with no set_dir override active)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = str(tmp_path / "torch" / "hub")
    assert torch.hub.get_dir() == hub
    return hub


def resnet18_url() -> str:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.url


def test_imagenet_backbone_missing_from_cache_names_the_path(empty_hub):
    expected = os.path.join(empty_hub, "checkpoints", os.path.basename(resnet18_url()))
    assert torchvision_cache_path(resnet18_url()) == expected
    with pytest.raises(FileNotFoundError) as info:
        build_model(spec("resnet18"), imagenet_backbone=True)
    assert expected in str(info.value)
    assert "--imagenet-backbone" in str(info.value)


def test_imagenet_backbone_is_loaded_from_the_cache(empty_hub):
    from torchvision.models import resnet18

    torch.manual_seed(123)
    imagenet = resnet18(weights=None)  # torchvision's own key names, 1000-class head
    path = torchvision_cache_path(resnet18_url())
    os.makedirs(os.path.dirname(path))
    torch.save(imagenet.state_dict(), path)

    torch.manual_seed(0)
    model = build_model(spec("resnet18"), imagenet_backbone=True)
    torch.manual_seed(0)
    scratch = build_model(spec("resnet18"))
    assert torch.equal(model.backbone.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_var, imagenet.bn1.running_var)
    assert not torch.equal(scratch.backbone.conv1.weight, imagenet.conv1.weight)
    # The head keeps our label count and our (seeded) initialisation.
    assert model.backbone.fc.weight.shape == (14, 512)
    assert torch.equal(model.backbone.fc.weight, scratch.backbone.fc.weight)


def test_vgg16_imagenet_backbone_is_loaded_from_the_cache_keeping_our_head(empty_hub):
    from torchvision.models import VGG16_Weights

    path = torchvision_cache_path(VGG16_Weights.IMAGENET1K_V1.url)
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(5)
    # torchvision's key names and 1000-class head; only a few tensors, so the test stays small (every key that
    # fits is loaded, the others keep their initialisation).
    first, hidden = torch.randn(64, 3, 3, 3), torch.randn(4096, 4096) * 0.01
    torch.save({"features.0.weight": first, "classifier.3.weight": hidden,
                "classifier.6.weight": torch.randn(1000, 4096)}, path)
    torch.manual_seed(0)
    model = build_model(spec("vgg16", size=32), imagenet_backbone=True)
    assert torch.equal(model.backbone.features[0].weight, first)
    assert torch.equal(model.backbone.classifier[3].weight, hidden)
    assert model.backbone.classifier[6].weight.shape == (14, 4096)  # ours, not ImageNet's 1000 rows


def test_imagenet_backbone_for_a_model_without_imagenet_weights(empty_hub):
    with pytest.raises(ValueError, match="'dwsep_cnn' has no ImageNet weights"):
        build_model(spec("dwsep_cnn"), imagenet_backbone=True)
