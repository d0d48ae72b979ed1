"""PNG decode and the tar.gz layer on real NIH PNGs (issue 16), one process, one run, CPU time per image:

- the candidates: today's path before issue 16 (Pillow), whole-image decoders from wheels where installed
  (imagecodecs png/spng, OpenCV, pyspng), and the building blocks of tilescope's path: chunk walk + CRCs,
  inflate (zlib, zlib-ng, ISA-L, libdeflate), unfilter (numba), resize (Pillow reduce + bilinear);
- decode_resized before vs now on the real sample (target >= 1.8x), and on synthetic PNGs (`tilescope synth`):
  synthetic vs real decode time per image (target within 15%);
- the tar.gz layer: gzip inflate per image through storage.gzip_members with each inflater, on a shard of the
  real sample (zlib-ng or ISA-L is used if >= 1.5x zlib).

Reads ../shared/nih-sample (never copied into the repository); writes the "decode" section of
docs/BENCHMARKS.md with the machine's ISA line.

    .venv/bin/python -m bench.decode                 (about 1 minute on 2 cores)
    .venv/bin/python -m bench.decode --rounds 1 --synthetic 4 --no-write   (a quick check)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.doc_sections import machine_line, write_section
from storage.gzip_members import INFLATERS, GzipMembers, inflater_module
from xray.codec import decode, png, png_unfilter
from xray.synth.images import encode_png, synth_case

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "nih-sample"
SIZE = 224


def legacy_decode_resized(data: bytes, size: int = SIZE) -> np.ndarray:
    """decode_resized as it was before issue 16: Pillow decodes, the same conversion and resize follow."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return decode.resize_gray(decode._to_gray8(img), size)


def idat_of(data: bytes) -> tuple[bytes, png.PngHeader]:
    header = png.read_header(data)
    return png.read_chunks(data, header).idat, header


def cpu_ms(fn: Callable[[bytes], object], items: list, rounds: int) -> float:
    """Best over rounds of CPU milliseconds per item (process time: other processes' load does not count)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for item in items:
            fn(item)
        best = min(best, (time.process_time() - t0) / len(items) * 1000)
    return best


def optional_decoders() -> dict[str, Callable[[bytes], object] | str]:
    """Whole-image decoders from wheels, or why they are missing (pip install imagecodecs opencv-python-headless
    pyspng to include them)."""
    out: dict[str, Callable[[bytes], object] | str] = {}
    try:
        import imagecodecs

        out["imagecodecs png_decode (libpng)"] = imagecodecs.png_decode
        if hasattr(imagecodecs, "spng_decode"):
            out["imagecodecs spng_decode (libspng)"] = imagecodecs.spng_decode
    except ImportError:
        out["imagecodecs"] = "not installed"
    try:
        import cv2

        out["cv2.imdecode (OpenCV, libpng)"] = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)
    except ImportError:
        out["cv2.imdecode"] = "not installed"
    try:
        import pyspng

        out["pyspng.load (libspng)"] = pyspng.load
    except ImportError:
        out["pyspng.load"] = "not installed"
    return out


def inflaters() -> dict[str, Callable[[tuple[bytes, png.PngHeader]], object]]:
    out = {"zlib (stdlib)": lambda p: zlib.decompress(p[0])}
    for name in ("zlib-ng", "isal"):
        try:
            module = inflater_module(name)
        except ImportError:
            continue
        out[name] = lambda p, m=module: m.decompress(p[0])
    try:
        import deflate

        out["libdeflate (deflate), exact output size"] = lambda p: deflate.zlib_decompress(p[0], p[1].raw_size)
    except ImportError:
        pass
    return out


def real_shard(blobs: list[bytes], copies: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for k in range(copies):
            for j, data in enumerate(blobs):
                info = tarfile.TarInfo(f"images/{k:04d}{j:04d}_000.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_ms_per_image(shard: bytes, images: int, module, rounds: int) -> tuple[float, float]:
    """(inflate only, inflate + tar parse + member read) CPU ms per image through GzipMembers."""
    def inflate_only(_: object) -> None:
        stream = GzipMembers(io.BytesIO(shard), module)
        while stream.read(1 << 20):
            pass

    def through_tar(_: object) -> None:
        with tarfile.open(fileobj=GzipMembers(io.BytesIO(shard), module), mode="r|") as tar:
            for info in tar:
                tar.extractfile(info).read()

    return (cpu_ms(inflate_only, [0], rounds) / images, cpu_ms(through_tar, [0], rounds) / images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement (the best is kept)")
    parser.add_argument("--synthetic", type=int, default=24, help="synthetic 1024 px PNGs to compare with")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        raise SystemExit(f"{SAMPLE} not found: this benchmark needs the real NIH sample (../shared/nih-sample)")
    files = sorted(SAMPLE.glob("*.png"))
    real = [f.read_bytes() for f in files]
    grey = [b for b in real if png.read_header(b).color_type == 0]
    synthetic = [encode_png(synth_case(i, seed=1, size=1024).image) for i in range(args.synthetic)]
    decode.decode_resized(grey[0], SIZE)  # numba: compile or load from its cache before timing
    r = args.rounds

    # Whole-image candidates (8-bit grey real PNGs, decode to pixels, no resize).
    candidates: dict[str, float | str] = {"Pillow 13 (`Image.open` + `load`), tilescope before issue 16":
                                          cpu_ms(lambda b: Image.open(io.BytesIO(b)).load(), grey, r)}
    for name, fn in optional_decoders().items():
        candidates[name] = fn if isinstance(fn, str) else cpu_ms(fn, grey, r)
    candidates["tilescope `decode_gray8` (strict chunks + libdeflate + numba unfilter)"] = \
        cpu_ms(decode.decode_gray8, grey, r)

    # Building blocks of tilescope's path.
    parts = [idat_of(b) for b in grey]
    raws = [png.inflate(png.read_chunks(b, png.read_header(b))) for b in grey]
    blocks: dict[str, float] = {"chunk walk + every CRC (xray.codec.png)": cpu_ms(lambda b: idat_of(b), grey, r)}
    for name, fn in inflaters().items():
        blocks[f"inflate IDAT: {name}"] = cpu_ms(fn, parts, r)
    if png_unfilter.AVAILABLE:
        blocks["unfilter (numba, Paeth/Average rows in pairs)"] = cpu_ms(
            lambda raw: png_unfilter.unfilter(raw, 1024, 1024, 1), raws, r)
    gray_images = [Image.fromarray(decode.decode_gray8(b)) for b in grey]
    blocks[f"resize 1024 -> {SIZE} (reduce 4 + bilinear)"] = cpu_ms(lambda g: decode.resize_gray(g, SIZE), gray_images, r)

    # decode_resized before vs now, real (all 48, RGBA included, and grey only) and synthetic.
    before_all, now_all = cpu_ms(legacy_decode_resized, real, r), cpu_ms(lambda b: decode.decode_resized(b, SIZE), real, r)
    before_grey = cpu_ms(legacy_decode_resized, grey, r)
    now_grey = cpu_ms(lambda b: decode.decode_resized(b, SIZE), grey, r)
    before_syn = cpu_ms(legacy_decode_resized, synthetic, r)
    now_syn = cpu_ms(lambda b: decode.decode_resized(b, SIZE), synthetic, r)

    # The tar.gz layer.
    copies = 4
    shard = real_shard(real, copies)
    n_shard = copies * len(real)
    gz = {}
    for name in INFLATERS:
        try:
            gz[name] = gzip_ms_per_image(shard, n_shard, inflater_module(name), r)
        except ImportError:
            continue
    default_gz = inflater_module()
    default_name = next(n for n in INFLATERS if inflater_module(n) is default_gz)

    rows = "\n".join(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in candidates.items())
    block_rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in blocks.items())
    gz_rows = "\n".join(f"| {k} | {v[0]:.3f} | {gz['zlib'][0] / v[0]:.2f}x | {v[1]:.3f} |" for k, v in gz.items())
    mean_kb = lambda bl: sum(map(len, bl)) / len(bl) / 1000  # noqa: E731
    md = f"""## PNG decode (issue 16)

