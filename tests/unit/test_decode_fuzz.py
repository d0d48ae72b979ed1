"""Fuzz the PNG decoder against Pillow: thousands of mutated PNGs, real NIH ones (../shared/nih-sample, when
present) and synthetic ones of every mode the fast path takes.

For every case the decoder must agree with a reference built independently here: the file is a valid PNG by
the checks below (written from the PNG spec, not from xray/codec/png.py) AND Pillow decodes it (with ancillary
chunks removed: they never change pixels) -> same pixels; otherwise -> DecodeError. Reasons are
deterministic (same text twice), carry no Python object addresses and no bytes literals.

Runs in well under a minute: mutations that damage a CRC are rejected before any inflate on both sides, and
only cases that pass every check decode in full.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xray.codec import decode
from xray.codec.decode import DecodeError, decode_gray8

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "nih-sample"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADDRESS = re.compile(r"object at|(?<![0-9A-Za-z])0x[0-9a-fA-F]{6,}")


# ---- an independent reference -------------------------------------------------------------------------------


def chunks(data: bytes) -> list[tuple[bytes, bytes, int]] | None:
    """[(type, payload, stored crc)] up to and including IEND, or None when the walk itself fails."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if length >= 2**31 or pos + 12 + length > len(data):
            return None
        end = pos + 8 + length
        out.append((kind, data[pos + 8 : end], struct.unpack(">I", data[end : end + 4])[0]))
        if kind == b"IEND":
            return out
        pos += 12 + length
    return None


