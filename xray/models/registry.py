"""Model registry: CheXNet-style DenseNet-121, VGG-16 and smaller backbones, all with one input contract.

Every model takes raw grayscale pixels, (N, 1, S, S) uint8 or float in [0, 255], and does its own
normalisation inside the graph (scale, mean/std — ImageNet's unless the spec says otherwise —, grey -> 3
channels). The exported OpenVINO model therefore receives 1 byte per pixel from the decode tasks instead of
12 (3 x float32), and training, export and scoring cannot disagree on preprocessing.

Weights files are read with torch.load(weights_only=True) (no code from the file runs) or as safetensors,
and their keys normalised by xray/models/weights.py, so checkpoints saved by other projects load too.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from xray.metadata.manifests import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from xray.models.settings import BACKBONE_NAMES
from xray.models.weights import WeightsError, fit_problems, normalise_state

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ModelSpec"]  # re-exported: older imports name them here


class PixelNormalize(nn.Module):
    """(N, 1, S, S) pixels in [0, 255] -> (N, 3, S, S) floats: x/255, then (x - mean) / std per channel (one
    mean/std value: the same on all three)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).expand(3).reshape(1, 3, 1, 1) * 255.0
        std_t = torch.tensor(std, dtype=torch.float32).expand(3).reshape(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("inv_std", 1.0 / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mean.dtype).expand(-1, 3, -1, -1)
        return (x - self.mean) * self.inv_std


class XrayClassifier(nn.Module):
    """Pixels -> logits for N labels. `probabilities()` is the exported form (sigmoid applied)."""

    def __init__(self, backbone: nn.Module, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = PixelNormalize(mean, std)
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


def _vgg16(num_labels: int) -> tuple[nn.Module, str | None]:
    """VGG-16 (no batch norm), the transfer-learning backbone of CAM-heatmap studies: classifier[6], its last
    Linear, gives one output per label. torchvision's adaptive 7x7 pool lets it take inputs from 32 px."""
    from torchvision.models import VGG16_Weights, vgg16

    net = vgg16(weights=None)
    last = net.classifier[6]
    net.classifier[6] = nn.Linear(last.in_features, num_labels)
    return net, VGG16_Weights.IMAGENET1K_V1.url


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
    "vgg16": _vgg16,
}
if tuple(BACKBONES) != BACKBONE_NAMES:  # the torch-free list configs offer as choices (xray/models/settings.py)
    raise RuntimeError(f"xray/models/settings.py BACKBONE_NAMES {BACKBONE_NAMES} != registry {tuple(BACKBONES)}")
# Each backbone's last Linear layer (its state-dict name): one output row per label.
HEADS = {"densenet121": "classifier", "resnet18": "fc", "mobilenet_v3_small": "classifier.3", "dwsep_cnn": "9",
         "vgg16": "classifier.6"}


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
    return XrayClassifier(backbone, spec.mean, spec.std)


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


def read_weights(data: bytes, source: str) -> object:
    """The object in a weights file: torch.load(weights_only=True), or a safetensors file. A pickled whole
    model or a TorchScript archive is refused with how to save a state dict instead."""
    if _is_safetensors(data):
        from safetensors.torch import load

        try:
            return load(data)
        except Exception as exc:  # noqa: BLE001 - the library raises its own types; we add the source
            raise WeightsError(f"{source}: not a readable safetensors file ({exc})") from exc
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        text = str(exc)
        if "TorchScript" in text:
            raise WeightsError(f"{source}: is a TorchScript archive, not a state dict. Save its weights: "
                               "torch.save(torch.jit.load(FILE).state_dict(), 'weights.pt')") from exc
        blocked = re.search(r"unsupported GLOBAL (\S+)", text)
        if "Unsupported global" in text or blocked:
            what = (blocked.group(1) if blocked
                    else text.split("Unsupported global:", 1)[1].split("was not")[0].strip())
            raise WeightsError(
                f"{source}: not a loadable weights file: it holds pickled Python objects ({what[:120]}), which "
                "tilescope refuses (torch.load weights_only=True: no code from the file runs). A whole model saved "
                "with torch.save(model)? Save its state dict instead: torch.save(model.state_dict(), "
                "'weights.pt') (for nn.DataParallel: model.module.state_dict())") from exc
        raise WeightsError(f"{source}: not a loadable PyTorch weights file ({_reason(text)})") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; we add the source
        raise WeightsError(f"{source}: not a loadable PyTorch weights file ({exc})") from exc


def _reason(text: str) -> str:
    """torch's refusal without its boilerplate (which ends advising weights_only=False): the line that says why."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    why = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    return (why or lines or ["no reason given"])[0][:200]


def _is_safetensors(data: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    return len(data) > 9 and data[8:9] == b"{" and 0 < int.from_bytes(data[:8], "little") < len(data)


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """A module's state-dict names -> shapes (the target xray.models.weights normalises to)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def backbone_state(data: bytes, backbone: nn.Module, source: str) -> tuple[dict, tuple[str, ...]]:
    """A weights file -> a state dict under `backbone`'s names (not yet checked to fit) and the renaming notes.
    A tilescope checkpoint's normalisation buffers are left out: the spec's normalisation is rebuilt."""
    normalised = normalise_state(read_weights(data, source), shapes(backbone), source, drop_prefixes=("normalize.",))
    return normalised.state, normalised.notes


def load_state(model: XrayClassifier, data: bytes, source: str) -> tuple[str, ...]:
    """Load a weights file into a classifier's backbone: a state dict raw or under 'state_dict'/'model', with
    'module.' prefixes from DataParallel/DDP, old torchvision names, CheXNet's `densenet121.` attribute and
    `classifier.0` head, or a tilescope checkpoint (xray/models/weights.py). Returns the renaming notes.

    Uses weights_only=True. Raises ValueError (WeightsError) naming the source and what does not fit.
    """
    state, notes = backbone_state(data, model.backbone, source)
    problems = fit_problems(state, shapes(model.backbone), shown_as="backbone.")
    if problems:
        raise WeightsError(f"{source}: weights do not fit this model: " + "; ".join(problems))
    model.backbone.load_state_dict(state)
    return notes
