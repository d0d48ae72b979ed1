"""The shared training loop: resuming epoch by epoch reproduces one uninterrupted run exactly."""

from __future__ import annotations

import numpy as np
import torch

from xray.metadata.labels import LABELS
from xray.models.precision import MathPath, Precision
from xray.models.registry import ModelSpec, build_model
from xray.models.training import fit

PATH = MathPath(precision=Precision.FP32, channels_last=False, ipex=None, amx=False)


def _data(n: int = 24, size: int = 32):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
    y = (rng.random((n, len(LABELS))) < 0.3).astype(np.float32)
    return (x, y), (x[:6], y[:6])


def _model(spec: ModelSpec) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(spec)


def test_epoch_by_epoch_with_resume_equals_one_run_even_with_dropout():
    # mobilenet_v3_small has Dropout(0.2) in its head: torch's generator matters, and is seeded per epoch.
    spec = ModelSpec("mobilenet_v3_small", LABELS, 32)
    assert any(isinstance(m, torch.nn.Dropout) for m in _model(spec).modules())
    train, val = _data()
    torch.set_num_threads(1)
    whole = _model(spec)
    fit(whole, train, val, 2, 8, 1e-3, PATH, seed=5)

    saved: dict = {}
    first = _model(spec)
    fit(first, train, val, 1, 8, 1e-3, PATH, seed=5,
        on_epoch=lambda r, net, opt: saved.update(model=net.state_dict(), optimizer=opt.state_dict()))
    torch.manual_seed(123)  # whatever ran in between must not matter
    torch.rand(7)
    resumed = _model(spec)
    resumed.load_state_dict(saved["model"])
    fit(resumed, train, val, 2, 8, 1e-3, PATH, seed=5, start_epoch=1, optimizer_state=saved["optimizer"])
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # and a different seed trains to different weights
    other = _model(spec)
    fit(other, train, val, 2, 8, 1e-3, PATH, seed=6)
    pairs = zip(whole.state_dict().values(), other.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
