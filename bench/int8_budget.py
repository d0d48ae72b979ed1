"""INT8 that keeps the decisions (issue 27): for each backbone, every quantize recipe judged by its decision figures
on the model's validation patients, as `tilescope quantize` measures them: worst-label and mean flag flips at FP32's
sensitivity-0.9 thresholds, p99 |dp|, mean AUROC drop, INT8 images/s relative to the fully quantized default
recipe (histogram-fast) on the same host in the same run, quantize wall time, and which recipe the default
search (`--recipe auto`) would keep.

Each backbone is trained by tilescope's train job on one synthetic archive (the sizes and epochs of
bench.calibration's PLANS), then quantized once per recipe (`quantize --recipe NAME --allow-over-budget`) with the
same calibration images and budget images; threads fixed (torch 2, OpenVINO the machine's cores).

    .venv/bin/python -m bench.int8_budget                                   (all five backbones)
    .venv/bin/python -m bench.int8_budget --backbones dwsep_cnn resnet18    (part: replaces only their rows)
    .venv/bin/python -m bench.int8_budget --quick                           (dwsep_cnn, tiny; writes nothing)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
import time

import torch

from actors.scorer import Int8Scorer
from bench.calibration import PLANS, QUICK_PLAN, Plan, artifact_input_size
from bench.doc_sections import DOC, machine_line, write_section
from bench.inference import scorer_throughput, synthetic_pixels
from jobs import quantize, synth, train
from jobs.quantize_recipes import ACCURACY_CONTROL, PTQ_RECIPES, QAT

RECIPES = (*(r.name for r in PTQ_RECIPES), QAT, ACCURACY_CONTROL)
BF16 = "fp32-as-bf16"
"""Not a recipe: the FP32 IR run in bf16 on the same images (quantize's `bf16_reference`), for scale."""
SECTION = "int8-budget"
ROW = re.compile(r"^\| `(?P<backbone>[a-z0-9_]+)` \| (?P<recipe>[a-z0-9-]+)(?: \*\*\(auto\)\*\*)? \|")


def measure_backbone(name: str, plan: Plan, archive: str, workdir: str, n_budget: int, seconds: float) -> dict:
    cores = os.cpu_count() or 1
    cache = os.path.join(workdir, "cache")
    ckpt = os.path.join(workdir, f"{name}-ckpt")
    t0 = time.perf_counter()
    trained = train.run(train.TrainConfig(archive=archive, out=ckpt, backbone=name, input_size=plan.input_size,
                                          epochs=plan.epochs, lr=plan.lr, batch_size=plan.batch_size, seed=0))
    rows, bf16 = {}, None
    for recipe in RECIPES:
        out = os.path.join(workdir, f"{name}-{recipe}")
        t1 = time.perf_counter()
        summary = quantize.run(quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=out, seed=0,
                                                       budget_size=n_budget, eval_size=0,
                                                       bf16_metrics=recipe == RECIPES[0],
                                                       recipe=recipe, allow_over_budget=True))
        wall = time.perf_counter() - t1
        candidate = summary.decision["candidates"][0]
        if summary.decision.get("bf16_reference"):
            bf16 = summary.decision["bf16_reference"]
        scorer = Int8Scorer(out, precision="int8", threads=cores, streams=cores, infer_batch=8, cache_dir=cache)
        speed = scorer_throughput(scorer, synthetic_pixels(8 * cores * 4, artifact_input_size(out)), seconds)
        rows[recipe] = {**candidate, "wall_s": wall, "scorer_images_per_s": speed}
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ckpt, ignore_errors=True)
    if bf16:
        rows[BF16] = {**bf16, "met": False, "float_compute_layers": None, "wall_s": None,
                      "scorer_images_per_s": None}
    return {"plan": plan, "train_seconds": time.perf_counter() - t0 - sum(r["wall_s"] or 0.0 for r in rows.values()),
            "test_mean_auroc": trained.test_mean_auroc,
            "rows": rows}


def default_choice(rows: dict) -> str:
    """What `--recipe auto` keeps: the first post-training recipe within budget, else QAT, else accuracy control
    (when it leaves a layer INT8), else none."""
    for recipe in RECIPES:
        if rows[recipe]["met"]:
            return recipe
    return "none within budget"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def render_rows(name: str, result: dict) -> list[str]:
    rows = result["rows"]
    base = rows["histogram-fast"]["scorer_images_per_s"]
    chosen = default_choice(rows)
    out = []
    for recipe, r in rows.items():
        if recipe == BF16:
            out.append(f"| `{name}` | {BF16} | {_pct(r['worst_label_flips'])} ({r['worst_label']}) | "
                       f"{_pct(r['mean_flips'])} | {r['p99_abs_prob_diff']:.3f} | {r['auroc_drop']:+.4f} | (for scale: "
                       f"ran as {r['ran']}) | - | - | - |")
            continue
        speed = r["scorer_images_per_s"] / base if base else math.nan
        floats = f"{r['float_compute_layers']}/{r['compute_layers']}"
        mark = " **(auto)**" if recipe == chosen else ""
        out.append(f"| `{name}` | {recipe}{mark} | {_pct(r['worst_label_flips'])} ({r['worst_label']}) | "
                   f"{_pct(r['mean_flips'])} | {r['p99_abs_prob_diff']:.3f} | {r['auroc_drop']:+.4f} | "
                   f"{'yes' if r['met'] else 'no'} | {floats} | {speed:.2f}x | {r['wall_s']:.0f} s |")
    return out


