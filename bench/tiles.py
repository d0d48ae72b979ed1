"""Tile-ensemble training (issue 4), one run on one synthetic archive with small findings:

- training tiles/s of one position, bf16 autocast vs fp32 (same tiles, same model, one thread);
- 2 trainer actors on 2 cores vs the same positions trained one after the other (one actor, one CPU;
  and, as a stricter baseline, one actor with both cores): the positions phase (train + export of every
  position) and the whole job (with decode, join and Ray start-up);
- the ensemble's test mean AUROC (mean, max, stacked joins) vs a single whole-image model with the same
  per-model input size; heatmap localisation against the archive's boxes;
- INT8 ensemble vs FP32 ensemble mean AUROC.

    .venv/bin/python -m bench.tiles                 (about 27 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from bench.core_scaling import training_speed
from bench.doc_sections import machine_line, write_section
from jobs import synth, train, train_tiles
from xray.models.precision import Precision, has_amx_bf16


def math_speed(tile: int, n: int, epochs: int) -> dict[str, float]:
    """Tiles/s of one position model, fp32 vs bf16."""
    return {p.value: training_speed(p, tile, n, epochs) for p in (Precision.FP32, Precision.BF16)}


def timed_run(cfg: train_tiles.TrainTilesConfig, cpus: int) -> tuple[float, train_tiles.TrainTilesSummary]:
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        summary = train_tiles.run(cfg)
        return time.perf_counter() - t0, summary
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=900)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--finding-scale", type=float, default=0.5, help="synth size factor of focal findings")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the three settings")
    args = parser.parse_args()
    image, tile, stride = args.image_size, args.tile_size, args.stride
    speed = math_speed(tile, 512, 4)
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "archive")
        synth.run(synth.SynthConfig(out=archive, n_images=args.images, size=512, shards=4, seed=21,
                                    finding_scale=args.finding_scale))
        common = dict(archive=archive, image_size=image, tile_size=tile, stride=stride, backbone="dwsep_cnn",
                      epochs=args.epochs, batch_size=32, calibration_size=200, train_precision="fp32", seed=0)
        # Rounds in alternating order (P S1 S2, then S2 S1 P, ...): this shared machine's speed drifts by tens
        # of percent over minutes, so one run per setting can flip a ratio; each round gives a paired ratio.
        settings = [("parallel", 2, 1.0), ("sequential_1cpu", 1, 1.0), ("sequential_2cpu", 2, 2.0)]
        rounds: list[dict[str, tuple[float, train_tiles.TrainTilesSummary]]] = []
        for r in range(args.rounds):
            rounds.append({})
            for name, cpus, actor_cpus in (settings if r % 2 == 0 else settings[::-1]):
                cfg = train_tiles.TrainTilesConfig(out=os.path.join(tmp, f"{name}-{r}"), actor_cpus=actor_cpus,
                                                   **common)
                rounds[r][name] = timed_run(cfg, cpus)
        runs = rounds[0]
        single = train.run(train.TrainConfig(archive=archive, out=os.path.join(tmp, "single"), backbone="dwsep_cnn",
                                             input_size=tile, epochs=args.epochs, batch_size=32, seed=0,
                                             train_precision="fp32"))
    ens = runs["parallel"][1]
    ev = ens.evaluation
    fp32, int8 = ev.test_mean_auroc["fp32"], ev.test_mean_auroc["int8"]
    loc = ev.localisation
    tiles_s = [r.tiles_per_s for r in ens.positions]
    rows = "\n".join(f"| {c} | {fp32[c]:.4f} | {int8[c]:.4f} | {int8[c] - fp32[c]:+.4f} |" for c in fp32)
    best = max(fp32, key=fp32.get)
    delta = int8[best] - fp32[best]
    bf16_ratio = speed["bf16"] / speed["fp32"]
    names = ("parallel", "sequential_1cpu", "sequential_2cpu")
    pos = {n: [r[n][1].phases["positions"] for r in rounds] for n in names}
    whole = {n: [r[n][0] for r in rounds] for n in names}

    def speedup(series: dict[str, list[float]], name: str) -> str:
        """Mean over rounds of the baseline's time over the parallel time, then each round's ratio."""
        ratios = [b / p for b, p in zip(series[name], series["parallel"], strict=True)]
        return f"{np.mean(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)})"

    def seconds(series: dict[str, list[float]], name: str) -> str:
        return " / ".join(f"{x:.1f}" for x in series[name])

    grid = ens.grid
    md = f"""## Tile-ensemble training (issue 4)

