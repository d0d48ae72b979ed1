"""The PNG container, read strictly: header, chunk walk with every CRC checked, and the inflated scanlines.

Stricter than Pillow where Pillow lets damage through: Pillow never checks the CRC of IDAT (or of any chunk
after it) and stops inflating once it has the pixels it needs, so a flipped bit in the last compressed
bytes or a wrong zlib checksum (adler32) decodes as `ok`. Here every chunk's CRC is checked, the zlib
stream must end with a valid checksum and inflate to exactly the image's size, IDAT chunks must be
consecutive and IEND present. Ancillary chunks (text, gamma, ICC, ...) are checked for their CRC only;
they never change the pixels tilescope uses.

Error reasons are deterministic: they name chunks by position and registered name, never echo the
input's bytes, and carry no object addresses.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

try:
    import deflate as _libdeflate  # libdeflate: ~2x zlib's inflate on NIH PNGs (docs/BENCHMARKS.md)
except ImportError:  # pragma: no cover - a dependency; zlib keeps everything working without it
    _libdeflate = None

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_CHUNK_LENGTH = 2**31 - 1
# (bit depth, colour type) pairs the PNG spec allows.
_VALID_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Registered chunk names, the only ones a reason may name (anything else is "an ancillary chunk").
_KNOWN = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
                    b"cICP", b"mDCV", b"cLLI", b"tEXt", b"zTXt", b"iTXt", b"bKGD", b"hIST", b"pHYs", b"sPLT",
                    b"eXIf", b"tIME", b"acTL", b"fcTL", b"fdAT"})
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class PngHeaderError(ValueError):
    """The PNG header (signature + IHDR) cannot be read; the message is the reason."""


class PngDataError(ValueError):
    """The PNG's chunks or image data are damaged or cut off; the message is the reason."""


