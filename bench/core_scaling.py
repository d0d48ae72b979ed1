"""How far this machine's cores scale, without Ray: the ceiling for the parallel speed-ups in the other
benchmarks. One process alone vs two identical processes at once, each with one thread:

- training: one tile-position model (dwsep_cnn, fp32, 128 px tiles, batch 32), tiles/s;
- PNG decode (1024 px synthetic radiograph -> 224 px uint8), images/s.

The speed-up of two at once is (sum of both throughputs) / (throughput alone); 2.0 means two independent
cores. On a VM whose two vCPUs share a physical core or its memory bandwidth it is lower, and no scheduler
(Ray's included) can beat it.

    .venv/bin/python -m bench.core_scaling          (about 2 minutes)
"""

from __future__ import annotations

import multiprocessing as mp
import time

from bench.doc_sections import machine_line, write_section

TILE, TILES, EPOCHS = 128, 512, 4


def train_tiles_per_s(_: int = 0) -> float:
    from bench.tiles import training_speed
    from xray.precision import Precision

    return training_speed(Precision.FP32, TILE, TILES, EPOCHS)


def decode_images_per_s(_: int = 0) -> float:
    from xray.decode import decode_resized
    from xray.synth import encode_png, synth_case

    blobs = [encode_png(synth_case(i, seed=1, size=1024).image) for i in range(8)]
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 15.0:
        decode_resized(blobs[n % len(blobs)], 224)
        n += 1
    return n / (time.perf_counter() - t0)


def alone_and_pair(fn) -> tuple[float, list[float]]:
    ctx = mp.get_context("spawn")  # fresh interpreters: no thread pools inherited from this one
    with ctx.Pool(1) as pool:
        alone = pool.map(fn, [0])[0]
    with ctx.Pool(2) as pool:
        pair = pool.map(fn, [0, 1], chunksize=1)
    return alone, pair


def main() -> None:
    rows = []
    for name, unit, fn in (("training, dwsep_cnn fp32 128 px, 1 thread", "tiles/s", train_tiles_per_s),
                           ("PNG decode 1024 -> 224 px", "images/s", decode_images_per_s)):
        alone, pair = alone_and_pair(fn)
        rows.append(f"| {name} | {alone:.0f} {unit} | {pair[0]:.0f} + {pair[1]:.0f} {unit} | "
                    f"{sum(pair) / alone:.2f}x |")
    md = f"""## Core scaling of this machine (ceiling for the parallel speed-ups)

Command: `.venv/bin/python -m bench.core_scaling`
Machine: {machine_line()}.
No Ray: one process alone, then two identical processes at once (one thread each).

| work | one process alone | two at once | speed-up of two (2.00x = two free cores) |
|---|---|---|---|
""" + "\n".join(rows) + "\n"
    write_section("core_scaling", md)
    print(md)


if __name__ == "__main__":
    main()