Command: `.venv/bin/python -m bench.decode --rounds {r} --synthetic {args.synthetic}`
Machine: {machine_line()}.
One process; CPU ms per image, best of {r} rounds. Real: the {len(real)} NIH PNGs of ../shared/nih-sample
({len(grey)} 8-bit grey, {len(real) - len(grey)} RGBA; 1024x1024, {mean_kb(grey):.0f} KB per grey PNG); synthetic:
{args.synthetic} `tilescope synth` PNGs at 1024 px ({mean_kb(synthetic):.0f} KB).

Whole-image decoders, 8-bit grey real PNGs -> pixels (no resize):

| candidate | ms/image |
|---|---|
{rows}

tilescope's path, piece by piece (8-bit grey real PNGs):

| step | ms/image |
|---|---|
{block_rows}

`decode_resized(png, {SIZE})` (bytes -> model input), before issue 16 (Pillow) vs now:

| images | before ms | now ms | speed-up (target >= 1.8x on real) |
|---|---|---|---|
| real, 8-bit grey ({len(grey)}) | {before_grey:.2f} | {now_grey:.2f} | {before_grey / now_grey:.2f}x |
| real, all ({len(real)}, RGBA via Pillow's unpacker) | {before_all:.2f} | {now_all:.2f} | {before_all / now_all:.2f}x |
| synthetic ({args.synthetic}) | {before_syn:.2f} | {now_syn:.2f} | {before_syn / now_syn:.2f}x |

Synthetic vs real decode time per image (now): {now_syn:.2f} vs {now_grey:.2f} ms, {(now_syn / now_grey - 1) * 100:+.1f}%
(target within 15%).

tar.gz inflate per image through `storage.gzip_members` ({n_shard} real PNGs in one shard; default
inflater here: {default_name}):

| inflater | inflate ms/image | vs zlib | inflate + tar + read ms/image |
|---|---|---|---|
{gz_rows}
"""
    if not args.no_write:
        write_section("decode", md)
    print(md)
    print(json.dumps({"before_grey": before_grey, "now_grey": now_grey, "speedup": before_grey / now_grey,
                      "synthetic_vs_real": now_syn / now_grey, "gzip": gz}))


if __name__ == "__main__":
    os.environ.pop(decode.DECODER_ENV, None)
    main()
