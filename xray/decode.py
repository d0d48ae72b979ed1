"""Decode archive bytes (PNG, or JPEG bytes under any name) into one canonical form.

Canonical form: 8-bit grayscale, (H, W) uint8. The NIH archive is mostly 8-bit 'L' 1024x1024 PNG but also
holds RGBA PNGs and other sizes/depths; all of them end here as one shape of array.

Decoding is the hot path of bulk scoring (a real NIH PNG costs ~20 ms, zlib-bound, about twice the INT8
inference), so the resize to the model's input is done inside PIL on the decoded image before any numpy
conversion: `Image.reduce` (integer box filter, cheap) first, then one bilinear resize.
"""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
from PIL import Image, ImageFile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# 2x a 1024x1024 NIH image would be 2 Mpx; 40 Mpx admits any real radiograph and stops decompression bombs.
DEFAULT_MAX_PIXELS = 40_000_000

# A truncated PNG must raise, never decode into a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(ValueError):
    """The bytes are not a decodable image; the message is the reason stored in the error row."""


def sniff_format(data: bytes) -> str:
    """'png' or 'jpeg' from the magic bytes; raises DecodeError otherwise."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    raise DecodeError(f"not a PNG or JPEG (first bytes {data[:8]!r})")


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    sniff_format(data)
    try:
        with warnings.catch_warnings():
            # PIL warns (and errors past 2x its own limit) on big images: our own limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image exceeds the pixel limit ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"unreadable image header: {exc}") from exc
    if width * height > max_pixels:
        raise DecodeError(
            f"image is {width}x{height} = {width * height} pixels, above the limit of {max_pixels} "
            "(decompression bomb?)"
        )
    return img


def _to_gray8(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 'L'. 16-bit is scaled by its dtype range (65535 -> 255), alpha is dropped."""
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img)
        if img.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        else:
            scaled = arr.astype(np.float32) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGB") if img.mode == "RGBA" else img.convert("L")
    return img.convert("L")


def decode_gray8(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes -> (H, W) uint8 at the image's own size. Raises DecodeError with the reason."""
    img = _open_checked(data, max_pixels)
    try:
        img.load()
        gray = _to_gray8(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"corrupt or truncated image data: {exc}") from exc
    return np.asarray(gray, dtype=np.uint8)


def image_dimensions(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """bytes -> (width, height) from the header alone (bounding boxes are in these pixels)."""
    return _open_checked(data, max_pixels).size


def decode_resized(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes -> (size, size) uint8 grayscale, the model's input. Raises DecodeError with the reason.

    Non-square images are resized without keeping the aspect ratio, as in the CheXNet evaluation.
    """
    img = _open_checked(data, max_pixels)
    try:
        img.load()
        gray = _to_gray8(img)
        factor = min(gray.size) // size
        if factor >= 2:
            gray = gray.reduce(factor)
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"corrupt or truncated image data: {exc}") from exc
    return np.asarray(gray, dtype=np.uint8)


def decode_many(
    data: list[bytes | None], errors: list[str | None], size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, list[str], list[str | None], np.ndarray]:
    """A chunk of members -> (pixels (N, 1, size, size) uint8, status, error, decode_ms (N,) float32).

    A member that arrived with an error, or fails to decode, gets status 'error', its reason, and zero
    pixels; the others get status 'ok'. Nothing raises for one bad image.
    """
    n = len(data)
    pixels = np.zeros((n, 1, size, size), dtype=np.uint8)
    status = ["ok"] * n
    reasons: list[str | None] = list(errors)
    millis = np.zeros(n, dtype=np.float32)
    for i, blob in enumerate(data):
        if reasons[i] is not None or blob is None:
            status[i] = "error"
            reasons[i] = reasons[i] or "no data"
            continue
        t0 = time.perf_counter()
        try:
            pixels[i, 0] = decode_resized(blob, size, max_pixels)
        except DecodeError as exc:
            status[i], reasons[i] = "error", str(exc)
        millis[i] = (time.perf_counter() - t0) * 1000.0
    return pixels, status, reasons, millis
