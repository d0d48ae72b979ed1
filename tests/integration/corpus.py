"""A bad-input corpus in the published layout: tar.gz shards mixing good PNGs with every kind of bad member.

Expected outcome per member is returned alongside, so tests assert exact rows, not just "it ran".
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass

import numpy as np
from PIL import Image


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def good_png(i: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(i)
    return png_bytes(rng.integers(0, 255, (size, size), dtype=np.uint8))


@dataclass(frozen=True)
class Expected:
    image_id: str
    status: str  # "ok" | "error"
    reason: str | None = None  # substring of the error


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def bad_corpus_shard() -> tuple[bytes, list[Expected]]:
    """One tar.gz with 6 good images and one member of each bad kind; its expected rows in order."""
    rgba = np.zeros((80, 80, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    deep = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    jpeg = io.BytesIO()
    Image.fromarray(np.full((70, 90), 120, np.uint8)).save(jpeg, format="JPEG")
    good = good_png(99, 200)
    members = [
        ("images/00000001_000.png", good_png(1), Expected("00000001_000.png", "ok")),
        ("images/00000002_000.png", good[: len(good) // 2], Expected("00000002_000.png", "error", "truncated")),
        ("images/00000003_000.png", b"", Expected("00000003_000.png", "error", "empty")),
        ("images/00000004_000.png", b"this is not an image" * 10, Expected("00000004_000.png", "error",
                                                                           "not a PNG or JPEG")),
        ("images/00000005_000.png", jpeg.getvalue(), Expected("00000005_000.png", "ok")),
        ("images/00000006_000.png", png_bytes(deep), Expected("00000006_000.png", "ok")),
        ("images/00000007_000.png", png_bytes(rgba, "RGBA"), Expected("00000007_000.png", "ok")),
        # 1200 x 1200 = 1.44 Mpx: above the --max-pixels 1_000_000 the tests pass.
        ("images/00000008_000.png", png_bytes(np.zeros((1200, 1200), np.uint8)),
         Expected("00000008_000.png", "error", "pixel")),
        ("../00000009_000.png", good_png(9), Expected("00000009_000.png", "error", "unsafe member path")),
        ("/abs/00000010_000.png", good_png(10), Expected("00000010_000.png", "error", "unsafe member path")),
        ("images/00000011_000.png", good_png(11), Expected("00000011_000.png", "ok")),
        ("images/00000012_000.png", good_png(12), Expected("00000012_000.png", "ok")),
        ("images/00000013_000.png", good_png(13), Expected("00000013_000.png", "ok")),
        ("images/00000014_000.png", good_png(14), Expected("00000014_000.png", "ok")),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, _ in members:
            _add(tar, name, data)
    return buf.getvalue(), [m[2] for m in members]


def good_shard(first: int, n: int, size: int = 96) -> tuple[bytes, list[str]]:
    buf = io.BytesIO()
    ids = []
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(first, first + n):
            name = f"{i:08d}_000.png"
            ids.append(name)
            # Random pixels do not compress: the shard is big enough to cut mid-stream.
            _add(tar, f"images/{name}", good_png(i, size))
    return buf.getvalue(), ids


def write_corpus(directory: str) -> dict[str, list[Expected]]:
    """images_001.tar.gz: the bad corpus; images_002.tar.gz: 20 good images cut off at 60% of its bytes."""
    os.makedirs(directory, exist_ok=True)
    bad, expected_bad = bad_corpus_shard()
    good, ids = good_shard(100, 20)
    with open(os.path.join(directory, "images_001.tar.gz"), "wb") as f:
        f.write(bad)
    with open(os.path.join(directory, "images_002.tar.gz"), "wb") as f:
        f.write(good[: int(len(good) * 0.6)])
    return {"images_001.tar.gz": expected_bad, "images_002.tar.gz": [Expected(i, "ok") for i in ids]}
