"""How far a machine's cores scale, without Ray: the ceiling for the parallel speed-ups in the other
benchmarks. One process alone vs P identical processes at once, each with one thread, which is how the
tile trainers (one position per actor, --actor-cpus 1) and the scoring actors (--actor-cpus 1) use a node:

- training: one tile-position model (dwsep_cnn, fp32, 128 px tiles, batch 32), tiles/s;
- PNG decode (1024 px synthetic radiograph -> 224 px uint8), images/s;
- scoring (with --ir): that decode, then an INT8 IR on OpenVINO (1 thread, batch 8), images/s.

The speed-up of P at once is (sum of their throughputs) / (throughput alone); P.00x means P independent
cores. On a VM whose vCPUs share physical cores or memory bandwidth it is lower, and no scheduler (Ray's
included) can beat it.

    .venv/bin/python -m bench.core_scaling                          (this machine: 1 and 2; about 2 minutes)
    python -m bench.core_scaling --procs 1,2,4,8,16 --ir DIR/model.xml --section core_scaling_wide
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import time

from bench.doc_sections import machine_line, write_section

TILE, TILES, EPOCHS = 128, 512, 4


def training_speed(precision, tile: int, n: int, epochs: int) -> float:
    """Tiles/s of one position model (dwsep_cnn) on n random tiles, one thread (median epoch after the first)."""
    import numpy as np
    import torch

    from xray.metadata.labels import LABELS
    from xray.models.precision import MathPath, has_amx_bf16
    from xray.models.registry import ModelSpec, build_model
    from xray.models.training import fit

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 1, tile, tile), dtype=np.uint8)
    y = (rng.random((n, len(LABELS))) < 0.2).astype(np.float32)
    path = MathPath(precision=precision, channels_last=True, ipex=None, amx=has_amx_bf16())
    model = build_model(ModelSpec("dwsep_cnn", LABELS, tile))
    history = fit(model, (x, y), (x[:8], y[:8]), epochs, 32, 1e-3, path, seed=0)
    return float(np.median([h.images_per_s for h in history[1:]]))


def train_tiles_per_s(seconds: float, _: int = 0) -> float:
    from xray.models.precision import Precision

    epochs = EPOCHS if seconds >= 15 else 3
    return training_speed(Precision.FP32, TILE, TILES, epochs)


def _blobs(n: int = 8) -> list[bytes]:
    from xray.synth.images import encode_png, synth_case

    return [encode_png(synth_case(i, seed=1, size=1024).image) for i in range(n)]


def decode_images_per_s(seconds: float, _: int = 0) -> float:
    from xray.codec.decode import decode_resized

    blobs = _blobs()
    decode_resized(blobs[0], 224)  # numba compiles outside the timing
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        decode_resized(blobs[n % len(blobs)], 224)
        n += 1
    return n / (time.perf_counter() - t0)


def score_images_per_s(ir_xml: str, seconds: float, _: int = 0) -> float:
    """Decode + INT8 inference in batches of 8 on one thread (what one scoring actor with 1 CPU does)."""
    import numpy as np
    import openvino as ov

    from actors.openvino_ir import IRPrecision, compile_cpu
    from xray.codec.decode import decode_resized

    blobs = _blobs()
    compiled = compile_cpu(ov.Core().read_model(ir_xml), IRPrecision.INT8, threads=1)
    request = compiled.create_infer_request()
    request.infer([np.zeros((8, 1, 224, 224), np.uint8)])  # first inference outside the timing
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        batch = np.stack([decode_resized(blobs[(n + k) % len(blobs)], 224) for k in range(8)])[:, None]
        request.infer([batch])
        n += 8
    return n / (time.perf_counter() - t0)


def at_once(fn, procs: int) -> list[float]:
    ctx = mp.get_context("spawn")  # fresh interpreters: no thread pools inherited from this one
    with ctx.Pool(procs) as pool:
        return pool.map(fn, range(procs), chunksize=1)


def versions() -> str:
    out = []
    for name in ("torch", "openvino", "numpy"):
        try:
            out.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated (the first is the baseline)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per process")
    parser.add_argument("--ir", help="INT8 IR (.xml, 224 px grey input) for the scoring row")
    parser.add_argument("--section", default="core_scaling", help="docs/BENCHMARKS.md section to write")
    parser.add_argument("--md-out", help="also write the section's markdown to this file")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    work = [("training, dwsep_cnn fp32 128 px, 1 thread", "tiles/s", functools.partial(train_tiles_per_s, args.seconds)),
            ("PNG decode 1024 -> 224 px", "images/s", functools.partial(decode_images_per_s, args.seconds))]
    if args.ir:
        work.append(("scoring: decode + INT8 DenseNet-121 224 px, batch 8, 1 thread", "images/s",
                     functools.partial(score_images_per_s, args.ir, args.seconds)))
    rows = []
    for name, unit, fn in work:
        results = {p: at_once(fn, p) for p in procs}
        alone = results[procs[0]][0] if procs[0] == 1 else sum(results[procs[0]]) / procs[0]
        cells = [f"{sum(results[p]):.0f} ({sum(results[p]) / alone:.2f}x, {sum(results[p]) / alone / p:.0%})"
                 for p in procs]
        rows.append(f"| {name} ({unit}) | {alone:.0f} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    head = " | ".join(f"{p} at once" for p in procs)
    md = f"""## Core scaling of {'this machine' if args.section == 'core_scaling' else f'a {os.cpu_count()}-core host'} (ceiling for the parallel speed-ups)

Command: `python -m bench.core_scaling --procs {args.procs} --seconds {args.seconds:g}{' --ir MODEL.xml' if args.ir else ''} \
--section {args.section}`
Machine: {machine_line()}; {versions()}.
No Ray: one process alone, then P identical processes at once (one thread each, as the trainer and scoring
actors with --actor-cpus 1 run). Cells: the P processes' summed throughput (speed-up over one alone, per-core
efficiency).

| work | one alone | {head} |
|---|---|{'---|' * len(procs)}
""" + "\n".join(rows) + "\n"
    write_section(args.section, md)
    if args.md_out:
        with open(args.md_out, "w") as f:
            f.write(md)
    print(md)


if __name__ == "__main__":
    main()
