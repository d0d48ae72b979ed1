"""xray.codec.decode: every PNG flavour of the NIH archive (and JPEG bytes under a .png name) ends as (H, W) uint8;
bad bytes raise DecodeError with a reason, and decode_many turns them into error rows."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from xray.codec import decode
from xray.codec.decode import (
    DEFAULT_MAX_PIXELS,
    DecodeError,
    decode_gray8,
    decode_many,
    decode_resized,
    image_dimensions,
    sniff_format,
)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header(width: int, height: int) -> bytes:
    """A valid-looking 8-bit grey PNG whose IHDR claims width x height but whose IDAT holds one row only."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * min(width, 64))
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def idat_span(data: bytes) -> tuple[int, int]:
    """(start, end) byte offsets of the first IDAT chunk's payload."""
    pos = data.index(b"IDAT")
    length = struct.unpack(">I", data[pos - 4 : pos])[0]
    return pos + 4, pos + 4 + length


# ---- formats and modes -------------------------------------------------------------------------------------


def test_8bit_grey_png_is_returned_unchanged():
    arr = noise((37, 53))
    out = decode_gray8(encode(Image.fromarray(arr)))
    assert out.dtype == np.uint8
    assert out.shape == (37, 53)
    np.testing.assert_array_equal(out, arr)


def test_16bit_png_scales_the_full_range_to_8_bits():
    # 257 * k is exactly k in 8 bits: 0 -> 0, 65535 -> 255, and every step in between.
    arr16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    data = encode(Image.fromarray(arr16))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = decode_gray8(data)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_16bit_png_rounds_to_nearest():
    arr16 = np.array([[1, 128, 129, 32768, 65534, 65535]], dtype=np.uint16)
    out = decode_gray8(encode(Image.fromarray(arr16)))
    # 128 * 255/65535 = 0.498 -> 0; 129 -> 0.502 -> 1; 32768 -> 127.502 -> 128; 65534 -> 254.996 -> 255.
    np.testing.assert_array_equal(out, [[0, 0, 1, 128, 255, 255]])


def test_rgba_png_drops_alpha_and_matches_pil_luma_of_the_rgb():
    rgb = noise((40, 30, 3), seed=1)
    alpha = noise((40, 30), seed=2)
    rgba = np.dstack([rgb, alpha])
    data = encode(Image.fromarray(rgba, mode="RGBA"))
    expected = np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    out = decode_gray8(data)
    assert out.shape == (40, 30)
    np.testing.assert_array_equal(out, expected)
    # Transparent pixels keep their colour's grey value: alpha must not darken them.
    fully_transparent = np.dstack([rgb, np.zeros_like(alpha)])
    out_transparent = decode_gray8(encode(Image.fromarray(fully_transparent, mode="RGBA")))
    np.testing.assert_array_equal(out_transparent, expected)


def test_rgb_png_matches_pil_luma():
    rgb = noise((25, 45, 3), seed=3)
    out = decode_gray8(encode(Image.fromarray(rgb, mode="RGB")))
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(rgb, mode="RGB").convert("L")))


def test_grey_stored_as_rgb_is_the_same_grey():
    grey = noise((20, 20), seed=4)
    out = decode_gray8(encode(Image.fromarray(np.dstack([grey] * 3), mode="RGB")))
    np.testing.assert_array_equal(out, grey)


def test_palette_png_goes_through_its_palette():
    rgb = noise((32, 32, 3), seed=5)
    pal = Image.fromarray(rgb, mode="RGB").convert("P")
    data = encode(pal)
    assert Image.open(io.BytesIO(data)).mode == "P"
    np.testing.assert_array_equal(decode_gray8(data), np.asarray(pal.convert("L")))


