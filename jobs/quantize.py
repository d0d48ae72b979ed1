"""Quantize a model to INT8 with NNCF (post-training, or quantization-aware when needed), keeping FP32's decisions.

The source is a checkpoint artifact (`tilescope train`, or `tilescope import --weights`), exported here to an
FP32 IR, or a model artifact holding an FP32 IR (`tilescope import --onnx / --ir`). Calibration images
(--calibration, default 300 of them): `archive`, a seeded subset of the archive's train_val images; `synthetic`,
chest-like images from tilescope's generator; `fractal`, procedural IFS fractals. The last two hold no patient
data (xray/calibration/sets.py). On a seeded subset of the archive's test images (the real labelled split,
whatever the calibration) the FP32 IR (in f32 whatever the CPU), the INT8 IR and, by default, the FP32 IR in
bf16 are compared: per-label AUROC, median / p99 / max |p_fp32 - p_int8|, and per label the share of images
whose flag at the FP32 Youden threshold flips. The manifest records the calibration source, every figure and
what each run actually ran on which CPU class. Without --archive (synthetic or fractal calibration only)
nothing is evaluated: the job says so on stderr and the manifest records `metrics.evaluation: null`.

When bench.calibration measured the chosen --calibration to hurt the chosen backbone
(xray/calibration/calibration_risks.json, docs/BENCHMARKS.md), a one-line warning names what it measured
and what did better.

Decision budget (docs/guide/calibration.md): on the model's validation patients (never the test split) each INT8
candidate's flag flips at FP32's sensitivity-0.9 thresholds and its p99 |dp| are measured; by default the
post-training recipes, then quantization-aware fine-tuning, then accuracy control are tried until one keeps the
worst label's flips within --budget-flips and p99 within --budget-p99 (jobs/quantize_recipes.py). None within:
exit 2 and nothing written, unless --allow-over-budget. The manifest records every candidate.

Accuracy control: with --max-drop (mean AUROC, absolute) and/or --max-prob-diff (p99 |p_fp32 - p_int8|),
NNCF keeps layers in float until both hold on the evaluation images. The result is measured again; if it does
not hold, the job fails (exit 2) saying what it reached, and writes nothing.

    tilescope quantize --checkpoint runs/ckpt --archive runs/synth --out runs/model
    tilescope quantize --checkpoint runs/ckpt --archive runs/synth --calibration fractal --out runs/model-fractal
    ray job submit --working-dir . -- python -m jobs.quantize --checkpoint s3://b/ckpt --archive s3://b/nih \
        --out s3://b/model
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from actors.int8_qat import QatSettings
from actors.openvino_ir import (
    ActivationRanges,
    BiasCorrection,
    IRPrecision,
    QuantizationPreset,
    RanPrecision,
    compile_cpu,
    infer_compiled,
    ir_bytes,
    quantize_int8,
    what_ran,
)
from cli.flags import coerce_choices, require_valid
from cli.job_main import job_main
from cli.progress import CountLine, stage
from cli.provenance import tilescope_versions
from jobs.quantize_inputs import ImageSubsets, InputPlan, Source, draw_images, load_source, training_pixels
from jobs.quantize_limits import AgreementLimits, accuracy_control, check_agreement
from jobs.quantize_recipes import (
    PROG,
    BudgetSet,
    Recipe,
    RecipeName,
    SearchPlan,
    choose,
    plan_recipes,
    ptq_recipe,
)
from storage.artifacts import require_new, write_artifact
from xray.calibration.risks import load_risks, warning_for
from xray.calibration.sets import CalibrationSource, describe, pixel_summary
from xray.evaluation.agreement import precision_agreement
from xray.evaluation.decision_budget import DecisionBudget
from xray.evaluation.metrics import mean_auroc
from xray.metadata.manifests import (
    IRKind,
    ModelManifest,
)


@dataclass(frozen=True)
class QuantizeConfig:
    checkpoint: str
    """Checkpoint artifact (tilescope train, tilescope import --weights) or model artifact with an FP32 IR
    (tilescope import --onnx / --ir), local or s3://."""
    out: str
    """Model artifact URI to create (fp32/ and int8/ IR + manifest.json); must not exist yet."""
    archive: str | None = None
    """Archive whose labelled test split evaluates INT8 against FP32 (and whose train_val images calibrate with
    --calibration archive). Needed except with synthetic / fractal calibration, where leaving it out skips the
    evaluation (said on stderr and in the manifest)."""
    calibration: CalibrationSource = CalibrationSource.ARCHIVE
    """Calibration images: archive (a seeded subset of its train_val images), synthetic (tilescope's chest-like
    generator) or fractal (procedural IFS fractals); the last two hold no patient data."""
    metadata: str | None = None
    """Data_Entry_2017.csv URI; default: beside the shards."""
    calibration_size: int = 300
    """Images in the seeded calibration set."""
    eval_size: int = 500
    """Labelled test-split images on which FP32, INT8 and bf16 are compared (0 = skip)."""
    preset: QuantizationPreset = QuantizationPreset.PERFORMANCE
    """NNCF preset: performance (symmetric) or mixed (asymmetric activations)."""
    recipe: RecipeName = RecipeName.AUTO
    """auto: try the post-training recipes (histogram-fast, minmax-fast, histogram-full, minmax-full), then
    quantization-aware fine-tuning (checkpoint sources), then accuracy control, and keep the first within the
    decision budget; or name one of them."""
    budget_flips: float = 0.01
    """Decision budget: most share of the budget images whose flag flips on the worst label (flags at FP32's
    thresholds for sensitivity 0.9 on the model's validation patients, as the report fits them)."""
    budget_p99: float = 0.05
    """Decision budget: most p99 |p_fp32 - p_int8| on the budget images."""
    budget_size: int = 500
    """Images of the model's validation patients the decision figures are measured on (never the test split)."""
    try_all_recipes: bool = False
    """Measure every post-training recipe (the manifest records each), not only up to the first within budget."""
    qat_epochs: int = 3
    """Epochs of quantization-aware fine-tuning when no post-training recipe is within budget (0: never)."""
    qat_size: int = 1000
    """Training images quantization-aware fine-tuning distils FP32's logits on."""
    allow_over_budget: bool = False
    """Write the candidate closest to the budget when none is within it (default: fail, writing nothing)."""
    ranges: ActivationRanges | None = None
    """Activation ranges (histogram: clips rare outliers; minmax: NNCF's default): with --bias-correction, names one
    post-training recipe instead of --recipe."""
    bias_correction: BiasCorrection | None = None
    """NNCF bias correction (fast: one pass; full: layer by layer, slow on deep models); see --ranges."""
    ignored_names: tuple[str, ...] = ()
    """Layer names NNCF must leave in FP32."""
    ignored_types: tuple[str, ...] = ()
    """OpenVINO op types NNCF must leave in FP32 (e.g. Sigmoid)."""
    max_drop: float | None = None
    """Accuracy control: most absolute drop of mean AUROC allowed for INT8 on the evaluation images."""
    max_prob_diff: float | None = None
    """Accuracy control: most p99 |p_fp32 - p_int8| allowed on the evaluation images (e.g. 0.02)."""
    bf16_metrics: bool = True
    """Also compare the FP32 IR run in bf16 with FP32 (native on AMX / avx512_bf16 CPUs)."""
    seed: int = 0
    """Seed of the calibration and evaluation subsets."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto; default from the environment."""


