"""Quantization-aware fine-tuning: when no post-training recipe keeps FP32's decisions, NNCF inserts INT8
fake-quantizers into the PyTorch model (ranges from the calibration images, as post-training does), and the
quantized model is fine-tuned for a few epochs to reproduce FP32 on training images (distillation: mean squared
error against the FP32 model's own logits, so no label is needed and the target is exactly what FP32 computes; on
logits, not probabilities, so images near a threshold weigh as much as any), then exported to an OpenVINO INT8 IR
that runs every quantized layer in INT8 (no layer left in float, so full INT8 speed).

BatchNorm statistics stay frozen (eval mode) during the fine-tuning: a few epochs of small batches would move
them away from what the weights were trained with. Seeded: same inputs, seed and threads, same IR.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from actors.openvino_ir import ActivationRanges, QuantizationPreset, f32_compiles


@dataclass(frozen=True)
class QatSettings:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-5
    seed: int = 0


def quantization_aware(model, input_size: int, calibration: np.ndarray, train_images: np.ndarray, settings: QatSettings,
                       preset: QuantizationPreset = QuantizationPreset.PERFORMANCE,
                       ranges: ActivationRanges = ActivationRanges.HISTOGRAM,
                       on_epoch: Callable[[int, float], None] | None = None):  # -> openvino.Model
    """FP32 torch classifier (logits) -> fine-tuned INT8 OpenVINO model (u8 (N, 1, S, S) in, probabilities out).

    calibration (C, 1, S, S) and train_images (M, 1, S, S) uint8. on_epoch(epoch, mean loss) after each epoch.
    """
    import nncf
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from xray.models.registry import WithSigmoid

    torch.manual_seed(settings.seed)
    teacher = model.eval()
    with torch.no_grad():
        soft = torch.cat([teacher(torch.from_numpy(train_images[i : i + 64]))
                          for i in range(0, len(train_images), 64)])
    student = copy.deepcopy(teacher)
    advanced = None
    if ActivationRanges(ranges) is ActivationRanges.HISTOGRAM:
        advanced = AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM)
    batches = [torch.from_numpy(calibration[i : i + 1]) for i in range(len(calibration))]
    with f32_compiles():
        student = nncf.quantize(student, nncf.Dataset(batches), preset=nncf.QuantizationPreset(
            QuantizationPreset(preset).value), subset_size=len(calibration), advanced_parameters=advanced)
    student.eval()  # BatchNorm frozen; the quantizers' scales and the weights still learn
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=0.0)
    loss_fn = torch.nn.MSELoss()
    rng = np.random.default_rng(settings.seed)
    for epoch in range(settings.epochs):
        order = rng.permutation(len(train_images))
        total, batches_done = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            rows = np.sort(order[start : start + settings.batch_size])
            logits = student(torch.from_numpy(train_images[rows]))
            loss = loss_fn(logits.float(), soft[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches_done += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, total / max(batches_done, 1))
    student.eval()
    example = torch.zeros(1, 1, input_size, input_size, dtype=torch.uint8)
    with torch.no_grad():
        ov_model = ov.convert_model(WithSigmoid(student).eval(), example_input=example,
                                    input=[(ov.PartialShape([-1, 1, input_size, input_size]), ov.Type.u8)])
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model
