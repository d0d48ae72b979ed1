"""Decode archive bytes (PNG, or JPEG bytes under any name) into one canonical form.

Canonical form: 8-bit grayscale, (H, W) uint8. The NIH archive is mostly 8-bit 'L' 1024x1024 PNG but also
holds RGBA PNGs and other sizes/depths; all of them end here as one shape of array.

Decoding is the hot path of bulk scoring (about half the per-image cost beside INT8 inference on a Xeon), so
PNGs take a path of their own (docs/BENCHMARKS.md, "PNG decode"): xray.codec.png reads the chunks strictly (every
CRC, the zlib checksum, the exact inflated size) and inflates with libdeflate, and xray.codec.png_unfilter undoes
the row filters in compiled code. The pixels are Pillow's, byte for byte: non-grey modes go through Pillow's
own raw unpacker with the rawmode its PNG plugin uses. Palette, 1/2/4-bit and interlaced PNGs, APNGs, JPEG
bytes, and every PNG when numba is missing, are decoded by Pillow as before, after the same strict checks.

The resize to the model's input (`resize_gray`) is the one preprocessing step shared by train, quantize's
calibration and score: `Image.reduce` (integer box filter, cheap) first, then one bilinear resize.

Error reasons are deterministic: they never contain input bytes (the magic-number check shows hex) or
object addresses.
"""

from __future__ import annotations

import io
import os
import re
import time
import warnings

import numpy as np
from PIL import Image, ImageFile

from xray.codec import png_unfilter
from xray.codec.png import PNG_MAGIC, PngDataError, PngHeaderError, inflate, read_chunks, read_header

JPEG_MAGIC = b"\xff\xd8\xff"
# 2x a 1024x1024 NIH image would be 2 Mpx; 40 Mpx admits any real radiograph and stops decompression bombs.
DEFAULT_MAX_PIXELS = 40_000_000
HEADER, DATA = "unreadable image header", "corrupt or truncated image data"
# TILESCOPE_PNG_DECODER=legacy decodes PNGs as before issue 16 (Pillow alone, without the CRC/adler32 checks of
# xray/codec/png.py): the baseline bench.scoring compares against, in the same run. Anything else: the default path.
DECODER_ENV = "TILESCOPE_PNG_DECODER"

# A truncated PNG must raise, never decode into a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# (bit depth, colour type) -> (mode, rawmode) exactly as Pillow's PNG plugin reads them (PngImagePlugin._MODES):
# the fast path hands unfiltered rows to Pillow's raw unpacker with the same rawmode.
_FAST_MODES = {
    (8, 0): ("L", "L"), (16, 0): ("I;16", "I;16B"), (8, 2): ("RGB", "RGB"), (16, 2): ("RGB", "RGB;16B"),
    (8, 4): ("LA", "LA"), (16, 4): ("RGBA", "LA;16B"), (8, 6): ("RGBA", "RGBA"), (16, 6): ("RGBA", "RGBA;16B"),
}
_ADDRESS = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")
_BYTES_LITERAL = re.compile(r"""b'(?:[^'\\]|\\.)*'|b"(?:[^"\\]|\\.)*\"""")
_HEX_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


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
    raise DecodeError(f"not a PNG or JPEG (first bytes {bytes(data[:8]).hex()})")


def describe(exc: BaseException) -> str:
    """An exception's message with no input bytes and no object addresses in it (Pillow's messages can hold
    both: `cannot identify image file <_io.BytesIO object at 0x7f...>`, `broken PNG file (chunk b'...')`)."""
    text = _HEX_ADDRESS.sub("0x?", _BYTES_LITERAL.sub("<bytes>", _ADDRESS.sub("", str(exc)))).strip()
    return text or type(exc).__name__


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(
            f"image is {width}x{height} = {width * height} pixels, above the limit of {max_pixels} "
            "(decompression bomb?)"
        )


def _pillow_open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL warns (and errors past 2x its own limit) on big images: our own limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image exceeds the pixel limit ({describe(exc)})") from exc
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure of Pillow's parser is this image's error
        raise DecodeError(f"{HEADER}: {describe(exc)}") from exc
    _check_pixels(width, height, max_pixels)
    return img