def inflated_size(w: int, h: int, depth: int, ctype: int, interlace: int) -> int:
    bits = depth * CHANNELS[ctype]
    if not interlace:
        return h * (1 + (w * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in ADAM7:
        cols, rows = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
        if cols > 0 and rows > 0:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def strictly_valid(data: bytes, max_pixels: int) -> bool:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    found = chunks(data)
    if not found or found[0][0] != b"IHDR" or len(found[0][1]) != 13:
        return False
    for kind, payload, crc in found:
        if not (kind.isalpha() and kind.isascii()) or zlib.crc32(kind + payload) != crc:
            return False
        if kind[0] < 0x61 and kind not in (b"IHDR", b"PLTE", b"IDAT", b"IEND"):
            return False
    kinds = [k for k, _, _ in found]
    if kinds.count(b"IHDR") != 1 or b"IDAT" not in kinds:
        return False
    first = kinds.index(b"IDAT")
    last = len(kinds) - 1 - kinds[::-1].index(b"IDAT")
    if any(k != b"IDAT" for k in kinds[first : last + 1]):
        return False
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", found[0][1])
    if not (0 < w < 2**31 and 0 < h < 2**31) or depth not in DEPTHS.get(ctype, ()):
        return False
    if comp or filt or interlace > 1 or w * h > max_pixels:
        return False
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(p for k, p, _ in found if k == b"IDAT"))
    except zlib.error:
        return False
    return inflater.eof and len(raw) == inflated_size(w, h, depth, ctype, interlace)


def without_ancillary(data: bytes) -> bytes:
    """The PNG with only its critical chunks (and tRNS, which Pillow reads for palette images)."""
    keep = b"".join(struct.pack(">I", len(p)) + k + p + struct.pack(">I", c)
                    for k, p, c in chunks(data) if k[0] < 0x61 or k == b"tRNS")
    return data[:8] + keep


def reference(data: bytes, max_pixels: int = decode.DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """Pillow's pixels when the file is strictly valid and Pillow decodes it; else None (an error)."""
    if not strictly_valid(data, max_pixels):
        return None
    try:
        img = Image.open(io.BytesIO(without_ancillary(data)))
        img.load()
        return np.asarray(decode._to_gray8(img))
    except Exception:  # noqa: BLE001 - any Pillow failure means "not decodable"
        return None


def check(data: bytes) -> str:
    """Decode with tilescope and with the reference; they must agree. Returns 'ok' or 'error'."""
    expected = reference(data)
    try:
        got = decode_gray8(data)
    except DecodeError as exc:
        reason = str(exc)
        assert expected is None, f"refused a file Pillow decodes and that passes every check: {reason}"
        assert not ADDRESS.search(reason) and "b'" not in reason and 'b"' not in reason, reason
        with pytest.raises(DecodeError) as again:
            decode_gray8(data)
        assert str(again.value) == reason, "reasons must be deterministic"
        return "error"
    assert expected is not None, "decoded a file that fails the strict checks or that Pillow refuses"
    np.testing.assert_array_equal(got, expected)
    return "ok"


# ---- seeds and mutations -------------------------------------------------------------------------------------


def png_of(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def synthetic_seeds() -> list[bytes]:
    from xray.synth.images import encode_png, synth_case

    rng = np.random.default_rng(16)
    seeds = [encode_png(synth_case(i, seed=3, size=64).image) for i in range(3)]  # Paeth/Average mix
    seeds.append(encode_png(rng.integers(0, 256, (17, 1), dtype=np.uint8)))  # width 1: single-row path
    seeds.append(encode_png(rng.integers(0, 256, (5, 33), dtype=np.uint8)))  # odd height: last row alone
    for shape, mode in (((20, 24, 3), "RGB"), ((20, 24, 4), "RGBA"), ((19, 13, 2), "LA")):
        seeds.append(png_of(Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)))
    seeds.append(png_of(Image.fromarray((rng.integers(0, 65536, (23, 18))).astype(np.uint16))))
    seeds.append(png_of(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P")))
    seeds.append(png_of(Image.fromarray(rng.integers(0, 2, (16, 40), dtype=np.uint8).astype(bool))))
    return seeds


def with_crcs_fixed(data: bytes) -> bytes:
    """Recompute every chunk CRC (so that a mutation reaches the header checks, inflate and unfilter)."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        length = struct.unpack(">I", out[pos : pos + 4])[0]
        if pos + 12 + length > len(out):
            break
        end = pos + 8 + length
        out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4 : end])))
        pos += 12 + length
    return bytes(out)


def reencoded(data: bytes, rng: np.random.Generator) -> bytes:
    """The same PNG with its inflated scanlines mutated (filter bytes and pixels) and deflated again."""
    found = chunks(data)
    raw = bytearray(zlib.decompress(b"".join(p for k, p, _ in found if k == b"IDAT")))
    for _ in range(int(rng.integers(1, 6))):
        raw[int(rng.integers(len(raw)))] = int(rng.integers(0, 256)) if rng.random() < 0.5 else int(rng.integers(0, 6))
    if rng.random() < 0.2:
        raw = raw[: int(rng.integers(len(raw)))] if rng.random() < 0.5 else raw + bytes(int(rng.integers(1, 9)))
    body = b"".join(struct.pack(">I", len(p)) + k + p + struct.pack(">I", c) for k, p, c in found if k != b"IDAT"
                    and k != b"IEND")
    idat = zlib.compress(bytes(raw), 1)
    idat_chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return data[:8] + body + idat_chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    op = int(rng.integers(8))
    b = bytearray(data)
    if op == 0:  # flip bytes anywhere (CRCs now wrong)
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(8, len(b)))] ^= int(rng.integers(1, 256))
        return bytes(b)
    if op == 1:  # flip bytes, CRCs fixed: the damage reaches IHDR checks / inflate
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(8, len(b)))] ^= 1 << int(rng.integers(8))
        return with_crcs_fixed(bytes(b))
    if op == 2:  # cut off anywhere
        return bytes(b[: int(rng.integers(0, len(b)))])
    if op == 3:  # IHDR fields: size, depth, colour type, methods
        field = int(rng.choice([16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28]))
        b[field] = int(rng.integers(0, 256)) if rng.random() < 0.3 else (b[field] + int(rng.integers(-2, 3))) % 256
        return with_crcs_fixed(bytes(b))
    if op == 4:  # mutated scanlines, deflated again: exercises unfilter on arbitrary filter bytes
        return reencoded(data, rng)
    if op == 5:  # insert or delete bytes
        at = int(rng.integers(8, len(b)))
        if rng.random() < 0.5:
            del b[at : at + int(rng.integers(1, 9))]
        else:
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        return bytes(b) if rng.random() < 0.5 else with_crcs_fixed(bytes(b))
    if op == 6:  # drop, duplicate or move a whole chunk
        found = chunks(data)
        parts = [struct.pack(">I", len(p)) + k + p + struct.pack(">I", c) for k, p, c in found]
        i, j = int(rng.integers(len(parts))), int(rng.integers(len(parts)))
        action = int(rng.integers(3))
        if action == 0:
            del parts[i]
        elif action == 1:
            parts.insert(j, parts[i])
        else:
            parts.insert(j, parts.pop(i))
        return data[:8] + b"".join(parts)
    # op 7: a damaged zlib checksum (adler32) with valid CRCs: Pillow alone decodes this as if fine
    found = chunks(data)
    idat = bytearray(b"".join(p for k, p, _ in found if k == b"IDAT"))
    idat[-1 - int(rng.integers(4))] ^= 1 << int(rng.integers(8))
    body = b"".join(struct.pack(">I", len(p)) + k + p + struct.pack(">I", c) for k, p, c in found if k != b"IDAT"
                    and k != b"IEND")
    chunk = struct.pack(">I", len(idat)) + b"IDAT" + bytes(idat) + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return data[:8] + body + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def run_cases(seeds: list[bytes], n: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = {"ok": 0, "error": 0}
    for seed_png in seeds:
        assert check(seed_png) == "ok"  # every seed decodes exactly as Pillow does
    for k in range(n):
        counts[check(mutate(seeds[k % len(seeds)], rng))] += 1
    return counts


def test_fuzz_synthetic_pngs_of_every_mode():
    counts = run_cases(synthetic_seeds(), 3000, seed=1)
    # Both outcomes are exercised in bulk: mutations that keep a valid file, and every kind of damage.
    assert counts["ok"] >= 300 and counts["error"] >= 1500, counts


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/nih-sample (real NIH PNGs) is not present")
def test_fuzz_real_nih_pngs():
    files = sorted(SAMPLE.glob("*.png"))
    # Five 8-bit grey radiographs and one RGBA: the real filter mix (Paeth/Average) at 1024x1024.
    grey = [f.read_bytes() for f in files if f.read_bytes()[25] == 0][:5]
    rgba = [f.read_bytes() for f in files if f.read_bytes()[25] == 6][:1]
    counts = run_cases(grey + rgba, 900, seed=2)
    assert counts["ok"] >= 50 and counts["error"] >= 500, counts


def test_reference_agrees_on_the_basic_damage_kinds():
    """The reference above is itself checked: it refuses what Pillow refuses and also what only the strict
    checks catch. Pillow stops reading once it has every pixel, so it decodes a wrong adler32 (kept in an IDAT
    chunk of its own, as streaming encoders may write it) and a wrong IDAT CRC without complaint."""
    data = synthetic_seeds()[0]
    assert reference(data) is not None
    assert reference(data[: len(data) // 2]) is None
    found = chunks(data)
    stream = bytearray(b"".join(p for k, p, _ in found if k == b"IDAT"))
    stream[-1] ^= 0x10  # the adler32's last byte

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = chunk(b"IHDR", found[0][1])
    bad_adler = data[:8] + header + chunk(b"IDAT", bytes(stream[:-4])) + chunk(b"IDAT", bytes(stream[-4:])) + \
        chunk(b"IEND", b"")
    pillow = Image.open(io.BytesIO(bad_adler))
    pillow.load()  # Pillow: fine
    assert reference(bad_adler) is None
    assert check(bad_adler) == "error"
    with pytest.raises(DecodeError, match="fails its zlib checksum"):
        decode_gray8(bad_adler)
    bad_crc = bytearray(data)
    bad_crc[data.index(b"IEND") - 5] ^= 0x01  # the IDAT chunk's CRC (IEND's length field is in between)
    Image.open(io.BytesIO(bytes(bad_crc))).load()  # Pillow: fine
    assert reference(bytes(bad_crc)) is None
    assert check(bytes(bad_crc)) == "error"
