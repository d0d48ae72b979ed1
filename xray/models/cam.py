"""Class activation maps of a single whole-image model: where in the image its evidence for each label lies.

Two methods, chosen by the backbone's head (xray.models.registry.HEADS names each head's last Linear):

- **CAM** (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization") for backbones whose head
  is global average pooling + one Linear (dwsep_cnn, resnet18, densenet121): the last conv feature map F
  (K, h, w) weighted by the label's classifier row, map_l = sum_k W[l, k] * F[k]. The logit decomposes
  exactly: mean over (h, w) of map_l + bias_l == logit_l.
- **Grad-CAM** (Selvaraju et al. 2017) for any other head (mobilenet_v3_small's hidden layer, a VGG's FC
  layers): F weighted by the spatial mean of d logit_l / d F. For a GAP + Linear head those weights are
  W[l, k] / (h * w), so Grad-CAM there is CAM / (h * w): the two agree on where the peak is.

Both maps are returned before any ReLU (Grad-CAM's paper applies one for display): the peak is the same
wherever a label has positive evidence, and stays defined where it has none.

Where a map's cells sit (MapGeometry) is traced from the layers, not assumed to be S / w pixel squares: a
PyTorch conv or pool with kernel k, stride s, padding p centres output i on input s * i + (k - 1) / 2 - p,
so five "same"-padded stride-2 layers put feature cell r's centre at 32 r + 0.5 px, half a cell above and left
of the square [32 r, 32 r + 32) (densenet121's 2x2 average pools move it back 14 px; VGG's 2x2 max pools 15.5 px,
to the square's centre). A
box is scored against the pixels nearest each cell's centre (`MapGeometry.edges`), and `to_image`
interpolates between the traced centres.

torch only: no Ray, OpenVINO or storage. Runs in float32 in eval mode whatever the model was trained in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from xray.models.registry import HEADS, XrayClassifier


class CamMethod(enum.StrEnum):
    CAM = "cam"
    """Classifier rows over the last conv features (GAP + Linear heads)."""
    GRAD_CAM = "grad-cam"
    """Gradient-weighted last conv features (any head)."""


def _dwsep_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net[:7](x)  # stem + four separable blocks; 7, 8, 9 are pool, flatten, Linear


def _resnet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _densenet_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return functional.relu(net.features(x))  # torchvision's forward applies this ReLU before the pool


# Backbones whose head is global average pool + the one Linear HEADS names: their pooled feature map.
GAP_LINEAR_FEATURES: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "dwsep_cnn": _dwsep_features,
    "resnet18": _resnet_features,
    "densenet121": _densenet_features,
}
# Every other backbone: the module whose output is the last conv feature map (torchvision's `features` for
# mobilenet_v3_small and VGG: its last max pool included, as torchvision-based Grad-CAMs take it), for Grad-CAM.
FEATURE_MODULES = {"mobilenet_v3_small": "features", "vgg16": "features"}
DEFAULT_FEATURE_MODULE = "features"


def method_for(backbone: str) -> CamMethod:
    """The method that runs for a backbone: CAM where its head is GAP + one Linear, Grad-CAM elsewhere."""
    return CamMethod.CAM if backbone in GAP_LINEAR_FEATURES else CamMethod.GRAD_CAM


@dataclass(frozen=True)
class MapGeometry:
    """Where a map's cells sit in the model's S x S input, per axis: cell r's centre at origin + r * stride
    pixels, in continuous coordinates (pixel j spans [j, j + 1)); `cells` per side."""

    input_size: int
    stride: float
    origin: float
    cells: int

    def centres(self) -> np.ndarray:
        """(cells,) input pixels of the cell centres."""
        return self.origin + self.stride * np.arange(self.cells)

    def edges(self) -> np.ndarray:
        """(cells + 1,) boundaries in input pixels: 0, the midpoints between neighbouring centres, S. Cell r
        owns [edges[r], edges[r + 1]): the pixels nearer its centre than any other's."""
        mids = np.clip(self.centres()[:-1] + self.stride / 2.0, 0.0, float(self.input_size))
        return np.concatenate([[0.0], mids, [float(self.input_size)]])


