"""xray.models.weights: state dicts as projects save them, renamed to a backbone's keys (numpy arrays stand in for
tensors: the rules touch names only)."""

from __future__ import annotations

import numpy as np
import pytest

from xray.models.weights import (
    WeightsError,
    best_prefix,
    fit_problems,
    normalise_state,
    old_densenet_name,
    select_rows,
    unwrap,
    widen_grey_conv,
)

# A few keys of torchvision's DenseNet-121, with shapes.
TARGET = {
    "features.conv0.weight": (64, 3, 7, 7),
    "features.norm0.weight": (64,),
    "features.denseblock1.denselayer1.norm1.weight": (64,),
    "features.denseblock1.denselayer1.norm1.running_var": (64,),
    "features.denseblock1.denselayer1.conv2.weight": (32, 128, 3, 3),
    "classifier.weight": (14, 1024),
    "classifier.bias": (14,),
}


def arrays(target=TARGET, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in target.items()}


def chexnet_style(state: dict) -> dict:
    """arnoweng/CheXNet: DataParallel(DenseNet121 attribute `densenet121`), torchvision < 0.3 names,
    Sequential(Linear, Sigmoid) head, saved beside the epoch and optimizer."""
    renamed = {}
    for k, v in state.items():
        k = k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.").replace("classifier.", "classifier.0.")
        renamed[f"module.densenet121.{k}"] = v
    return {"epoch": 7, "arch": "DenseNet-121", "state_dict": renamed, "optimizer": {"state": {}}}


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {f"module.{k}": v for k, v in s.items()},
    lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
    lambda s: {"state_dict": s, "epoch": 3},
    lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "optimizer": {"lr": 0.1}},
    lambda s: {"checkpoint": 1, "model_state_dict": s},
    chexnet_style,
], ids=["raw", "module", "compiled", "state_dict", "model+module", "model_state_dict", "chexnet"])
def test_every_saved_form_comes_back_under_the_target_names_with_the_same_arrays(wrap):
    state = arrays()
    out = normalise_state(wrap(state), TARGET, "w.pt")
    assert set(out.state) == set(TARGET)
    for k, v in state.items():
        assert out.state[k] is v  # renamed, never copied or changed
    assert fit_problems(out.state, TARGET) == []


def test_chexnet_notes_say_what_was_renamed():
    notes = normalise_state(chexnet_style(arrays()), TARGET, "w.pt").notes
    assert notes == ("stripped 'module.'", "old torchvision DenseNet names (norm.1 -> norm1, conv.2 -> conv2)",
                     "stripped 'densenet121.'", "classifier.0.bias -> classifier.bias",
                     "classifier.0.weight -> classifier.weight")


def test_old_densenet_names():
    assert old_densenet_name("features.denseblock2.denselayer12.norm.2.running_mean") == \
        "features.denseblock2.denselayer12.norm2.running_mean"
    assert old_densenet_name("features.norm0.weight") == "features.norm0.weight"
    assert old_densenet_name("features.transition1.conv.weight") == "features.transition1.conv.weight"


def test_best_prefix_needs_more_matches_than_no_prefix():
    target = {"a.w", "b.w"}
    assert best_prefix(["net.a.w", "net.b.w"], target) == "net."
    assert best_prefix(["a.w", "b.w", "x.a.w"], target) == ""
    assert best_prefix(["q.w"], target) == ""


def test_what_does_not_fit_is_named():
    state = arrays()
    state["classifier.weight"] = state["classifier.weight"][:3]
    del state["features.norm0.weight"]
    state["extra.weight"] = np.zeros(2)
    problems = fit_problems(state, TARGET, shown_as="backbone.")
    assert problems == ["missing 1 keys (e.g. ['backbone.features.norm0.weight'])",
                        "unexpected 1 keys (e.g. ['backbone.extra.weight'])",
                        "shape mismatch ['backbone.classifier.weight (3, 1024) vs (14, 1024)']"]


def test_not_a_state_dict_is_refused_naming_the_file():
    with pytest.raises(WeightsError, match=r"^w.pt: expected a state_dict, found list"):
        unwrap([1, 2], "w.pt")
    with pytest.raises(WeightsError, match=r"^w.pt: a dict \(epoch, optimizer\) with no state dict in it"):
        unwrap({"epoch": 1, "optimizer": {"lr": 1}}, "w.pt")
    with pytest.raises(WeightsError, match="several keys map to the same name"):
        normalise_state({"denselayer1.norm.1.weight": np.zeros(1), "denselayer1.norm1.weight": np.zeros(1)},
                        {"denselayer1.norm1.weight": (1,)}, "w.pt")


def test_select_rows_keeps_the_head_outputs_in_the_order_given():
    state = arrays()
    out = select_rows(state, "classifier", [13, 0, 5])
    np.testing.assert_array_equal(out["classifier.weight"], state["classifier.weight"][[13, 0, 5]])
    np.testing.assert_array_equal(out["classifier.bias"], state["classifier.bias"][[13, 0, 5]])
    assert out["features.conv0.weight"] is state["features.conv0.weight"]


def test_a_grey_first_convolution_is_widened_exactly():
    state = arrays({**TARGET, "features.conv0.weight": (64, 1, 7, 7)})
    grey = state["features.conv0.weight"].copy()
    assert widen_grey_conv(state, TARGET) == "features.conv0.weight"
    wide = state["features.conv0.weight"]
    assert wide.shape == (64, 3, 7, 7)
    np.testing.assert_allclose(wide.sum(axis=1, keepdims=True), grey, rtol=1e-6)  # same grey fed 3 times
    assert widen_grey_conv(state, TARGET) is None  # already 3 channels
