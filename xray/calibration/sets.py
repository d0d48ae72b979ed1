"""Which images calibrate an INT8 model: the archive's own (patient data), synthetic chest-like ones, or fractals.

NNCF's post-training quantization runs the FP32 model on a few hundred calibration images and sets each
activation's 8-bit range from what it sees there. Those images need no labels, and need not be the patients'
own: hospitals often cannot move patient images to where a model is quantized. `tilescope quantize
--calibration` chooses among:

- ARCHIVE: a seeded subset of the archive's train_val images, from the patients the model trained or validated
  on (never its test patients). The images the model will score, so the closest ranges.
- SYNTHETIC: tilescope's own chest-like generator (xray.synth.images), no patient data. Rendered at NIH's 1024 px and
  resized to the model's input the way an archive image is decoded (xray.codec.decode.resize_gray).
- FRACTAL: procedural IFS fractals (xray.synth.fractal), no patient data and nothing chest-like.

How much each costs a given backbone is measured by bench.calibration (docs/BENCHMARKS.md, "Calibration
without patient data"); xray/calibration/risks.py turns those figures into the warning quantize prints.
Pure: numpy and PIL only (no storage; the archive's pixels are decoded by the job).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np


class CalibrationSource(enum.StrEnum):
    ARCHIVE = "archive"
    """A seeded subset of the archive's train_val images (patient data)."""
    SYNTHETIC = "synthetic"
    """Chest-like images from tilescope's generator (xray.synth.images): no patient data."""
    FRACTAL = "fractal"
    """Procedural IFS fractals (xray.synth.fractal): no patient data, nothing chest-like."""

    @property
    def patient_images(self) -> bool:
        """Whether the calibration images are the archive's (patients') own."""
        return self is CalibrationSource.ARCHIVE


SYNTH_RENDER_SIZE = 1024
"""Synthetic calibration images are drawn at NIH's size, then resized as a decoded archive image is."""
SYNTH_FIRST_INDEX = 10_000_000
"""Synthetic calibration uses xray.synth.images cases from this index on: no synthetic archive under ten million images
holds them, so calibration never shares an image (or a patient id) with an archive synth wrote with the same
seed, such as the one the model is evaluated on."""


def archive_calibration_ids(pool: Sequence[str], n: int, rng: np.random.Generator) -> set[str]:
    """The archive subset: min(n, len(pool)) image ids drawn without replacement from `pool` (sorted train_val
    ids of the model's split). The draw `tilescope quantize` has always made: it is made (and moves `rng`)
    whatever the source, so the evaluation images drawn after it are the same for every source."""
    return set(rng.choice(sorted(pool), size=min(n, len(pool)), replace=False).tolist())


def synthetic_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 1, size, size) uint8: xray.synth.images cases SYNTH_FIRST_INDEX.. of `seed`, rendered at SYNTH_RENDER_SIZE
    (or `size`, if larger) and resized to `size` as xray.codec.decode resizes an archive image."""
    from PIL import Image

    from xray.codec.decode import resize_gray
    from xray.synth.images import synth_case

    render = max(SYNTH_RENDER_SIZE, size)
    out = np.zeros((n, 1, size, size), np.uint8)
    for i in range(n):
        out[i, 0] = resize_gray(Image.fromarray(synth_case(SYNTH_FIRST_INDEX + i, seed, render).image), size)
    return out


def fractal_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 1, size, size) uint8: IFS fractal images 0..n-1 of `seed` (xray.synth.fractal), rendered at `size`."""
    from xray.synth.fractal import fractal_images as render

    return render(n, size, seed)[:, None]


def generated_images(source: CalibrationSource, n: int, size: int, seed: int) -> np.ndarray:
    """(n, 1, size, size) uint8 calibration pixels of a source that needs no archive (SYNTHETIC, FRACTAL)."""
    source = CalibrationSource(source)
    if source is CalibrationSource.SYNTHETIC:
        return synthetic_images(n, size, seed)
    if source is CalibrationSource.FRACTAL:
        return fractal_images(n, size, seed)
    raise ValueError(f"calibration source {source.value!r} comes from an archive, not a generator")


def describe(source: CalibrationSource, size: int) -> str:
    """What the calibration images were, in words (the manifest's calibration.generator)."""
    source = CalibrationSource(source)
    if source is CalibrationSource.SYNTHETIC:
        return (f"xray.synth.images cases {SYNTH_FIRST_INDEX}.. rendered at {max(SYNTH_RENDER_SIZE, size)} px, resized "
                f"to {size} px as archive images are decoded")
    if source is CalibrationSource.FRACTAL:
        return f"xray.synth.fractal IFS fractals rendered at {size} px"
    return "a seeded subset of the archive's train_val images"


def pixel_summary(pixels: np.ndarray) -> dict[str, float]:
    """Grey-level statistics of (N, ...) uint8 pixels: mean, std and the 1st / 50th / 99th percentiles, so a
    manifest shows how far the calibration images' intensities lie from the evaluation images'. NaN when empty."""
    if pixels.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "p1": float("nan"), "p50": float("nan"),
                "p99": float("nan")}
    counts = np.bincount(np.asarray(pixels, np.uint8).ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64)
    total = counts.sum()
    mean = float((counts * levels).sum() / total)
    std = float(np.sqrt((counts * (levels - mean) ** 2).sum() / total))
    cdf = np.cumsum(counts) / total
    pct = {f"p{q}": float(np.searchsorted(cdf, q / 100.0)) for q in (1, 50, 99)}
    return {"mean": round(mean, 3), "std": round(std, 3), **pct}