def test_palette_png_with_transparency():
    rgb = noise((16, 16, 3), seed=6)
    pal = Image.fromarray(rgb, mode="RGB").convert("P")
    data = encode(pal, transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    np.testing.assert_array_equal(decode_gray8(data), np.asarray(pal.convert("L")))


def test_grey_with_alpha_png_drops_alpha():
    grey = noise((18, 22), seed=7)
    la = np.dstack([grey, noise((18, 22), seed=8)])
    np.testing.assert_array_equal(decode_gray8(encode(Image.fromarray(la, mode="LA"))), grey)


def test_one_bit_png_is_0_or_255():
    bits = noise((24, 24), seed=9) > 127
    out = decode_gray8(encode(Image.fromarray(bits)))
    np.testing.assert_array_equal(out, np.where(bits, 255, 0).astype(np.uint8))


def test_jpeg_bytes_under_a_png_name_are_decoded():
    # The archive names the file .png; only the bytes count.
    data = encode(Image.new("L", (64, 48), 140), "JPEG", quality=95)
    assert sniff_format(data) == "jpeg"
    out = decode_gray8(data)
    assert out.shape == (48, 64)
    assert np.abs(out.astype(int) - 140).max() <= 2
    resized = decode_resized(data, 32)
    assert resized.shape == (32, 32)
    assert np.abs(resized.astype(int) - 140).max() <= 2


def test_sniff_format_png():
    assert sniff_format(encode(Image.new("L", (2, 2)))) == "png"


# ---- bad bytes ---------------------------------------------------------------------------------------------


def test_zero_bytes_is_empty():
    with pytest.raises(DecodeError, match="empty"):
        decode_gray8(b"")
    with pytest.raises(DecodeError, match="empty"):
        decode_resized(b"", 16)


def test_garbage_is_not_a_png_or_jpeg():
    with pytest.raises(DecodeError, match="not a PNG or JPEG") as info:
        decode_gray8(b"hello")
    # The first bytes are shown for diagnosis, as hex: the only input bytes a reason ever carries.
    assert str(info.value) == "not a PNG or JPEG (first bytes 68656c6c6f)"


def test_other_image_format_is_refused():
    with pytest.raises(DecodeError, match="not a PNG or JPEG"):
        decode_gray8(encode(Image.new("L", (4, 4)), "BMP"))


def test_png_magic_with_garbage_header_is_unreadable():
    with pytest.raises(DecodeError, match="unreadable image header"):
        decode_gray8(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)


def test_png_truncated_in_the_middle_of_idat_raises():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = encode(Image.fromarray(noise((200, 200), seed=10)))
    start, end = idat_span(data)
    cut = data[: (start + end) // 2]
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_gray8(cut)
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_resized(cut, 64)


def test_png_with_flipped_idat_byte_raises():
    data = bytearray(encode(Image.fromarray(noise((200, 200), seed=11))))
    start, end = idat_span(bytes(data))
    data[(start + end) // 2] ^= 0xFF
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        decode_gray8(bytes(data))


def test_jpeg_truncated_raises():
    data = encode(Image.fromarray(noise((120, 120), seed=12)), "JPEG")
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_gray8(data[: len(data) // 2])


@pytest.fixture()
def no_pixel_decoding(monkeypatch):
    """Make any attempt to decode pixel data fail loudly: a bomb must be refused from its header alone."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_decompression_bomb_header_is_refused_before_decoding(no_pixel_decoding):
    # 50000 x 50000 = 2.5 Gpx: above PIL's own hard limit too; the file itself is ~100 bytes.
    data = png_with_header(50_000, 50_000)
    assert len(data) < 200
    for call in (lambda: decode_gray8(data, max_pixels=1_000_000), lambda: decode_resized(data, 64)):
        with pytest.raises(DecodeError, match="pixel limit|above the limit"):
            call()


def test_header_above_our_limit_but_below_pils_is_refused(no_pixel_decoding):
    data = png_with_header(2_000, 1_000)  # 2 Mpx: PIL would happily decode it
    with pytest.raises(DecodeError, match="2000x1000 = 2000000 pixels, above the limit of 1000000"):
        decode_gray8(data, max_pixels=1_000_000)
    with pytest.raises(DecodeError, match="above the limit"):
        decode_resized(data, 64, max_pixels=1_999_999)


def test_large_one_bit_png_that_compresses_well_is_refused():
    data = encode(Image.new("1", (8000, 8000), 1))  # 64 Mpx in ~23 kB
    assert len(data) < 100_000
    with pytest.raises(DecodeError, match="8000x8000 = 64000000 pixels"):
        decode_gray8(data, max_pixels=10_000_000)
    with pytest.raises(DecodeError, match="above the limit of"):
        decode_resized(data, 64)  # the default limit (40 Mpx) applies too
    assert 8000 * 8000 > DEFAULT_MAX_PIXELS


def test_image_at_exactly_the_limit_is_decoded():
    arr = noise((10, 10), seed=13)
    np.testing.assert_array_equal(decode_gray8(encode(Image.fromarray(arr)), max_pixels=100), arr)


# ---- decode_resized ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "size"), [((1000, 1000), 224), ((512, 512), 256), ((64, 64), 64),
                                             ((50, 50), 128), ((300, 301), 64)])
def test_resized_constant_image_stays_constant(shape, size):
    out = decode_resized(encode(Image.new("L", shape[::-1], 77)), size)
    assert out.shape == (size, size)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.full((size, size), 77, dtype=np.uint8))


def test_resized_same_size_is_identity():
    arr = noise((64, 64), seed=14)
    np.testing.assert_array_equal(decode_resized(encode(Image.fromarray(arr)), 64), arr)


def test_resized_by_an_integer_factor_is_the_block_mean():
    arr = noise((512, 512), seed=15)
    out = decode_resized(encode(Image.fromarray(arr)), 256).astype(np.float64)
    block_mean = arr.reshape(256, 2, 256, 2).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(out - block_mean).max() <= 0.5 + 1e-9


def test_non_square_image_is_stretched_to_a_square():
    # Wide: left third black, right third white -> first column black, last column white.
    wide = np.zeros((100, 300), dtype=np.uint8)
    wide[:, 200:] = 255
    out = decode_resized(encode(Image.fromarray(wide)), 64)
    assert out.shape == (64, 64)
    np.testing.assert_array_equal(out[:, :16], 0)
    np.testing.assert_array_equal(out[:, -16:], 255)
    # Tall: the same along rows.
    out_t = decode_resized(encode(Image.fromarray(np.ascontiguousarray(wide.T))), 64)
    assert out_t.shape == (64, 64)
    np.testing.assert_array_equal(out_t[:16, :], 0)
    np.testing.assert_array_equal(out_t[-16:, :], 255)


def test_resized_16bit_and_rgba_images():
    arr16 = np.full((300, 200), 257 * 90, dtype=np.uint16)
    np.testing.assert_array_equal(decode_resized(encode(Image.fromarray(arr16)), 32), 90)
    rgba = np.zeros((80, 80, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    expected = np.asarray(Image.new("RGB", (1, 1), (10, 200, 30)).convert("L"))[0, 0]
    np.testing.assert_array_equal(decode_resized(encode(Image.fromarray(rgba, mode="RGBA")), 16), expected)


# ---- decode_many -------------------------------------------------------------------------------------------


def test_decode_many_keeps_good_members_and_turns_bad_ones_into_error_rows():
    good = encode(Image.new("L", (40, 40), 200))
    good_jpeg = encode(Image.new("L", (40, 40), 60), "JPEG", quality=95)
    truncated = encode(Image.fromarray(noise((100, 100), seed=16)))
    truncated = truncated[: sum(idat_span(truncated)) // 2]
    data: list[bytes | None] = [good, b"", b"hello", None, good, truncated, good_jpeg, good]
    errors: list[str | None] = [None, None, None, None, "unsafe member path '../x.png'", None, None, None]
    errors_before = list(errors)

    pixels, decoded, reasons, millis = decode_many(data, errors, 16)

    assert pixels.shape == (8, 1, 16, 16)
    assert pixels.dtype == np.uint8
    assert decoded.tolist() == [True, False, False, False, False, False, True, True]
    assert reasons[0] is None and reasons[6] is None and reasons[7] is None
    assert "empty" in reasons[1]
    assert "not a PNG or JPEG" in reasons[2]
    assert reasons[3] == "no data"
    assert reasons[4] == "unsafe member path '../x.png'"  # an upstream reason is kept as is
    assert "truncated" in reasons[5] or "corrupt" in reasons[5]
    np.testing.assert_array_equal(pixels[0], 200)
    np.testing.assert_array_equal(pixels[7], 200)
    assert np.abs(pixels[6].astype(int) - 60).max() <= 2
    for i in (1, 2, 3, 4, 5):
        assert not pixels[i].any(), f"error row {i} must hold zero pixels"
    assert millis.shape == (8,) and millis.dtype == np.float32
    assert millis[0] > 0 and millis[7] > 0
    assert millis[3] == 0 and millis[4] == 0  # never attempted
    assert errors == errors_before  # the caller's list is not modified


def test_decode_many_respects_max_pixels():
    data = [encode(Image.new("L", (100, 100), 5)), encode(Image.new("L", (10, 10), 5))]
    _, decoded, reasons, _ = decode_many(data, [None, None], 8, max_pixels=1_000)
    assert decoded.tolist() == [False, True]
    assert "above the limit of 1000" in reasons[0]


def test_decode_many_empty_chunk():
    pixels, decoded, reasons, millis = decode_many([], [], 32)
    assert pixels.shape == (0, 1, 32, 32)
    assert decoded.shape == (0,) and reasons == [] and millis.shape == (0,)


# ---- the fast PNG path (xray/codec/png.py, xray/codec/png_unfilter.py) -------------------------------------------

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "nih-sample"


def pillow_gray(data: bytes) -> np.ndarray:
    """Today's path: Pillow decodes, then the same conversion to 'L'."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(decode._to_gray8(img))


def raw_png(rows: np.ndarray, depth: int, ctype: int, width: int, filters: list[int] | None = None) -> bytes:
    """A PNG from unfiltered scanlines (H, row bytes) uint8, filter type 0 unless given per row."""
    height = rows.shape[0]
    ft = np.asarray(filters if filters is not None else [0] * height, dtype=np.uint8)
    scan = np.concatenate([ft[:, None], rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(scan)) + \
        png_chunk(b"IEND", b"")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/nih-sample (real NIH PNGs) is not present")
def test_every_real_nih_png_decodes_to_pillows_pixels():
    files = sorted(SAMPLE.glob("*.png"))
    assert len(files) >= 40
    for path in files:
        data = path.read_bytes()
        expected = pillow_gray(data)
        np.testing.assert_array_equal(decode_gray8(data), expected, err_msg=path.name)
        # and the model input: the same resize as before on the same pixels
        np.testing.assert_array_equal(decode_resized(data, 224),
                                      decode.resize_gray(Image.fromarray(expected), 224), err_msg=path.name)


@pytest.mark.parametrize(("depth", "ctype", "channels"), [(8, 0, 1), (16, 0, 1), (8, 2, 3), (16, 2, 3), (8, 4, 2),
                                                          (16, 4, 2), (8, 6, 4), (16, 6, 4)])
def test_fast_path_matches_pillow_for_every_mode_and_filter(depth, ctype, channels):
    rng = np.random.default_rng(depth * 10 + ctype)
    width, height = 13, 11
    row_bytes = width * channels * depth // 8
    # Smooth rows filtered with every filter type in turn: unfilter arithmetic in all its branches.
    smooth = np.cumsum(rng.integers(-3, 4, (height, row_bytes)), axis=1) % 256
    data = filtered_png(smooth.astype(np.uint8), depth, ctype, width, channels * depth // 8, rng)
    np.testing.assert_array_equal(decode_gray8(data), pillow_gray(data))


def filtered_png(rows: np.ndarray, depth: int, ctype: int, width: int, bpp: int, rng) -> bytes:
    """rows filtered with a random filter per row (the PNG spec's definitions, written out here)."""
    h, n = rows.shape
    x = rows.astype(np.int32)
    out = np.zeros_like(x)
    types = [int(t) for t in rng.integers(0, 5, h)]
    for r, t in enumerate(types):
        for i in range(n):
            a = x[r, i - bpp] if i >= bpp else 0
            b = x[r - 1, i] if r else 0
            c = x[r - 1, i - bpp] if r and i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            paeth = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out[r, i] = (x[r, i] - (0, a, b, (a + b) // 2, paeth)[t]) % 256
    return raw_png(out.astype(np.uint8), depth, ctype, width, types)


def test_unfilter_rejects_bad_layouts_and_filter_types():
    from xray.codec.png_unfilter import unfilter

    with pytest.raises(ValueError, match="image data has 9 bytes, expected 10"):
        unfilter(bytes(9), 2, 4, 1)
    with pytest.raises(ValueError, match="invalid scanline layout"):
        unfilter(bytes(4), 2, 1, 2)
    with pytest.raises(ValueError, match="invalid row filter type in row 1"):
        unfilter(bytes([0, 1, 2, 5, 1, 2]), 2, 2, 1)
    np.testing.assert_array_equal(unfilter(bytes([1, 1, 2, 2, 3, 3]), 2, 2, 1), [[1, 3], [4, 6]])


def test_numba_missing_falls_back_to_pillow_with_the_same_checks(monkeypatch):
    from xray.codec import png_unfilter

    arr = noise((40, 50), seed=20)
    data = encode(Image.fromarray(arr))
    fast = decode_gray8(data)
    monkeypatch.setattr(png_unfilter, "AVAILABLE", False)
    np.testing.assert_array_equal(decode_gray8(data), fast)
    np.testing.assert_array_equal(fast, arr)
    bad = bytearray(data)
    bad[data.index(b"IEND") - 5] ^= 1  # IDAT's CRC: Pillow alone would decode this
    with pytest.raises(DecodeError, match="CRC mismatch in chunk 2 \\(IDAT\\)"):
        decode_gray8(bytes(bad))


def test_damage_pillow_lets_through_is_an_error():
    """Pillow skips IDAT's CRC and stops inflating once it has every pixel: both pass as 'ok' there."""
    data = encode(Image.fromarray(noise((30, 30), seed=21)))
    bad_crc = bytearray(data)
    bad_crc[data.index(b"IEND") - 5] ^= 1
    assert pillow_gray(bytes(bad_crc)).shape == (30, 30)
    with pytest.raises(DecodeError, match="^corrupt or truncated image data: CRC mismatch in chunk 2 \\(IDAT\\)$"):
        decode_resized(bytes(bad_crc), 16)
    # the zlib checksum (adler32) in an IDAT chunk of its own, damaged, every CRC right
    start, end = idat_span(data)
    stream = bytearray(data[start:end])
    stream[-2] ^= 4
    bad_adler = data[:start - 8] + png_chunk(b"IDAT", bytes(stream[:-4])) + png_chunk(b"IDAT", bytes(stream[-4:])) \
        + png_chunk(b"IEND", b"")
    assert pillow_gray(bad_adler).shape == (30, 30)
    with pytest.raises(DecodeError, match="^corrupt or truncated image data: image data fails its zlib checksum"):
        decode_resized(bad_adler, 16)


def test_chunk_structure_errors_name_the_cause():
    data = encode(Image.fromarray(noise((20, 20), seed=22)))
    start, end = idat_span(data)
    ihdr, idat = data[:start - 8], data[start - 8 : end + 4]
    text = png_chunk(b"tEXt", b"Comment\x00hello")
    cases = {
        "no IEND chunk": ihdr + idat,
        "IDAT chunks are not consecutive": ihdr + idat + text + idat + png_chunk(b"IEND", b""),
        "no image data": ihdr + text + png_chunk(b"IEND", b""),
        "unknown critical chunk": ihdr + png_chunk(b"ABCD", b"") + idat + png_chunk(b"IEND", b""),
        "CRC mismatch in chunk 3 \\(an unregistered chunk\\)": ihdr + idat + png_chunk(b"prIv", b"x")[:-1] + b"?" +
        png_chunk(b"IEND", b""),
        "CRC mismatch in chunk 3 \\(IEND\\)": ihdr + idat + png_chunk(b"IEND", b"")[:-1] + b"?",
        "ends inside chunk 2": data[: start + 10],
    }
    for reason, bad in cases.items():
        with pytest.raises(DecodeError, match=f"^corrupt or truncated image data: .*{reason}"):
            decode_gray8(bad)
    assert decode_gray8(ihdr + text + idat + png_chunk(b"IEND", b"") + b"trailing bytes").shape == (20, 20)


def test_header_errors_name_the_cause():
    base = png_with_header(10, 10)
    bad_depth = bytearray(base)
    bad_depth[24] = 3
    cases = {
        "IHDR chunk fails its CRC check": bytes(bad_depth),
        "unsupported bit depth 3 with colour type 0": base[:8] + png_chunk(b"IHDR", bytes(bad_depth[16:29])) +
        base[33:],
        "first chunk is not IHDR": base[:8] + png_chunk(b"tEXt", b"a\x00b") + base[8:],
        "ends inside its IHDR chunk": base[:20],
    }
    for reason, bad in cases.items():
        with pytest.raises(DecodeError, match=f"^unreadable image header: .*{reason}"):
            decode_gray8(bad)


def test_reasons_carry_no_addresses_or_input_bytes():
    # Pillow's own message here is "cannot identify image file <_io.BytesIO object at 0x7f...>".
    with pytest.raises(DecodeError) as info:
        decode_gray8(b"\xff\xd8\xff" + b"\x00garbage\xfe" * 4)
    reason = str(info.value)
    assert reason.startswith("unreadable image header: ")
    assert "0x" not in reason and "object at" not in reason and "garbage" not in reason
    assert decode.describe(OSError("cannot identify image file <_io.BytesIO object at 0x7f3a2b1c0d90>")) == \
        "cannot identify image file"
    assert decode.describe(SyntaxError("broken PNG file (chunk b'\\x00\\x01ab')")) == "broken PNG file (chunk <bytes>)"
    assert decode.describe(ValueError("pointer 0x7ffd12345678 freed")) == "pointer 0x? freed"
    assert decode.describe(ValueError("")) == "ValueError"


def test_image_dimensions_from_the_png_header_alone(no_pixel_decoding):
    assert image_dimensions(png_with_header(300, 200)) == (300, 200)
    with pytest.raises(DecodeError, match="above the limit of 1000"):
        image_dimensions(png_with_header(300, 200), max_pixels=1000)


# ---- one preprocessing for train, quantize's calibration and score ------------------------------------------


def test_train_calibration_and_score_get_identical_model_inputs(tmp_path):
    """train and quantize read images through storage.image_sets.load_image_set, score through
    jobs.score_stages.decode_chunk: the same bytes must give the same (N, 1, S, S) uint8 input in both."""
    import ast
    import tarfile

    from jobs.score_stages import decode_chunk
    from storage.image_sets import load_image_set
    from storage.results import CHUNK, DATA, ERROR, IMAGE_ID, LAST, READ_CORE_MS, ROWS, SHARD, SOURCE
    from xray.synth.images import encode_png, synth_case

    blobs = {f"{i:08d}_000.png": encode_png(synth_case(i, seed=4, size=300).image) for i in range(3)}
    blobs["00000010_000.png"] = encode(Image.fromarray(noise((90, 70, 4), seed=23), mode="RGBA"))
    blobs["00000011_000.png"] = encode(Image.fromarray(noise((50, 64), seed=24).astype(np.uint16) * 257))
    if SAMPLE.is_dir():
        for path in sorted(SAMPLE.glob("*.png"))[:2]:
            blobs[path.name] = path.read_bytes()
    with tarfile.open(tmp_path / "images_001.tar.gz", "w:gz") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for size in (224, 64):
        train = load_image_set(str(tmp_path), None, size)
        assert train.ids == tuple(sorted(blobs)) and not train.errors
        n = len(blobs)
        batch = {IMAGE_ID: np.array(list(train.ids), dtype=object), SOURCE: np.array(list(train.ids), dtype=object),
                 SHARD: np.array(["s"] * n, dtype=object), CHUNK: np.zeros(n, np.int64), LAST: np.ones(n, bool),
                 ROWS: np.full(n, n), DATA: np.array([blobs[i] for i in train.ids], dtype=object),
                 ERROR: np.array([None] * n, dtype=object), READ_CORE_MS: np.zeros(n)}
        scored = decode_chunk(batch, size, DEFAULT_MAX_PIXELS)
        assert list(scored["status"]) == ["ok"] * n
        np.testing.assert_array_equal(scored["pixels"], train.pixels)
    root = Path(__file__).resolve().parents[2]
    for job in ("train", "quantize_inputs"):  # train and quantize take their pixels from load_image_set, nothing else
        tree = ast.parse((root / "jobs" / f"{job}.py").read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "load_image_set" in calls and "decode_resized" not in calls, job


def test_legacy_switch_decodes_as_before_issue_16(monkeypatch):
    """TILESCOPE_PNG_DECODER=legacy (bench.scoring's baseline): Pillow alone, which lets a bad IDAT CRC pass."""
    data = encode(Image.fromarray(noise((30, 30), seed=25)))
    bad = bytearray(data)
    bad[data.index(b"IEND") - 5] ^= 1
    monkeypatch.setenv(decode.DECODER_ENV, "legacy")
    np.testing.assert_array_equal(decode_gray8(bytes(bad)), noise((30, 30), seed=25))
    monkeypatch.delenv(decode.DECODER_ENV)
    with pytest.raises(DecodeError, match="CRC mismatch"):
        decode_gray8(bytes(bad))


@pytest.mark.parametrize(("width", "height"), [(13, 11), (1, 1), (3, 9), (16, 16)])
def test_interlaced_png_goes_through_pillow_after_the_exact_size_check(width, height):
    """Adam7 written out here (Pillow cannot write it): the inflated size check must count every pass."""
    img = noise((height, width), seed=26)
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    scan = b"".join(b"\x00" + img[y, x0::dx].tobytes() for x0, y0, dx, dy in passes
                    for y in range(y0, height, dy) if x0 < width)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(scan)) + \
        png_chunk(b"IEND", b"")
    np.testing.assert_array_equal(decode_gray8(data), img)
    short = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(scan[:-1])) + \
        png_chunk(b"IEND", b"")
    with pytest.raises(DecodeError, match="inflates to|truncated"):
        decode_gray8(short)