@dataclass(frozen=True)
class QuantizeSummary:
    out: str
    sha256: str
    fp32_auroc: tuple[float, ...]
    int8_auroc: tuple[float, ...]
    fp32_mean_auroc: float
    int8_mean_auroc: float
    max_abs_prob_diff: float
    seconds: float
    median_abs_prob_diff: float = math.nan
    p99_abs_prob_diff: float = math.nan
    flip_share: tuple[float, ...] = ()
    """Per label: share of evaluation images whose flag at the FP32 Youden threshold flips under INT8."""
    bf16: dict | None = None
    """bf16 vs FP32 agreement (PrecisionAgreement.to_json), when measured."""
    ran: dict = field(default_factory=dict)
    """fp32 / int8 / bf16 -> what ran (RanPrecision.to_json)."""
    calibration: str = CalibrationSource.ARCHIVE.value
    """The calibration source."""
    eval_images: int = 0
    """Test images INT8 was evaluated on (0: not evaluated)."""
    fp32_prob_std: tuple[float, ...] = ()
    decision: dict | None = None
    """The manifest's `decision_budget`: the budget, every candidate recipe's figures, the one chosen and why."""
    """Per label: the spread (std) of FP32 probabilities over the evaluation images. Flags flip under tiny INT8
    errors when a model's outputs barely spread, so flips mean little on such a model."""




