"""Calibration without patient data (issue 19): for each backbone, INT8 calibrated on the archive's own images, on
synthetic chest-like images and on procedural fractals, by NNCF's default algorithm and with accuracy control,
measured against FP32 (f32 hint) on the held-back test split: mean AUROC drop, p99 |dp|, flag flips at the FP32
thresholds, INT8 images/s.

Every model is trained by tilescope's own train job on one synthetic archive (jobs.synth), quantized by the
quantize job (--calibration archive|synthetic|fractal), and evaluated on the archive's test patients, which no
model trained or calibrated on. Writes docs/BENCHMARKS.md (an overview section and one per backbone) and
xray/calibration/calibration_risks.json, the figures `tilescope quantize` reads to warn (xray/calibration/risks.py).

Where the time goes: NNCF's accuracy control first ranks every quantizer by reverting it alone (a new model,
compiled and run on the test images each time): DenseNet-121 has 188, about 4.5 minutes per source on 2 cores.
VGG-16 trains for about 5 minutes. `--backbones` runs part of it; each run replaces only its backbones' sections
and entries.

    .venv/bin/python -m bench.calibration                     (about 40 minutes on 2 cores; writes both files)
    .venv/bin/python -m bench.calibration --backbones vgg16   (one backbone: its section and its entry only)
    .venv/bin/python -m bench.calibration --quick             (under a minute: dwsep_cnn, tiny sizes; writes nothing)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np

from actors.scorer import Int8Scorer
from bench.doc_sections import machine_line, write_section
from bench.inference import scorer_throughput, synthetic_pixels
from jobs import quantize, synth, train
from jobs.quantize_limits import AgreementNotReached
from xray.calibration.risks import (
    ACCURACY_CONTROL,
    DEFAULT,
    SHIPPED,
    BackboneRisks,
    CalibrationRisks,
    Measured,
    RiskRule,
    load_risks,
)
from xray.calibration.sets import CalibrationSource
from xray.models.cpu_isa import this_cpu

RISKS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xray", "calibration", SHIPPED)


@dataclass(frozen=True)
class Plan:
    """How one backbone is trained: small inputs and few epochs so that five fit in one run on 2 cores, yet each
    model is clearly above chance on the test split (reported in its section)."""

    input_size: int
    epochs: int
    lr: float = 1e-3
    batch_size: int = 32


PLANS: dict[str, Plan] = {
    "dwsep_cnn": Plan(64, 12, lr=3e-3),
    # At lr 1e-3 its outputs stayed flat (std < 1e-4 after 8 epochs); 3e-3 learns within a few epochs.
    "mobilenet_v3_small": Plan(64, 20, lr=3e-3),
    "resnet18": Plan(64, 5),
    "densenet121": Plan(64, 3),
    # VGG-16 has no batch norm: from scratch AdamW at 5e-4 left it dead (AUROC 0.5); 1e-4 learns, slowly: 3 epochs
    # gave AUROC 0.69 with outputs that barely spread (std 0.001), 6 epochs 0.68 with std 0.07. Its epochs are the
    # run's slowest (~45 s each on 2 cores).
    "vgg16": Plan(64, 6, lr=1e-4),
}


def parse_plan(text: str) -> tuple[str, Plan]:
    """--plan NAME=SIZE:EPOCHS:LR, e.g. vgg16=48:8:0.0001."""
    name, _, spec = text.partition("=")
    try:
        size, epochs, lr = spec.split(":")
        if name not in PLANS:
            raise ValueError(f"unknown backbone {name!r}")
        return name, Plan(int(size), int(epochs), float(lr))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--plan {text!r}: expected NAME=SIZE:EPOCHS:LR ({exc})") from exc


@dataclass(frozen=True)
class Setting:
    n_images: int = 1500
    synth_size: int = 256
    calibration: int = 300
    eval_size: int = 1000
    """More than the test split holds: every test image."""
    seconds: float = 3.0
    """Measuring time per INT8 images/s figure."""
    max_drop: float = 0.01
    max_prob_diff: float = 0.1


QUICK = Setting(n_images=160, synth_size=128, calibration=16, eval_size=40, seconds=0.3)
QUICK_PLAN = Plan(32, 2, lr=3e-3, batch_size=16)


@dataclass(frozen=True)
class Row:
    """One quantized model: the figures, how long quantizing took, and what NNCF left in float."""

    measured: Measured
    float_layers: str
    seconds: float


def control_flags(s: Setting) -> str:
    return f"--max-drop {s.max_drop:g} --max-prob-diff {s.max_prob_diff:g}"


def _flips(shares) -> tuple[float, float]:
    values = np.asarray(shares, np.float64)
    if values.size == 0 or np.isnan(values).all():
        return math.nan, math.nan
    return float(np.nanmean(values)), float(np.nanmax(values))


def _float_layers(ran_int8: dict) -> str:
    compute = ran_int8.get("compute_layers", {})
    floats = sum(n for key, n in compute.items() if not key.endswith((":u8", ":i8")))
    return f"{floats}/{sum(compute.values())}"


def quantize_one(s: Setting, ckpt: str, archive: str, out: str, source: CalibrationSource, controlled: bool,
                 cores: int, cache: str) -> tuple[Row, quantize.QuantizeSummary | None]:
    """Quantize with one source and algorithm; measure INT8 images/s on the written model. Accuracy control that
    misses its limits writes nothing: the row then holds what it reached, without a speed."""
    limits = {"max_drop": s.max_drop, "max_prob_diff": s.max_prob_diff} if controlled else {}
    cfg = quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=out, calibration=source,
                                  calibration_size=s.calibration, eval_size=s.eval_size, bf16_metrics=False,
                                  seed=0, allow_over_budget=True,
                                  **(limits or {"recipe": "histogram-fast"}))
    t0 = time.perf_counter()
    try:
        summary = quantize.run(cfg)
    except AgreementNotReached as missed:
        assert missed.int8 is not None and missed.ran is not None
        mean, worst = _flips(missed.int8.flip_share)
        measured = Measured(missed.int8.auroc_drop, missed.int8.abs_prob_diff["p99"], mean, worst, None, False)
        return Row(measured, _float_layers(missed.ran.to_json()), time.perf_counter() - t0), None
    seconds = time.perf_counter() - t0
    scorer = Int8Scorer(out, precision="int8", threads=cores, streams=cores, infer_batch=8, cache_dir=cache)
    pixels = synthetic_pixels(8 * cores * 4, artifact_input_size(out))
    mean, worst = _flips(summary.flip_share)
    measured = Measured(summary.fp32_mean_auroc - summary.int8_mean_auroc, summary.p99_abs_prob_diff, mean, worst,
                        scorer_throughput(scorer, pixels, s.seconds), True)
    return Row(measured, _float_layers(summary.ran["int8"]), seconds), summary


def artifact_input_size(artifact: str) -> int:
    with open(os.path.join(artifact, "manifest.json")) as f:
        return int(json.load(f)["input"]["shape"][-1])


def fp32_speed(s: Setting, artifact: str, cores: int, cache: str) -> float:
    scorer = Int8Scorer(artifact, precision="fp32", threads=cores, streams=cores, infer_batch=8, cache_dir=cache)
    return scorer_throughput(scorer, synthetic_pixels(8 * cores * 4, artifact_input_size(artifact)), s.seconds)


def measure_backbone(s: Setting, name: str, plan: Plan, archive: str, workdir: str) -> dict:
    """Train one backbone, then quantize it with every source, default and accuracy-controlled."""
    cores = os.cpu_count() or 1
    cache = os.path.join(workdir, "cache")
    ckpt = os.path.join(workdir, f"{name}-ckpt")
    t0 = time.perf_counter()
    trained = train.run(train.TrainConfig(archive=archive, out=ckpt, backbone=name, input_size=plan.input_size,
                                          epochs=plan.epochs, lr=plan.lr, batch_size=plan.batch_size, seed=0))
    result: dict = {"plan": plan, "train": trained, "train_seconds": time.perf_counter() - t0, "rows": {}}
    for source in CalibrationSource:
        for controlled in (False, True):
            out = os.path.join(workdir, f"{name}-{source}-{'control' if controlled else 'default'}")
            row, summary = quantize_one(s, ckpt, archive, out, source, controlled, cores, cache)
            result["rows"][(source.value, ACCURACY_CONTROL if controlled else DEFAULT)] = row
            if summary is not None and source is CalibrationSource.ARCHIVE and not controlled:
                result["fp32_mean_auroc"], result["eval_images"] = summary.fp32_mean_auroc, summary.eval_images
                result["fp32_prob_std"] = float(np.median(summary.fp32_prob_std))
                result["fp32_images_per_s"] = fp32_speed(s, out, cores, cache)
            shutil.rmtree(out, ignore_errors=True)  # VGG-16 artifacts are ~700 MB each
    shutil.rmtree(ckpt, ignore_errors=True)
    return result


def backbone_risks(result: dict) -> BackboneRisks:
    sources: dict = {}
    for (source, algorithm), row in result["rows"].items():
        sources.setdefault(source, {})[algorithm] = row.measured
    plan = result["plan"]
    return BackboneRisks(plan.input_size, plan.epochs, result["fp32_mean_auroc"], result["fp32_prob_std"],
                         result["eval_images"], sources)


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}%"


def render_backbone(s: Setting, name: str, result: dict, rule: RiskRule, command: str) -> str:
    plan, trained = result["plan"], result["train"]
    fp32, spread = result["fp32_mean_auroc"], result["fp32_prob_std"]
    entry = backbone_risks(result)
    judged = rule.judges(fp32, spread)
    lines = []
    for (source, algorithm), row in result["rows"].items():
        m = row.measured
        verdict = ("" if algorithm != DEFAULT else
                   "not judged" if not judged else "**hurts**" if entry.verdict(rule, m) else "no")
        speed = "not written" if m.images_per_s is None else f"{m.images_per_s:.1f}"
        how = "default" if algorithm == DEFAULT else (f"accuracy control{'' if m.reached else ' (NOT reached)'}")
        lines.append(f"| {source} | {how} | {m.auroc_drop:+.4f} | {m.p99_abs_prob_diff:.4f} | "
                     f"{_pct(m.flip_share)} / {_pct(m.worst_flip_share)} | {row.float_layers} | {speed} | "
                     f"{row.seconds:.0f} | {verdict} |")
    chance = "" if judged else (f" **Not judged: FP32 mean AUROC below {rule.min_fp32_auroc:g} or probabilities "
                                f"spread less than {rule.min_prob_std:g}; its drops and flips measure noise, not "
                                "calibration.**")
    return f"""### {name} (issue 19)

