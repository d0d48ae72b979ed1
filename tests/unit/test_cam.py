"""xray.models.cam: class activation maps of whole-image models, checked against answers known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xray.evaluation.ensemble import box_hits
from xray.metadata.labels import LABELS
from xray.metadata.nih import BBox
from xray.models.cam import CamMethod, MapGeometry, activation_maps, map_geometry, method_for, to_image
from xray.models.registry import BACKBONES, HEADS, ModelSpec, XrayClassifier, build_model

NODULE, MASS = LABELS.index("Nodule"), LABELS.index("Mass")


def _model(name: str, size: int, seed: int = 0, **spec) -> XrayClassifier:
    torch.manual_seed(seed)
    return build_model(ModelSpec(name, LABELS, size, **spec)).eval()


def _pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Fresh BatchNorm statistics are 0 / 1; give them values so the test exercises them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["dwsep_cnn", "resnet18", "densenet121"])
def test_cam_plus_bias_is_the_logit_for_gap_linear_heads(name):
    """CAM decomposes the logit: the spatial mean of each label's map plus the label's bias is its logit."""
    model = _model(name, 96, seed=1)
    _randomise_batchnorm(model, 2)
    pixels = _pixels(3, 96)
    cams = activation_maps(model, name, pixels, batch_size=2)
    assert cams.method == CamMethod.CAM == method_for(name)
    assert cams.maps.shape == (3, len(LABELS), 3, 3) and cams.maps.dtype == np.float32
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels).float()).numpy()
    bias = model.backbone.get_submodule(HEADS[name]).bias.detach().numpy()
    np.testing.assert_allclose(cams.maps.mean(axis=(2, 3)) + bias, logits, rtol=1e-5, atol=1e-5)
    assert np.ptp(cams.maps, axis=(2, 3)).min() > 0  # maps, not constants


def test_grad_cam_on_a_gap_linear_head_is_cam_over_the_cells():
    """Grad-CAM's weights on a GAP + Linear head are W / (h * w): the same map, scaled."""
    model = _model("dwsep_cnn", 128, seed=3)
    pixels = _pixels(2, 128, seed=4)
    cam = activation_maps(model, "dwsep_cnn", pixels)
    grad = activation_maps(model, "dwsep_cnn", pixels, method=CamMethod.GRAD_CAM)
    assert grad.method == CamMethod.GRAD_CAM and grad.geometry == cam.geometry
    np.testing.assert_allclose(grad.maps, cam.maps / 16.0, rtol=1e-4, atol=1e-6)


def test_grad_cam_runs_for_a_head_with_a_hidden_layer():
    """mobilenet_v3_small's head (Linear, Hardswish, Dropout, Linear) gets Grad-CAM; checked against the
    gradient taken by hand through features -> pool -> classifier."""
    model = _model("mobilenet_v3_small", 96, seed=5)
    pixels = _pixels(2, 96, seed=6)
    maps = activation_maps(model, "mobilenet_v3_small", pixels)
    assert maps.method == CamMethod.GRAD_CAM == method_for("mobilenet_v3_small")
    assert maps.maps.shape == (2, len(LABELS), 3, 3)
    net = model.backbone
    features = net.features(model.normalize(torch.from_numpy(pixels).float())).detach().requires_grad_(True)
    logits = net.classifier(torch.flatten(net.avgpool(features), 1))
    (grad,) = torch.autograd.grad(logits[:, NODULE].sum(), features)
    expected = (grad.mean(dim=(2, 3))[:, :, None, None] * features).sum(dim=1).detach().numpy()
    np.testing.assert_allclose(maps.maps[:, NODULE], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="CAM needs a global-average-pool"):
        activation_maps(model, "mobilenet_v3_small", pixels, method=CamMethod.CAM)


@pytest.mark.skipif("vgg16" not in BACKBONES, reason="the registry has no vgg16")
def test_vgg16_gets_grad_cam_centred_in_its_cells():
    """VGG-16's head is three Linear layers: Grad-CAM on its `features`; five 2x2 max pools centre each cell."""
    model = _model("vgg16", 64, seed=7)
    maps = activation_maps(model, "vgg16", _pixels(1, 64, seed=8))
    assert maps.method == CamMethod.GRAD_CAM == method_for("vgg16")
    assert maps.maps.shape == (1, len(LABELS), 2, 2) and np.isfinite(maps.maps).all()
    assert (maps.geometry.stride, maps.geometry.origin) == (32.0, 16.0)
    assert maps.geometry.edges().tolist() == [0.0, 32.0, 64.0]


def _blob_model(size: int) -> XrayClassifier:
    """A dwsep_cnn whose answer is known: every conv an average of its inputs (BatchNorm at its identity
    start, x/255 without a mean, so a black background is 0), Nodule's classifier row all +1 and Mass's all -1.
    Its features are a blurred picture of the bright pixels."""
    model = _model("dwsep_cnn", size, mean=(0.0,), std=(1.0,))
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
        head = model.backbone.get_submodule(HEADS["dwsep_cnn"])
        head.weight.zero_()
        head.bias.zero_()
        head.weight[NODULE] = 1.0
        head.weight[MASS] = -1.0
    return model