def validate(cfg: QuantizeConfig) -> None:
    problems = []
    if cfg.calibration_size < 1:
        problems.append("--calibration-size must be at least 1")
    if cfg.eval_size < 0:
        problems.append("--eval-size must be >= 0")
    problems += coerce_choices(cfg)
    if cfg.archive is None:
        if cfg.calibration == CalibrationSource.ARCHIVE:
            problems.append("--archive is needed with --calibration archive (or calibrate with synthetic or fractal "
                            "images and leave the evaluation out)")
        for flag, value in (("--max-drop", cfg.max_drop), ("--max-prob-diff", cfg.max_prob_diff)):
            if value is not None:
                problems.append(f"{flag} needs --archive: accuracy control runs on its labelled test split")
        if cfg.metadata is not None:
            problems.append("--metadata needs --archive: it labels the archive's images")
    if not 0.0 <= cfg.budget_flips <= 1.0 or not 0.0 < cfg.budget_p99 <= 1.0:
        problems.append("--budget-flips must be in [0, 1] and --budget-p99 in (0, 1]")
    if cfg.budget_size < 0 or cfg.qat_epochs < 0 or cfg.qat_size < 1:
        problems.append("--budget-size and --qat-epochs must be >= 0, --qat-size >= 1")
    if (cfg.ranges is not None or cfg.bias_correction is not None) and cfg.recipe != RecipeName.AUTO:
        problems.append("--ranges / --bias-correction name a post-training recipe themselves: leave --recipe out")
    if cfg.max_drop is not None and not 0.0 <= cfg.max_drop < 1.0:
        problems.append("--max-drop must be in [0, 1)")
    if cfg.max_prob_diff is not None and not 0.0 < cfg.max_prob_diff <= 1.0:
        problems.append("--max-prob-diff must be in (0, 1]")
    for flag, value in (("--max-drop", cfg.max_drop), ("--max-prob-diff", cfg.max_prob_diff)):
        if value is not None and cfg.archive is not None and cfg.eval_size < 10:
            problems.append(f"{flag} needs --eval-size of at least 10 labelled images")
    require_valid(problems)


def warn_before_quantizing(cfg: QuantizeConfig, source: Source, images: ImageSubsets) -> None:
    """stderr: a model quantized without evaluation, and a backbone + source bench.calibration found to hurt."""
    if cfg.archive is None:
        print(f"{PROG}: warning: no --archive: INT8 is calibrated on {len(images.calibration)} {cfg.calibration} "
              "images and NOT evaluated against FP32 (the manifest records metrics.evaluation: null). Before "
              "trusting it, quantize again with --archive and a labelled split, or score one archive with "
              "--precision fp32 and --precision int8 and compare the runs with tilescope report --results A "
              "--results B", file=sys.stderr, flush=True)
    searched = images.budget_ids and cfg.recipe == RecipeName.AUTO and cfg.ranges is None and \
        cfg.bias_correction is None
    if cfg.max_drop is None and cfg.max_prob_diff is None and not searched:
        # With the recipe search the figures are measured on this model: no need for what bench.calibration saw.
        known = warning_for(load_risks(), source.model, cfg.calibration)
        if known:
            print(f"{PROG}: warning: {known}", file=sys.stderr, flush=True)