Command: `{command}`
Machine: {machine_line()}; ISA class {this_cpu().isa.value}.

Trained by `tilescope train` at {plan.input_size} px for {plan.epochs} epochs (AdamW lr {plan.lr:g}, batch {plan.batch_size}) in
{result['train_seconds']:.0f} s. FP32 (f32 hint) mean AUROC on the {result['eval_images']} held-back test images: **{fp32:.4f}**
(the train job's own test AUROC in PyTorch: {trained.test_mean_auroc:.4f}); spread of its probabilities (median over labels
of their std on those images): {spread:.3f}.{chance} FP32 images/s: {result['fp32_images_per_s']:.1f}.

| calibration | algorithm | mean AUROC drop | p99 abs dp | flags flipped: all / worst label | float layers | INT8 images/s | quantize s | hurts |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
"""


def render_overview(s: Setting, risks: CalibrationRisks, command: str, minutes: float | None) -> str:
    rule = risks.rule
    sources = [x.value for x in CalibrationSource]
    rows, advice = [], []
    for name, entry in sorted(risks.backbones.items()):
        cells = []
        for source in sources:
            m = risks.measured(name, source)
            verdict = risks.hurts(name, source)
            cells.append("-" if m is None else f"{m.auroc_drop:+.3f}, {_pct(m.flip_share)}"
                         + {True: " **hurts**", False: "", None: " (not judged)"}[verdict])
        rows.append(f"| {name} | {entry.input_size} | {entry.fp32_mean_auroc:.3f} | {entry.fp32_prob_std:.3f} | "
                    + " | ".join(cells) + " |")
        hurt = [x for x in sources if risks.hurts(name, x)]
        if hurt:
            advice.append(f"{name}: {', '.join(hurt)}")
    took = f" The run took {minutes:.0f} minutes." if minutes is not None else ""
    verdict = ("Known to hurt (quantize warns for these): " + "; ".join(advice) + "." if advice else
               "No backbone and source hurt by the rule: quantize prints no warning.")
    return f"""## Calibration without patient data (issue 19)