@dataclass(frozen=True)
class ActivationMaps:
    """maps (N, L, h, w) float32 over the model's S x S input (h == w: square inputs), the method that ran, and
    where the cells sit."""

    maps: np.ndarray
    method: CamMethod
    geometry: MapGeometry


def activation_maps(model: XrayClassifier, backbone: str, pixels: np.ndarray, batch_size: int = 32,
                    method: CamMethod | None = None) -> ActivationMaps:
    """(N, 1, S, S) uint8 pixels -> ActivationMaps with maps (N, L, h, w) float32, one map per label.

    `backbone` is the registry name the model was built from (ModelSpec.name). `method` defaults to
    method_for(backbone); CAM on a backbone whose head is not GAP + Linear is refused. Puts the model in
    float32 eval mode.
    """
    chosen = method or method_for(backbone)
    if chosen == CamMethod.CAM and backbone not in GAP_LINEAR_FEATURES:
        raise ValueError(f"CAM needs a global-average-pool + Linear head; {backbone!r} has another head "
                         f"(CAM runs for {', '.join(sorted(GAP_LINEAR_FEATURES))}); use Grad-CAM for it")
    if pixels.ndim != 4 or pixels.shape[1] != 1 or pixels.shape[2] != pixels.shape[3] or pixels.shape[0] == 0:
        raise ValueError(f"pixels must be (N, 1, S, S) with N >= 1; got {pixels.shape}")
    model = model.float().eval()
    one = _cam_batch if chosen == CamMethod.CAM else _grad_cam_batch
    maps = [one(model, backbone, torch.from_numpy(np.ascontiguousarray(pixels[s : s + batch_size])).float())
            for s in range(0, pixels.shape[0], batch_size)]
    return ActivationMaps(np.concatenate(maps).astype(np.float32), chosen,
                          map_geometry(model, backbone, int(pixels.shape[-1])))


