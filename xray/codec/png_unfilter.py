"""PNG row unfiltering (PNG spec section 9), compiled with numba: the half of PNG decoding that zlib is not.

Real NIH radiographs are 8-bit grey and filtered mostly with Paeth (4) and Average (3). At one byte per
pixel both are one long dependency chain per row (each byte needs the byte left of it), so a plain loop is
bound by that chain's latency, and Paeth's data-dependent branches mispredict on noisy images. Two things
make this about 2x faster than a plain C loop (docs/BENCHMARKS.md, notes on PNG decode): Paeth is computed without
branches (masks), and rows are unfiltered in pairs, the second row one byte behind the first, so the two
chains run side by side; the four pairings of Paeth and Average are compiled as their own loops.

Memory safety: `unfilter` checks every size before any loop runs (the raw buffer must be exactly
height * (1 + row bytes) and the output exactly (height, row bytes)); every index inside is then bounded by
those sizes. The kernels are fuzzed against Pillow (tests/unit/test_decode_fuzz.py).

`AVAILABLE` is False when numba does not import (then xray.codec.decode falls back to Pillow).
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; xray.codec.decode falls back to Pillow without it
    njit = None

AVAILABLE = njit is not None
MAX_BYTES_PER_PIXEL = 8  # 16-bit RGBA


def _compiled(**options):
    """numba.njit(**options), or the plain function where numba is missing (then never called)."""
    return njit(**options) if njit is not None else (lambda fn: fn)


@_compiled(inline="always")
def _pred(ft, a, b, c):
    """The predictor of filter type ft from left a, above b and upper-left c (int32, 0..255)."""
    if ft == 4:  # Paeth, without branches: pa <= pb, pc -> a; else pb <= pc -> b; else c
        d = b - c
        x = a - c
        pa = abs(d)
        pb = abs(x)
        pc = abs(x + d)
        m1 = -(np.int32(pa <= pb) & np.int32(pa <= pc))
        m2 = -np.int32(pb <= pc)
        return (a & m1) | (~m1 & ((b & m2) | (c & ~m2)))
    if ft == 3:
        return (a + b) >> 1
    if ft == 2:
        return b
    if ft == 1:
        return a
    return np.int32(0)


@_compiled(inline="always")
def _pair(f0, f1, raw, o, prior, s0, s1, o0, o1, w):
    """Rows r (filter f0, above it `prior`) and r + 1 (filter f1, above it row r), one byte apart."""
    a0 = (np.int32(raw[s0]) + _pred(f0, np.int32(0), np.int32(prior[0]), np.int32(0))) & 255
    o[o0] = a0
    a1 = np.int32(0)
    c1 = np.int32(0)
    for i in range(1, w):
        a0 = (np.int32(raw[s0 + i]) + _pred(f0, a0, np.int32(prior[i]), np.int32(prior[i - 1]))) & 255
        o[o0 + i] = a0
        b1 = np.int32(o[o0 + i - 1])
        a1 = (np.int32(raw[s1 + i - 1]) + _pred(f1, a1, b1, c1)) & 255
        c1 = b1
        o[o1 + i - 1] = a1
    b1 = np.int32(o[o0 + w - 1])
    o[o1 + w - 1] = (np.int32(raw[s1 + w - 1]) + _pred(f1, a1, b1, c1)) & 255


@_compiled(inline="always")
def _single(f0, raw, o, prior, s0, o0, w, bpp):
    """One row, any bytes per pixel."""
    for i in range(bpp):
        o[o0 + i] = (np.int32(raw[s0 + i]) + _pred(f0, np.int32(0), np.int32(prior[i]), np.int32(0))) & 255
    for i in range(bpp, w):
        a = np.int32(o[o0 + i - bpp])
        o[o0 + i] = (np.int32(raw[s0 + i]) + _pred(f0, a, np.int32(prior[i]), np.int32(prior[i - bpp]))) & 255


# cache=True: compiled once per machine into __pycache__ (a few seconds), loaded in well under a second after.
@_compiled(nogil=True, cache=True)
def _unfilter_rows(raw, o, zero, h, w, bpp):
    """raw (h * (w + 1),) filtered rows -> o (h * w,). Returns -1, or the first row whose filter type is
    invalid. The caller has checked raw.size == h * (w + 1), o.size == h * w, zero.size >= w >= bpp >= 1."""
    row = w + 1
    r = 0
    while r < h:
        s0 = r * row + 1
        f0 = np.int32(raw[s0 - 1])
        if f0 > 4:
            return r
        o0 = r * w
        prior = o[o0 - w : o0] if r > 0 else zero
        if bpp == 1 and w >= 2 and r + 1 < h:
            f1 = np.int32(raw[s0 + w])
            if f1 > 4:
                return r + 1
            s1 = s0 + row
            o1 = o0 + w
            # The common pairings get loops of their own (constant filter types); the rest share one.
            if f0 == 4 and f1 == 4:
                _pair(4, 4, raw, o, prior, s0, s1, o0, o1, w)
            elif f0 == 3 and f1 == 3:
                _pair(3, 3, raw, o, prior, s0, s1, o0, o1, w)
            elif f0 == 4 and f1 == 3:
                _pair(4, 3, raw, o, prior, s0, s1, o0, o1, w)
            elif f0 == 3 and f1 == 4:
                _pair(3, 4, raw, o, prior, s0, s1, o0, o1, w)
            else:
                _pair(f0, f1, raw, o, prior, s0, s1, o0, o1, w)
            r += 2
        else:
            _single(f0, raw, o, prior, s0, o0, w, bpp)
            r += 1
    return -1


def unfilter(raw: bytes | bytearray | memoryview, height: int, row_bytes: int, bytes_per_pixel: int) -> np.ndarray:
    """Filtered PNG scanlines (height rows of 1 filter byte + row_bytes) -> (height, row_bytes) uint8.

    bytes_per_pixel is the filter distance (PNG's bpp: 1 for 8-bit grey, 2 for 16-bit grey, 4 for RGBA...).
    Raises ValueError on a size mismatch or an invalid filter type (naming the row).
    """
    if not AVAILABLE:
        raise RuntimeError("numba is not installed: PNG rows cannot be unfiltered here")
    src = np.frombuffer(raw, dtype=np.uint8)
    if not (1 <= bytes_per_pixel <= MAX_BYTES_PER_PIXEL and height >= 1 and row_bytes >= bytes_per_pixel):
        raise ValueError(f"invalid scanline layout ({height} rows of {row_bytes} bytes, {bytes_per_pixel} per pixel)")
    if src.size != height * (row_bytes + 1):
        raise ValueError(f"image data has {src.size} bytes, expected {height * (row_bytes + 1)}")
    out = np.empty((height, row_bytes), dtype=np.uint8)
    zero = np.zeros(row_bytes, dtype=np.uint8)
    bad = _unfilter_rows(src, out.reshape(-1), zero, height, row_bytes, bytes_per_pixel)
    if bad >= 0:
        raise ValueError(f"invalid row filter type in row {bad}")
    return out
