"""Model registry: CheXNet-style DenseNet-121 and smaller backbones, all with one input contract.

Every model takes raw grayscale pixels, (N, 1, S, S) uint8 or float in [0, 255], and does its own
normalisation inside the graph (scale, ImageNet mean/std, grey -> 3 channels). The exported OpenVINO model
therefore receives 1 byte per pixel from the decode tasks instead of 12 (3 x float32), and training,
export and scoring cannot disagree on preprocessing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import torch
from torch import nn

from xray.manifests import ModelSpec  # noqa: F401  (defined beside the manifests: importing it needs no torch)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelNormalize(nn.Module):
    """(N, 1, S, S) pixels in [0, 255] -> (N, 3, S, S) ImageNet-normalised floats."""

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean)
        self.register_buffer("inv_std", 1.0 / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mean.dtype).expand(-1, 3, -1, -1)
        return (x - self.mean) * self.inv_std


class XrayClassifier(nn.Module):
    """Pixels -> logits for N labels. `probabilities()` is the exported form (sigmoid applied)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.normalize = PixelNormalize()
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(pixels))


class WithSigmoid(nn.Module):
    """Wraps a classifier so that its output is per-label probabilities; used for export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(pixels))


def _densenet121(num_labels: int) -> tuple[nn.Module, str | None]:
    from torchvision.models import DenseNet121_Weights, densenet121

    net = densenet121(weights=None)
    net.classifier = nn.Linear(net.classifier.in_features, num_labels)
    return net, DenseNet121_Weights.IMAGENET1K_V1.url


def _resnet18(num_labels: int) -> tuple[nn.Module, str | None]:
    from torchvision.models import ResNet18_Weights, resnet18

    net = resnet18(weights=None)
    net.fc = nn.Linear(net.fc.in_features, num_labels)
    return net, ResNet18_Weights.IMAGENET1K_V1.url


def _mobilenet_v3_small(num_labels: int) -> tuple[nn.Module, str | None]:
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    net = mobilenet_v3_small(weights=None)
    last = net.classifier[-1]
    net.classifier[-1] = nn.Linear(last.in_features, num_labels)
    return net, MobileNet_V3_Small_Weights.IMAGENET1K_V1.url


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _dwsep_cnn(num_labels: int) -> tuple[nn.Module, str | None]:
    """A small depthwise-separable CNN (~26k parameters): fast enough for tests and per-tile models."""
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        _separable(16, 32, 2),
        _separable(32, 64, 2),
        _separable(64, 96, 2),
        _separable(96, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_labels),
    )
    return net, None


BACKBONES: dict[str, Callable[[int], tuple[nn.Module, str | None]]] = {
    "densenet121": _densenet121,
    "resnet18": _resnet18,
    "mobilenet_v3_small": _mobilenet_v3_small,
    "dwsep_cnn": _dwsep_cnn,
}


def check_name(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(BACKBONES))}")


def build_model(spec: ModelSpec, imagenet_backbone: bool = False) -> XrayClassifier:
    """A fresh classifier for spec. With imagenet_backbone, ImageNet weights are taken from torchvision's
    local cache (torch.hub dir); nothing is ever downloaded. Raises FileNotFoundError when absent."""
    check_name(spec.name)
    backbone, url = BACKBONES[spec.name](len(spec.labels))
    if imagenet_backbone:
        if url is None:
            raise ValueError(f"model {spec.name!r} has no ImageNet weights")
        _load_imagenet_from_cache(backbone, url, spec.name)
    return XrayClassifier(backbone)


def torchvision_cache_path(url: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _load_imagenet_from_cache(backbone: nn.Module, url: str, name: str) -> None:
    path = torchvision_cache_path(url)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not in torchvision's cache ({path}); "
            "copy the file there or start without --imagenet-backbone"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = backbone.state_dict()
    # The classification head differs (1000 ImageNet classes vs our labels): keep ours.
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    backbone.load_state_dict({**own, **kept})


def load_state(model: nn.Module, data: bytes, source: str) -> None:
    """Load a state_dict (raw, or under 'state_dict'/'model', with 'module.' prefixes from DDP) from bytes.

    Uses weights_only=True. Raises ValueError naming the source and what does not fit.
    """
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; we add the source
        raise ValueError(f"{source}: not a loadable PyTorch weights file ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a state_dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if mismatched:
            parts.append(f"shape mismatch {mismatched[:3]}")
        raise ValueError(f"{source}: weights do not fit this model: " + "; ".join(parts))
    model.load_state_dict(state)