def limits_of(cfg: QuantizeConfig) -> AgreementLimits:
    return AgreementLimits(cfg.max_drop, cfg.max_prob_diff)


def measure(compiled, precision: IRPrecision, pixels: np.ndarray) -> tuple[np.ndarray, RanPrecision]:
    """Probabilities (M, L) of a compiled model on the evaluation pixels, and what it ran; a progress line every
    10 s while it runs."""
    line = CountLine("quantize", f"{precision.value.upper()} evaluation", len(pixels))
    return infer_compiled(compiled, pixels, on_batch=line.tick), what_ran(compiled, precision)


def single_recipe(cfg: QuantizeConfig) -> Recipe:
    """The one post-training recipe --ranges / --bias-correction (or --recipe) name; histogram-fast by default."""
    if cfg.ranges is not None or cfg.bias_correction is not None:
        ranges, correction = cfg.ranges or ActivationRanges.HISTOGRAM, cfg.bias_correction or BiasCorrection.FAST
        return Recipe(f"{ranges}-{correction}", ranges, correction)
    return ptq_recipe(str(cfg.recipe)) or Recipe("histogram-fast")


def calibration_next(cfg: QuantizeConfig) -> str:
    """What NNCF does once it has read the calibration images (the part of the step without a count)."""
    steps = [f"{single_recipe(cfg).bias_correction} bias correction"]
    if cfg.max_drop is not None or cfg.max_prob_diff is not None:
        steps.append("accuracy control (ranks layers, then returns them to float one at a time)")
    return "now " + ", then ".join(steps)


def input_plan(cfg: QuantizeConfig) -> InputPlan:
    """What jobs/quantize_inputs.py reads, from the config."""
    return InputPlan(cfg.checkpoint, cfg.archive, cfg.metadata, cfg.calibration, cfg.calibration_size, cfg.eval_size,
                     cfg.seed, cfg.s3_endpoint, cfg.budget_size)


def calibration_record(cfg: QuantizeConfig, source: Source, images: ImageSubsets, decision: dict) -> dict:
    """The manifest's `calibration`: which images (source, how many, from where) and how NNCF used them (the
    recipe written: its activation ranges and bias correction; QAT has no bias correction)."""
    name = decision.get("chosen") or decision.get("recipe") or ""
    chosen = next((c for c in decision.get("candidates", []) if c["recipe"] == name), None)
    ranges, correction = (chosen["ranges"], chosen["bias_correction"]) if chosen else \
        (decision.get("ranges"), decision.get("bias_correction"))
    from_archive = cfg.calibration == CalibrationSource.ARCHIVE
    return {"source": cfg.calibration.value, "patient_images": cfg.calibration.patient_images,
            "images": len(images.calibration), "seed": cfg.seed, "archive": cfg.archive if from_archive else None,
            "split": "train_val" if from_archive else None,
            "generator": None if from_archive else describe(cfg.calibration, source.input_size),
            "pixels": pixel_summary(images.calibration), "preset": cfg.preset, "recipe": name,
            "ranges": ranges, "bias_correction": correction, "ignored_names": list(cfg.ignored_names),
            "ignored_types": list(cfg.ignored_types), "max_drop": cfg.max_drop, "max_prob_diff": cfg.max_prob_diff}