def _pillow_gray(data: bytes, max_pixels: int) -> Image.Image:
    img = _pillow_open(data, max_pixels)
    try:
        img.load()
        return _to_gray8(img)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure of Pillow's decoder is this image's error
        raise DecodeError(f"{DATA}: {describe(exc)}") from exc


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


def _png_gray(data: bytes, max_pixels: int) -> Image.Image:
    """PNG bytes -> 'L' image: strict chunk checks, then the fast path or Pillow."""
    try:
        header = read_header(data)
    except PngHeaderError as exc:
        raise DecodeError(f"{HEADER}: {exc}") from None
    _check_pixels(header.width, header.height, max_pixels)
    try:
        layout = read_chunks(data, header)
        raw = inflate(layout)  # on the Pillow path too: Pillow never checks the zlib checksum
        modes = _FAST_MODES.get((header.bit_depth, header.color_type))
        if modes is None or header.interlaced or layout.animated or not png_unfilter.AVAILABLE:
            return _pillow_gray(data, max_pixels)
        rows = png_unfilter.unfilter(raw, header.height, header.row_bytes, header.bytes_per_pixel)
    except (PngDataError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"{DATA}: {exc}") from None
    size = (header.width, header.height)
    mode, rawmode = modes
    return _to_gray8(Image.frombuffer(mode, size, rows, "raw", rawmode, 0, 1))


def _gray(data: bytes, max_pixels: int) -> Image.Image:
    if sniff_format(data) == "png" and os.environ.get(DECODER_ENV) != "legacy":
        return _png_gray(data, max_pixels)
    return _pillow_gray(data, max_pixels)


def resize_gray(gray: Image.Image, size: int) -> np.ndarray:
    """'L' image -> (size, size) uint8: the model's input, identical for train, calibration and score.

    Reduce by the largest integer factor that keeps both sides >= size (box filter), then one bilinear
    resize. Non-square images are resized without keeping the aspect ratio, as in the CheXNet evaluation.
    """
    factor = min(gray.size) // size
    if factor >= 2:
        gray = gray.reduce(factor)
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def decode_gray8(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes -> (H, W) uint8 at the image's own size. Raises DecodeError with the reason."""
    return np.asarray(_gray(data, max_pixels), dtype=np.uint8)


def image_dimensions(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """bytes -> (width, height) from the header alone (bounding boxes are in these pixels)."""
    if sniff_format(data) == "png":
        try:
            header = read_header(data)
        except PngHeaderError as exc:
            raise DecodeError(f"{HEADER}: {exc}") from None
        _check_pixels(header.width, header.height, max_pixels)
        return header.width, header.height
    return _pillow_open(data, max_pixels).size


def decode_resized(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes -> (size, size) uint8 grayscale, the model's input. Raises DecodeError with the reason."""
    gray = _gray(data, max_pixels)
    try:
        return resize_gray(gray, size)
    except (OSError, ValueError) as exc:
        raise DecodeError(f"{DATA}: {describe(exc)}") from exc


def decode_many(
    data: list[bytes | None], errors: list[str | None], size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray, list[str | None], np.ndarray]:
    """A chunk of members -> (pixels (N, 1, size, size) uint8, decoded (N,) bool, error, decode_ms (N,) float32).

    A member that arrived with an error, or fails to decode, gets decoded False, its reason, and zero pixels
    (the scoring path turns it into one error row); the others get decoded True. Nothing raises for one bad
    image.
    """
    n = len(data)
    pixels = np.zeros((n, 1, size, size), dtype=np.uint8)
    decoded = np.ones(n, dtype=bool)
    reasons: list[str | None] = list(errors)
    millis = np.zeros(n, dtype=np.float32)
    for i, blob in enumerate(data):
        if reasons[i] is not None or blob is None:
            decoded[i] = False
            reasons[i] = reasons[i] or "no data"
            continue
        t0 = time.perf_counter()
        try:
            pixels[i, 0] = decode_resized(blob, size, max_pixels)
        except DecodeError as exc:
            decoded[i], reasons[i] = False, str(exc)
        millis[i] = (time.perf_counter() - t0) * 1000.0
    return pixels, decoded, reasons, millis