Command: `{command}`
Machine: {machine_line()}; measured {risks.measured_by.get('date', '?')}.{took}

Each backbone is trained by `tilescope train` on one synthetic archive ({s.n_images} images at {s.synth_size} px), then
quantized by `tilescope quantize` with `--calibration archive` (a seeded subset of {s.calibration} train_val images),
`synthetic` ({s.calibration} images from tilescope's generator, cases it never wrote into the archive) and `fractal`
({s.calibration} IFS fractals), each by the default algorithm (performance preset, histogram ranges, fast bias
correction) and with accuracy control (`{control_flags(s)}`). INT8 and FP32 (both with the f32 hint) are compared on
the archive's test patients, which no model trained or calibrated on. Flags flipped: the share of (image, label)
flags at the FP32 Youden thresholds that INT8 changes. The per-backbone tables follow.

Mean AUROC drop and flags flipped with the default algorithm:

| backbone | input px | FP32 mean AUROC | FP32 p spread | {' | '.join(sources)} |
|---|---|---|---|{'---|' * len(sources)}
{chr(10).join(rows)}

Rule (xray/calibration/risks.py, figures in xray/calibration/calibration_risks.json): a source **hurts** a backbone when {rule.text()}.
{verdict}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list(PLANS), default=list(PLANS),
                        help="backbones to measure (default: all five)")
    parser.add_argument("--max-drop", type=float, default=Setting.max_drop, help="accuracy control's --max-drop")
    parser.add_argument("--max-prob-diff", type=float, default=Setting.max_prob_diff,
                        help="accuracy control's --max-prob-diff")
    parser.add_argument("--plan", type=parse_plan, action="append", default=[], metavar="NAME=SIZE:EPOCHS:LR",
                        help="train a backbone otherwise than PLANS says, e.g. vgg16=48:8:0.0001 (repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="dwsep_cnn only (unless --backbones), tiny sizes, to check the benchmark runs; writes nothing")
    args = parser.parse_args()
    s = replace(QUICK if args.quick else Setting(), max_drop=args.max_drop, max_prob_diff=args.max_prob_diff)
    names = (["dwsep_cnn"] if args.backbones == list(PLANS) else args.backbones) if args.quick else args.backbones
    plans = {**PLANS, **dict(args.plan)}
    command = ".venv/bin/python -m bench.calibration" + (" --quick" if args.quick else "") + (
        f" --backbones {' '.join(names)}" if names != list(PLANS) and not args.quick else "") + "".join(
        f" --plan {name}={p.input_size}:{p.epochs}:{p.lr:g}" for name, p in args.plan) + (
        f" --max-drop {s.max_drop:g}" if s.max_drop != Setting.max_drop else "") + (
        f" --max-prob-diff {s.max_prob_diff:g}" if s.max_prob_diff != Setting.max_prob_diff else "")
    t0 = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "archive")
        synth.run(synth.SynthConfig(out=archive, n_images=s.n_images, size=s.synth_size, shards=2, seed=7))
        for name in names:
            plan = QUICK_PLAN if args.quick else plans[name]
            results[name] = measure_backbone(s, name, plan, archive, tmp)
    minutes = (time.perf_counter() - t0) / 60
    earlier = CalibrationRisks() if args.quick else load_risks(RISKS_FILE)
    kept = {k: v for k, v in earlier.backbones.items() if k not in results}  # backbones this run did not measure
    risks = CalibrationRisks(RiskRule(), {
        "command": command, "machine": machine_line(), "date": datetime.date.today().isoformat(),
        "accuracy_control": control_flags(s), "backbones": sorted(results)},
        {**kept, **{k: backbone_risks(v) for k, v in results.items()}})
    sections = {f"calibration-{name}": render_backbone(s, name, r, risks.rule, command) for name, r in results.items()}
    overview = render_overview(s, risks, command, minutes if names == list(PLANS) else None)
    if not args.quick:
        write_section("calibration", overview)
        for key, md in sections.items():
            write_section(key, md)
        with open(RISKS_FILE, "w") as f:
            json.dump(risks.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
    print(overview)
    for md in sections.values():
        print(md)
    print(json.dumps(risks.to_json(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