def choose_int8(cfg: QuantizeConfig, plan: InputPlan, source: Source, images: ImageSubsets,
                p32_eval: np.ndarray) -> tuple[object, dict | None]:
    """The INT8 model to write and the manifest's `decision_budget` record.

    --max-drop / --max-prob-diff: NNCF's accuracy control on the evaluation images, as before. Without budget
    images (no --archive, --budget-size 0, no validation patients): one recipe, unmeasured (`measured: false`).
    Otherwise the recipe search within the decision budget (jobs/quantize_recipes.py, choose)."""
    recipe = single_recipe(cfg)
    limits = limits_of(cfg)
    explicit_control = limits.any
    if explicit_control or not images.budget_ids:
        why = ("explicit accuracy control (--max-drop / --max-prob-diff)" if explicit_control else
               "no budget images (no --archive, --budget-size 0, or no validation patients)")
        with stage("quantize", f"NNCF INT8 calibration on {len(images.calibration)} images ({cfg.preset}, ranges "
                               f"{recipe.ranges}, bias correction {recipe.bias_correction}"
                               + (", accuracy control" if explicit_control else "") + ")"):
            int8 = quantize_int8(source.fp32, images.calibration, cfg.preset, cfg.ignored_names, cfg.ignored_types,
                                 control=accuracy_control(limits, images.eval_labels, images.eval_pixels, p32_eval),
                                 ranges=recipe.ranges, bias_correction=recipe.bias_correction,
                                 on_item=CountLine("quantize", "NNCF INT8 calibration", len(images.calibration),
                                                   then=calibration_next(cfg)).tick)
        return int8, {"measured": False, "why": why, "recipe": recipe.name, "ranges": recipe.ranges.value,
                      "bias_correction": recipe.bias_correction.value}
    by_settings = cfg.ranges is not None or cfg.bias_correction is not None
    names = (recipe.name,) if by_settings else plan_recipes(str(cfg.recipe), source.torch_model is not None,
                                                             cfg.qat_epochs)
    if names == (RecipeName.QAT.value,) and source.torch_model is None:
        raise ValueError(f"--recipe qat needs a PyTorch checkpoint (tilescope train, or tilescope import --weights); "
                         f"{cfg.checkpoint} is an OpenVINO model artifact")
    search_plan = SearchPlan(DecisionBudget(cfg.budget_flips, cfg.budget_p99), names, cfg.try_all_recipes,
                             cfg.preset, cfg.ignored_names, cfg.ignored_types,
                             QatSettings(cfg.qat_epochs or 1, seed=cfg.seed), cfg.allow_over_budget,
                             cfg.bf16_metrics)
    return choose(search_plan, source.fp32, source.labels, images.calibration,
                  BudgetSet(images.budget_ids, images.budget_pixels, images.budget_labels),
                  (lambda: source.torch_model) if source.torch_model is not None else None,
                  lambda: training_pixels(plan, source, images, cfg.qat_size), source.input_size,
                  explicit=recipe if by_settings else None, out=cfg.out)