def _feature_fn(model: XrayClassifier, backbone: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Normalised input (B, 3, S, S) -> the last conv feature map (B, K, h, w) that CAM / Grad-CAM weigh."""
    if backbone in GAP_LINEAR_FEATURES:
        return lambda x: GAP_LINEAR_FEATURES[backbone](model.backbone, x)
    return _feature_module(model, backbone)


def _feature_module(model: XrayClassifier, backbone: str) -> nn.Module:
    name = FEATURE_MODULES.get(backbone, DEFAULT_FEATURE_MODULE)
    try:
        return model.backbone.get_submodule(name)
    except AttributeError as exc:
        raise ValueError(f"Grad-CAM for {backbone!r}: it has no {name!r} module giving the last conv feature "
                         f"map; add its name to xray.models.cam.FEATURE_MODULES") from exc


def _cam_batch(model: XrayClassifier, backbone: str, pixels: torch.Tensor) -> np.ndarray:
    head = model.backbone.get_submodule(HEADS[backbone])
    with torch.no_grad():
        features = _feature_fn(model, backbone)(model.normalize(pixels))  # (B, K, h, w)
        maps = torch.einsum("lk,bkhw->blhw", head.weight, features)  # (B, L, h, w)
    return maps.numpy()


def _grad_cam_batch(model: XrayClassifier, backbone: str, pixels: torch.Tensor) -> np.ndarray:
    with torch.enable_grad():
        features, logits = _features_and_logits(model, backbone, pixels)  # (B, K, h, w), (B, L)
        maps = []
        for label in range(logits.shape[1]):
            # Images are independent in eval mode, so the gradient of the batch's sum is each image's own.
            (grad,) = torch.autograd.grad(logits[:, label].sum(), features, retain_graph=True)
            weights = grad.mean(dim=(2, 3))  # (B, K)
            maps.append(torch.einsum("bk,bkhw->bhw", weights, features).detach())
    return torch.stack(maps, dim=1).numpy()


def _features_and_logits(model: XrayClassifier, backbone: str,
                         pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last conv feature map (B, K, h, w) and the logits (B, L) computed from it, in one graph."""
    if backbone in GAP_LINEAR_FEATURES:
        features = _feature_fn(model, backbone)(model.normalize(pixels))
        return features, model.backbone.get_submodule(HEADS[backbone])(features.mean(dim=(2, 3)))
    captured: list[torch.Tensor] = []
    hook = _feature_module(model, backbone).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(pixels)
    finally:
        hook.remove()
    return captured[0], logits


_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def map_geometry(model: XrayClassifier, backbone: str, input_size: int) -> MapGeometry:
    """Trace where the feature map's cells sit for an S x S input: one forward pass of a blank image through
    the feature extractor, composing each conv / pool on the main path (input index = stride * output index +
    (k - 1) / 2 * dilation - padding). A layer whose input is not at the current resolution is a side branch
    (a ResNet shortcut, a squeeze-excitation 1x1) and is skipped; adaptive pools are not on the path."""
    size, stride, offset = input_size, 1.0, 0.0
    layers: list[tuple[int, int, nn.Module]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        layers.append((int(inputs[0].shape[-1]), int(output.shape[-1]), module))

    hooks = [m.register_forward_hook(record) for m in model.backbone.modules() if isinstance(m, _SPATIAL)]
    try:
        with torch.no_grad():
            features = _feature_fn(model, backbone)(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
    for size_in, size_out, module in layers:
        if size_in != size:
            continue
        k, s, p, d = (_first(getattr(module, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation"))
        offset += stride * ((k - 1) / 2.0 * d - p)
        stride *= s
        size = size_out
    if size != features.shape[-1]:
        raise ValueError(f"{backbone}: traced layers end at {size} px per side but the feature map has "
                         f"{features.shape[-1]}; its geometry cannot be traced")
    return MapGeometry(input_size, stride, offset + 0.5, int(features.shape[-1]))


def _first(value: int | tuple[int, ...] | str) -> int:
    if isinstance(value, str):  # padding="same" keeps the centre: (k - 1) / 2 * d on both sides
        raise ValueError(f"padding {value!r} is not traced; give the layer numeric padding")
    return int(value[0] if isinstance(value, tuple) else value)


def to_image(maps: np.ndarray, geometry: MapGeometry, height: int, width: int) -> np.ndarray:
    """(N, L, h, w) maps -> (N, L, height, width) float32 in image pixel coordinates.

    Bilinear between the traced cell centres (constant beyond the outermost ones), as Zhou et al. upsample
    CAMs. The input is the image resized to S x S without keeping its aspect ratio (xray.codec.decode), so
    (height, width) = the stored image's gives a map over its pixels, where BBox_List boxes are; (S, S) gives
    one over the model's input.
    """
    rows = _interpolation(geometry, height)  # (height, h)
    cols = _interpolation(geometry, width)  # (width, w)
    return np.einsum("yh,nlhw,xw->nlyx", rows, np.asarray(maps, dtype=np.float32), cols).astype(np.float32)


def _interpolation(geometry: MapGeometry, pixels: int) -> np.ndarray:
    """(pixels, cells) weights: each output pixel's centre, in input coordinates, between its two nearest
    cell centres."""
    at = (np.arange(pixels) + 0.5) * geometry.input_size / pixels  # output pixel centres in input pixels
    position = np.clip((at - geometry.origin) / geometry.stride, 0.0, geometry.cells - 1.0)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, geometry.cells - 1)
    frac = (position - low).astype(np.float32)
    weights = np.zeros((pixels, geometry.cells), dtype=np.float32)
    np.add.at(weights, (np.arange(pixels), low), 1.0 - frac)
    np.add.at(weights, (np.arange(pixels), high), frac)
    return weights