def test_cam_peaks_on_the_bright_blob_and_the_box_around_it_is_hit():
    size = 128
    model = _blob_model(size)
    pixels = np.zeros((3, 1, size, size), dtype=np.uint8)
    blobs = [(90, 30), (10, 100), (60, 62)]  # (row, col) of a 10 x 10 blob's top-left corner
    for k, (r, c) in enumerate(blobs):
        pixels[k, 0, r : r + 10, c : c + 10] = 255
    cams = activation_maps(model, "dwsep_cnn", pixels)
    g = cams.geometry
    assert (g.stride, g.origin, g.cells) == (32.0, 0.5, 4)  # five stride-2 'same' convs: centres at 32 r + 0.5
    edges = g.edges()
    for k, (r, c) in enumerate(blobs):
        expected = (np.searchsorted(edges, r + 5, side="right") - 1, np.searchsorted(edges, c + 5, side="right") - 1)
        nodule, mass = cams.maps[k, NODULE], cams.maps[k, MASS]
        assert np.unravel_index(np.argmax(nodule), nodule.shape) == expected, k
        assert np.unravel_index(np.argmin(mass), mass.shape) == expected, k
    # The same blobs as BBox_List boxes on 1024 x 1024 stored images: Nodule's peak is in each; Mass's is not.
    ids = ["a.png", "b.png", "c.png"]
    boxes = [BBox(i, label, c * 8.0, r * 8.0, 80.0, 80.0) for i, (r, c) in zip(ids, blobs, strict=True)
             for label in ("Nodule", "Mass")]
    hits = box_hits(cams.maps, size, edges, ids, boxes, dict.fromkeys(ids, (1024, 1024)))
    assert hits.labels == ("Nodule", "Mass") * 3
    assert hits.hit.tolist() == [True, False] * 3


@pytest.mark.parametrize(("name", "tolerance"), [("dwsep_cnn", 1), ("densenet121", 1), ("resnet18", 3)])
def test_traced_geometry_matches_where_each_cell_looks(name, tolerance):
    """Probe each backbone with averaging convs and a bright line at every row: the feature row that answers
    most is the cell whose traced region holds the line (ties and zero-padding blur the boundaries by a
    pixel or two). densenet121's 2x2 average pools move its centres by 14 px: its regions differ."""
    size = 128
    model = _model(name, size, mean=(0.0,), std=(1.0,))
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    geometry = map_geometry(model, name, size)
    assert geometry.stride == 32.0 and geometry.cells == 4
    assert geometry.origin == (14.5 if name == "densenet121" else 0.5)
    rows = np.arange(2, size - 2, 2)
    lines = torch.zeros(len(rows), 1, size, size)
    lines[torch.arange(len(rows)), 0, torch.from_numpy(rows)] = 255.0
    from xray.models.cam import _feature_fn

    with torch.no_grad():
        answer = _feature_fn(model, name)(model.normalize(lines)).sum(dim=(1, 3)).argmax(dim=1).numpy()
    edges = geometry.edges()
    expected = np.searchsorted(edges, rows + 0.5, side="right") - 1
    near_edge = np.abs((rows + 0.5)[:, None] - edges[None, 1:-1]).min(axis=1) <= tolerance
    assert (answer == expected)[~near_edge].all(), list(zip(rows, answer, expected, strict=True))
    assert (~near_edge).sum() > 0.8 * len(rows)


def test_to_image_interpolates_between_the_cell_centres():
    geometry = MapGeometry(input_size=128, stride=32.0, origin=0.5, cells=4)
    maps = np.zeros((1, 2, 4, 4), dtype=np.float32)
    maps[0, 0, 2, 1] = 1.0
    maps[0, 1] = 3.0
    image = to_image(maps, geometry, 128, 128)
    assert image.shape == (1, 2, 128, 128) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, 1], 3.0, rtol=1e-6)  # a constant map stays constant
    # The peak is at its cell's centre (row 64.5, col 32.5 in pixel centres: pixel 64, 32) and falls off linearly.
    assert np.unravel_index(np.argmax(image[0, 0]), (128, 128)) == (64, 32)
    assert image[0, 0, 64, 32] == pytest.approx(1.0)
    assert image[0, 0, 64, 48] == pytest.approx(0.5)  # half way to the next centre (col 64.5)
    assert image[0, 0, 64, 0] == pytest.approx(0.0)
    # Non-square stored images (the input squashed both ways): same peak, scaled per axis.
    stored = to_image(maps, geometry, 1024, 512)
    assert stored.shape == (1, 2, 1024, 512)
    # the centre (64.5, 32.5) is at stored pixels (516, 130): between pixel centres 515.5 / 516.5 and 129.5 / 130.5
    assert np.unravel_index(np.argmax(stored[0, 0]), (1024, 512)) in {(515, 129), (515, 130), (516, 129), (516, 130)}
    assert stored[0, 0, 515:517, 129:131] == pytest.approx(np.full((2, 2), stored[0, 0].max()))


def test_bad_inputs_are_refused_with_their_cause():
    model = _model("dwsep_cnn", 64)
    with pytest.raises(ValueError, match=r"pixels must be \(N, 1, S, S\)"):
        activation_maps(model, "dwsep_cnn", np.zeros((2, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="N >= 1"):
        activation_maps(model, "dwsep_cnn", np.zeros((0, 1, 64, 64), dtype=np.uint8))
