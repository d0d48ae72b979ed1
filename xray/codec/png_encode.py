"""The PNG encoder of `tilescope synth`: 8-bit grayscale PNGs written the way NIH's are (row filters in the real
sample's proportions, lazy deflate matching, 8 KiB IDAT chunks), so that decoding them costs what decoding real
ones does. Pure: numpy and zlib(-ng) only.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:  # zlib-ng: lazy matching (level >= 7) as zlib's level 6 does, in ~100 ms per 1024 px image (zlib: ~200)
    from zlib_ng import zlib_ng as _deflate
except ImportError:  # pragma: no cover - a dependency; zlib writes equally valid (other) bytes
    _deflate = zlib

# Row filters in 45 real 8-bit NIH PNGs (../shared/nih-sample): None, Sub, Up, Average, Paeth.
REAL_FILTER_MIX = (73, 205, 1834, 23303, 20665)
IDAT_CHUNK_BYTES = 8192  # as in NIH's PNGs
ZLIB_LEVEL = 7  # zlib-ng's lowest level with zlib level 6's lazy matching (NIH's PNGs: zlib's default, 6)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _predictions(x: np.ndarray, types: np.ndarray) -> np.ndarray:
    """PNG's filter predictions for int16 pixels x (H, W), row r predicted by filter types[r] (0..4)."""
    a = np.zeros_like(x)
    a[:, 1:] = x[:, :-1]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, 1:] = x[:-1, :-1]
    pred = np.zeros_like(x)
    for kind in (1, 2, 3, 4):
        rows = types == kind
        ra, rb, rc = a[rows], b[rows], c[rows]
        if kind == 1:
            pred[rows] = ra
        elif kind == 2:
            pred[rows] = rb
        elif kind == 3:
            pred[rows] = (ra + rb) >> 1
        else:
            pa, pb, pc = np.abs(rb - rc), np.abs(ra - rc), np.abs(ra + rb - 2 * rc)
            pred[rows] = np.where((pa <= pb) & (pa <= pc), ra, np.where(pb <= pc, rb, rc))
    return pred


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) -> 8-bit grayscale PNG bytes; identical input gives identical bytes.

    Written as NIH's PNGs are, so that decoding them costs what decoding real ones does: row filters in the
    real sample's proportions (REAL_FILTER_MIX, mostly Average and Paeth, which unfilter one byte at a
    time) rather than what an encoder would pick for these smooth images (almost only Up or Average), lazy
    deflate matching, 8 KiB IDAT chunks. Each row's filter is drawn from a generator seeded by the image's shape: the
    decoder's cost depends on the filters, not on why an encoder chose them.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a uint8 (H, W) image, got {image.dtype} {image.shape}")
    height, width = image.shape
    mix = np.asarray(REAL_FILTER_MIX, dtype=np.float64)
    types = np.random.default_rng([height, width, 16]).choice(5, size=height, p=mix / mix.sum())
    x = image.astype(np.int16)
    scanlines = np.empty((height, width + 1), dtype=np.uint8)
    scanlines[:, 0] = types
    scanlines[:, 1:] = (x - _predictions(x, types)) & 0xFF
    stream = _deflate.compress(scanlines.tobytes(), ZLIB_LEVEL)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = b"".join(_chunk(b"IDAT", stream[i : i + IDAT_CHUNK_BYTES]) for i in range(0, len(stream), IDAT_CHUNK_BYTES))
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")