def render(results: dict, command: str, n_budget: int, earlier_rows: list[str]) -> str:
    lines = [f"### INT8 that keeps the decisions (`{command}`)", "",
             f"Machine: {machine_line()}. Every recipe of `tilescope quantize` on each backbone, judged on up to "
             f"{n_budget} images of the model's validation patients (never the test split): flips at FP32's "
             "sensitivity-0.9 thresholds (worst label and mean), p99 |p_fp32 - p_int8|, mean AUROC drop (FP32 minus "
             "INT8), within the default budget (worst flips <= 1%, p99 <= 0.05), compute layers left in float, INT8 "
             "images/s of the written artifact relative to histogram-fast (Int8Scorer, same run, same host), and "
             "quantize wall time. **(auto)** marks what the default search keeps. Flip counts leave out the image each "
             "threshold was fit on (it sits exactly on it; no test image does). The fp32-as-bf16 row is no recipe: the "
             "FP32 IR run in bf16 on the same images, for scale (native on avx512_bf16 / AMX).", "",
             "| backbone | recipe | worst-label flips | mean flips | p99 \\|dp\\| | AUROC drop | within budget | float "
             "layers | INT8 speed vs histogram-fast | quantize time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    measured = {name for name in results}
    kept = [row for row in earlier_rows if (m := ROW.match(row)) and m["backbone"] not in measured]
    body = kept + [row for name, r in results.items() for row in render_rows(name, r)]
    order = {name: i for i, name in enumerate(PLANS)}
    ranks = (*RECIPES, BF16)
    body.sort(key=lambda row: (order.get(ROW.match(row)["backbone"], 99), ranks.index(
        ROW.match(row)["recipe"]) if ROW.match(row)["recipe"] in ranks else 99))
    lines += body
    lines += ["", "Models (trained by `tilescope train` on one synthetic archive; test mean AUROC of FP32): "
              + "; ".join(f"`{n}` {r['plan'].input_size} px, {r['plan'].epochs} epochs, test AUROC "
                          f"{r['test_mean_auroc']:.3f}, {r['rows']['histogram-fast']['images']} budget images"
                          for n, r in results.items())]
    return "\n".join(lines)


def earlier_table_rows() -> list[str]:
    if not os.path.exists(DOC):
        return []
    text = open(DOC).read()
    m = re.search(rf"<!-- bench:{SECTION} -->(.*?)<!-- /bench:{SECTION} -->", text, re.S)
    return [line for line in (m.group(1).splitlines() if m else []) if ROW.match(line)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list(PLANS), default=list(PLANS))
    parser.add_argument("--n-images", type=int, default=3000, help="images of the synthetic archive")
    parser.add_argument("--budget-size", type=int, default=500, help="quantize --budget-size")
    parser.add_argument("--quick", action="store_true", help="dwsep_cnn, tiny sizes; writes nothing")
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = ["dwsep_cnn"] if args.quick else args.backbones
    n_images = 300 if args.quick else args.n_images
    command = ".venv/bin/python -m bench.int8_budget" + (" --quick" if args.quick else "") + (
        f" --backbones {' '.join(names)}" if names != list(PLANS) and not args.quick else "") + (
        f" --n-images {n_images}" if n_images != 3000 and not args.quick else "")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "archive")
        synth.run(synth.SynthConfig(out=archive, n_images=n_images, size=128 if args.quick else 256, shards=2,
                                    seed=7))
        for name in names:
            results[name] = measure_backbone(name, QUICK_PLAN if args.quick else PLANS[name], archive, tmp,
                                             args.budget_size, 0.3 if args.quick else 3.0)
            print(json.dumps({name: {k: {kk: vv for kk, vv in v.items() if kk not in ("flip_share", "fp32_thresholds")}
                                     for k, v in results[name]["rows"].items()}}, default=str), flush=True)
            md = render(results, command, args.budget_size, [] if args.quick else earlier_table_rows())
            if not args.quick:
                write_section(SECTION, md)  # after every backbone: an interrupted run keeps what it measured
    print(md)


if __name__ == "__main__":
    main()