def run(cfg: QuantizeConfig) -> QuantizeSummary:
    import nncf
    import openvino as ov

    validate(cfg)
    t0 = time.perf_counter()
    require_new(cfg.out, cfg.s3_endpoint)
    plan = input_plan(cfg)
    with stage("quantize", f"reading the model ({cfg.checkpoint})"):
        source = load_source(plan)
    with stage("quantize", f"decoding {cfg.calibration_size} calibration and up to {cfg.eval_size} evaluation "
                           "images"):
        images = draw_images(plan, source)
    print(f"calibration: {len(images.calibration)} {cfg.calibration} images, evaluation: {len(images.eval_ids)} "
          + (f"test images of {cfg.archive}" if cfg.archive else "(no --archive)"), flush=True)
    warn_before_quantizing(cfg, source, images)

    n_eval = len(images.eval_pixels)
    with stage("quantize", f"FP32 on {n_eval} evaluation images"):
        p32, ran32 = measure(compile_cpu(source.fp32, IRPrecision.FP32), IRPrecision.FP32, images.eval_pixels)
    int8, decision = choose_int8(cfg, plan, source, images, p32)
    with stage("quantize", f"INT8 on {n_eval} evaluation images"):
        p8, ran8 = measure(compile_cpu(int8, IRPrecision.INT8), IRPrecision.INT8, images.eval_pixels)
    int8_vs_fp32 = precision_agreement(images.eval_labels, p32, p8)
    check_agreement(limits_of(cfg), int8_vs_fp32, ran8, cfg.out)
    ran = {IRKind.FP32: ran32.to_json(), IRKind.INT8: ran8.to_json()}
    bf16_vs_fp32 = None
    if cfg.bf16_metrics:
        p16, ran16 = measure(compile_cpu(source.fp32, IRPrecision.BF16), IRPrecision.BF16, images.eval_pixels)
        bf16_vs_fp32 = precision_agreement(images.eval_labels, p32, p16)
        ran["bf16"] = ran16.to_json()

    fp32_auroc, int8_auroc = list(int8_vs_fp32.reference_auroc), list(int8_vs_fp32.auroc)
    spread = [float(v) for v in np.std(p32, axis=0)] if len(p32) else []
    evaluation = None if cfg.archive is None else {
        "archive": cfg.archive, "split": "test", "images": len(images.eval_ids),
        "pixels": pixel_summary(images.eval_pixels)}
    diff = int8_vs_fp32.abs_prob_diff
    manifest = ModelManifest(
        model=source.model, labels=source.labels, input_size=source.input_size,
        irs={kind: kind.xml() for kind in (IRKind.FP32, IRKind.INT8)}, split=source.split, checkpoint=source.origin,
        calibration=calibration_record(cfg, source, images, decision),
        metrics={"eval_images": len(images.eval_ids), "evaluation": evaluation, "fp32_auroc": fp32_auroc,
                 "int8_auroc": int8_auroc,
                 "fp32_mean_auroc": mean_auroc(fp32_auroc), "int8_mean_auroc": mean_auroc(int8_auroc),
                 "max_abs_prob_diff": diff["max"], "fp32_prob_std": spread, "int8_vs_fp32": int8_vs_fp32.to_json(),
                 "bf16_vs_fp32": bf16_vs_fp32.to_json() if bf16_vs_fp32 else None, "ran": ran,
                 "decision_budget": decision},
        versions={**source.versions, "openvino": ov.__version__, "nncf": nncf.__version__, **tilescope_versions()},
        config=asdict(cfg), normalization=source.normalization, source=source.imported,
    )
    files = {**source.fp32_files, **ir_bytes(int8, IRKind.INT8)}
    sha = write_artifact(cfg.out, files, manifest, cfg.s3_endpoint)
    summary = QuantizeSummary(cfg.out, sha, tuple(fp32_auroc), tuple(int8_auroc), mean_auroc(fp32_auroc),
                              mean_auroc(int8_auroc), diff["max"], time.perf_counter() - t0, diff["median"],
                              diff["p99"], int8_vs_fp32.flip_share,
                              bf16_vs_fp32.to_json() if bf16_vs_fp32 else None, ran, cfg.calibration.value,
                              len(images.eval_ids), tuple(spread), decision)
    measured = (f"mean AUROC FP32 {summary.fp32_mean_auroc:.4f} INT8 {summary.int8_mean_auroc:.4f}; |p_fp32 - "
                f"p_int8| median {diff['median']:.4f} p99 {diff['p99']:.4f} max {diff['max']:.4f}"
                if images.eval_ids else "NOT evaluated against FP32")
    print(f"artifact {cfg.out} (sha256 {sha[:12]}), calibrated on {cfg.calibration} images: {measured}; ran fp32 as "
          f"{ran32.precision}, int8 as {ran8.precision}"
          + (f", bf16 as {ran['bf16']['precision']}" if bf16_vs_fp32 else "") + f" on {ran8.cpu}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    return job_main(QuantizeConfig, run, PROG, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