@dataclass(frozen=True)
class PngHeader:
    """IHDR's fields."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool

    @property
    def bits_per_pixel(self) -> int:
        return self.bit_depth * _CHANNELS[self.color_type]

    @property
    def bytes_per_pixel(self) -> int:
        """The filter distance: bytes per complete pixel, rounded up to 1."""
        return max(1, self.bits_per_pixel // 8)

    @property
    def row_bytes(self) -> int:
        """Bytes per scanline of a non-interlaced image, without its filter byte."""
        return (self.width * self.bits_per_pixel + 7) // 8

    @property
    def raw_size(self) -> int:
        """Exact inflated size of the image data: every (pass's) row with its filter byte."""
        if not self.interlaced:
            return self.height * (1 + self.row_bytes)
        total = 0
        for x0, y0, dx, dy in _ADAM7:
            cols = (self.width - x0 + dx - 1) // dx
            rows = (self.height - y0 + dy - 1) // dy
            if cols > 0 and rows > 0:
                total += rows * (1 + (cols * self.bits_per_pixel + 7) // 8)
        return total


@dataclass(frozen=True)
class PngLayout:
    """A PNG whose chunks all passed their checks: its header, the IDAT payload, and whether it is animated."""

    header: PngHeader
    idat: bytes
    animated: bool


def _crc32(data: memoryview) -> int:
    return _libdeflate.crc32(data) if _libdeflate is not None else zlib.crc32(data)


def read_header(data: bytes) -> PngHeader:
    """The IHDR of PNG bytes (signature already checked or checked here). Raises PngHeaderError."""
    if not data.startswith(PNG_MAGIC):
        raise PngHeaderError("not a PNG file (bad signature)")
    if len(data) < 8 + 8 + 13 + 4:
        raise PngHeaderError("PNG file ends inside its IHDR chunk (truncated)")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR":
        raise PngHeaderError("first chunk is not IHDR")
    if length != 13:
        raise PngHeaderError(f"IHDR chunk has length {length}, expected 13")
    width, height, depth, ctype, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if struct.unpack_from(">I", data, 29)[0] != _crc32(memoryview(data)[12:29]):
        raise PngHeaderError("IHDR chunk fails its CRC check")
    if not (1 <= width <= MAX_CHUNK_LENGTH and 1 <= height <= MAX_CHUNK_LENGTH):
        raise PngHeaderError(f"IHDR declares an invalid size {width}x{height}")
    if depth not in _VALID_DEPTHS.get(ctype, ()):
        raise PngHeaderError(f"unsupported bit depth {depth} with colour type {ctype}")
    if compression != 0 or filtering != 0 or interlace > 1:
        raise PngHeaderError(
            f"unsupported compression/filter/interlace method {compression}/{filtering}/{interlace}")
    return PngHeader(width, height, depth, ctype, interlace == 1)


def read_chunks(data: bytes, header: PngHeader) -> PngLayout:
    """Walk every chunk after IHDR, checking lengths, types, CRCs and order. Raises PngDataError."""
    view = memoryview(data)
    pos, index = 8 + 25, 2  # after the signature and IHDR (chunk 1)
    idat: list[memoryview] = []
    idat_done = animated = False
    while True:
        if pos + 8 > len(data):
            raise PngDataError("PNG file is truncated (no IEND chunk)" if pos == len(data)
                               else f"PNG file is truncated (it ends inside chunk {index})")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if length > MAX_CHUNK_LENGTH:
            raise PngDataError(f"chunk {index} has an invalid length")
        if not kind.isalpha() or not kind.isascii():
            raise PngDataError(f"chunk {index} has an invalid type")
        name = kind.decode("ascii") if kind in _KNOWN else "an unregistered chunk"
        end = pos + 8 + length
        if end + 4 > len(data):
            raise PngDataError(f"PNG file is truncated (it ends inside chunk {index}, {name})")
        if struct.unpack_from(">I", data, end)[0] != _crc32(view[pos + 4 : end]):
            raise PngDataError(f"CRC mismatch in chunk {index} ({name})")
        if kind == b"IDAT":
            if idat_done:
                raise PngDataError(f"IDAT chunks are not consecutive (chunk {index})")
            idat.append(view[pos + 8 : end])
        elif idat:
            idat_done = True
        if kind == b"IEND":
            break
        if kind == b"IHDR":
            raise PngDataError(f"second IHDR chunk (chunk {index})")
        if kind[0] < 0x61 and kind not in (b"PLTE", b"IDAT"):  # uppercase first letter: critical
            raise PngDataError(f"unknown critical chunk (chunk {index})")
        animated |= kind == b"acTL"
        pos, index = end + 4, index + 1
    if not idat:
        raise PngDataError("no image data (IDAT chunk)")
    return PngLayout(header, b"".join(idat), animated)


def _inflate_failure(idat: bytes, expected: int) -> str:
    """Why a zlib stream failed to inflate to `expected` bytes (only called after a failure)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(idat, expected + 1)
    except zlib.error as exc:
        text = str(exc)
        if "incorrect data check" in text:
            return "image data fails its zlib checksum (adler32)"
        return "compressed image data is corrupt (invalid deflate stream)"
    if len(out) > expected:
        return f"image data inflates to more than the {expected} bytes the image needs"
    if not inflater.eof:
        return "compressed image data is truncated (the zlib stream ends early)"
    return f"image data inflates to {len(out)} bytes, expected {expected}"


def inflate(layout: PngLayout) -> bytes | bytearray:
    """The IDAT's zlib stream, inflated: exactly header.raw_size bytes, checksum verified. Raises PngDataError."""
    expected = layout.header.raw_size
    if _libdeflate is not None:
        try:
            out = _libdeflate.zlib_decompress(layout.idat, expected)
        except _libdeflate.DeflateError:
            raise PngDataError(_inflate_failure(layout.idat, expected)) from None
        if len(out) != expected:
            raise PngDataError(_inflate_failure(layout.idat, expected))
        return out
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(layout.idat, expected)
        # At exactly `expected` bytes zlib may stop before the checksum: one more step reads it (or finds more).
        extra = b"" if inflater.eof else inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error:
        raise PngDataError(_inflate_failure(layout.idat, expected)) from None
    if len(out) != expected or extra or not inflater.eof:
        raise PngDataError(_inflate_failure(layout.idat, expected))
    return out