Command: `.venv/bin/python -m bench.tiles --images {args.images} --epochs {args.epochs} --image-size {image} \
--tile-size {tile} --stride {stride} --finding-scale {args.finding_scale} --rounds {args.rounds}`
Machine: {machine_line()}.
Synthetic archive: {args.images} images at 512 px, focal findings drawn at {args.finding_scale}x their usual size
(`tilescope synth --finding-scale`), decoded once at {image} px; grid {grid[0]}x{grid[1]} of {tile} px tiles,
stride {stride} ({grid[0] * grid[1]} positions), dwsep_cnn, {args.epochs} epochs, batch 32, fp32.

**bf16 vs fp32** (one position model, 1 thread, {tile} px tiles): fp32 {speed['fp32']:.1f} tiles/s, bf16
{speed['bf16']:.1f} tiles/s, ratio {bf16_ratio:.2f}x (target >= 1.5x on AMX; this CPU has
{'AMX' if has_amx_bf16() else 'no AMX, so bf16 is emulated and auto mode trains in fp32'}).

**Parallel actors** (wall time of the positions phase, every position trained and exported, and of the whole
`train_tiles.run`: Ray start-up, decode, positions, join and save):

| run | Ray CPUs | actor CPUs | positions s, per round | speed-up of 2 actors: mean (per round) | whole job s, per round | speed-up of 2 actors: mean (per round) |
|---|---|---|---|---|---|---|
| 2 actors at once | 2 | 1 | {seconds(pos, 'parallel')} | 1.00x | {seconds(whole, 'parallel')} | 1.00x |
| one after the other, 1 CPU | 1 | 1 | {seconds(pos, 'sequential_1cpu')} | {speedup(pos, 'sequential_1cpu')} | {seconds(whole, 'sequential_1cpu')} | {speedup(whole, 'sequential_1cpu')} |
| one after the other, 2 CPUs each | 2 | 2 | {seconds(pos, 'sequential_2cpu')} | {speedup(pos, 'sequential_2cpu')} | {seconds(whole, 'sequential_2cpu')} | {speedup(whole, 'sequential_2cpu')} |

{args.rounds} rounds, in alternating order (round 1: 2 actors, 1 CPU, 2 CPUs; round 2 the reverse; ...).
Target: >= 1.7x over one after the other. Per-actor training throughput in the parallel run:
{', '.join(f'{t:.0f}' for t in tiles_s)} tiles/s.

**Accuracy** (test split, {ens.positions[0].history[-1]['epoch'] + 1} epochs):

| join | FP32 ensemble mean AUROC | INT8 ensemble | INT8 - FP32 |
|---|---|---|---|
{rows}

Single whole-image model at the same per-model input ({tile} px: the {image} px image downscaled), same epochs: test mean AUROC
{single.test_mean_auroc:.4f}. Best ensemble join ({best}) minus single: {fp32[best] - single.test_mean_auroc:+.4f}
(target: ensemble above single). INT8 vs FP32 for that join: {delta:+.4f} (target |delta| <= 0.005:
{'met' if abs(delta) <= 0.005 else 'NOT met'}). Each position alone: """ + ", ".join(
        f"{a:.3f}" for a in ev.position_test_mean_auroc) + f""".

Localisation (test images with boxes): {'none' if loc is None else
f'{loc.boxes} boxes, heatmap peak inside the box {loc.peak_in_box:.1%} vs {loc.chance:.1%} for a random cell'}.
"""
    write_section("tiles", md)
    print(md)


if __name__ == "__main__":
    main()
