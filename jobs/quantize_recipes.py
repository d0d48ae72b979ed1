"""quantize's recipe search: the INT8 model that keeps FP32's decisions, at the lowest cost.

Each candidate is quantized, run on the budget images (the model's validation patients) and judged by its
decision figures (xray.evaluation.decision_budget) against the budget:

1. post-training recipes, in order of quantize time: activation ranges histogram / min-max x bias correction
   fast / full. Every one quantizes the same layers, so all run at full INT8 speed; by default the search stops
   at the first within the budget (`try_all` measures all four);
2. quantization-aware fine-tuning (actors/int8_qat.py), when none is within and the source is a PyTorch
   checkpoint: still every layer INT8;
3. NNCF's accuracy control as the last resort: layers go back to float until the budget holds, at a speed cost
   that is measured and printed.

The chosen candidate is the fastest within the budget: fewest compute layers left in float, then fewest flips.
Takes a SearchPlan, never quantize's config (quantize imports this module, not the reverse).
"""

from __future__ import annotations

import enum
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from actors.int8_qat import QatSettings, quantization_aware
from actors.openvino_ir import (
    AccuracyControl,
    ActivationRanges,
    BiasCorrection,
    IRPrecision,
    QuantizationPreset,
    compile_cpu,
    infer_compiled,
    quantize_int8,
    what_ran,
)
from cli.progress import CountLine, stage
from xray.evaluation.decision_budget import (
    SCREENING_TARGET,
    DecisionBudget,
    DecisionFigures,
    decision_figures,
    fp32_thresholds,
)

PROG = "tilescope quantize"


@dataclass(frozen=True)
class Recipe:
    name: str
    ranges: ActivationRanges = ActivationRanges.HISTOGRAM
    bias_correction: BiasCorrection = BiasCorrection.FAST


PTQ_RECIPES = (Recipe("histogram-fast"), Recipe("minmax-fast", ActivationRanges.MINMAX),
               Recipe("histogram-full", bias_correction=BiasCorrection.FULL),
               Recipe("minmax-full", ActivationRanges.MINMAX, BiasCorrection.FULL))
QAT, ACCURACY_CONTROL, AUTO = "qat", "accuracy-control", "auto"


class RecipeName(enum.StrEnum):
    """quantize --recipe: auto (search), one post-training recipe, qat, or accuracy-control."""

    AUTO = AUTO
    HISTOGRAM_FAST = "histogram-fast"
    MINMAX_FAST = "minmax-fast"
    HISTOGRAM_FULL = "histogram-full"
    MINMAX_FULL = "minmax-full"
    QAT = QAT
    ACCURACY_CONTROL = ACCURACY_CONTROL


def ptq_recipe(name: str) -> Recipe | None:
    return next((r for r in PTQ_RECIPES if r.name == name), None)


@dataclass(frozen=True)
class BudgetImages:
    """The images the decision figures are measured on, FP32's probabilities and thresholds on them."""

    names: tuple[str, ...]
    pixels: np.ndarray
    labels: np.ndarray
    p32: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class BudgetSet:
    """The budget images as read: ids, pixels (N, 1, S, S) uint8 and labels (N, L) of the validation patients."""

    ids: tuple[str, ...] | list[str]
    pixels: np.ndarray
    labels: np.ndarray


class BudgetNotMet(ValueError):
    """No recipe kept FP32's decisions within the budget: nothing is written (unless --allow-over-budget)."""


@dataclass
class Candidate:
    recipe: str
    figures: DecisionFigures
    met: bool
    images_per_s: float
    quantize_s: float
    float_layers: int
    compute_layers: int
    model: object = field(repr=False, default=None)
    note: str = ""
    ranges: str | None = None
    bias_correction: str | None = None
    """The NNCF settings it was made with (QAT: ranges only)."""

    def to_json(self) -> dict:
        return {"recipe": self.recipe, "met": self.met, **self.figures.to_json(),
                "int8_images_per_s": round(self.images_per_s, 1), "quantize_seconds": round(self.quantize_s, 1),
                "float_compute_layers": self.float_layers, "compute_layers": self.compute_layers,
                "ranges": self.ranges, "bias_correction": self.bias_correction, "note": self.note or None}


@dataclass(frozen=True)
class SearchPlan:
    budget: DecisionBudget
    recipes: tuple[str, ...]
    """Candidates to try, in order (names from RECIPE_NAMES, AUTO excluded)."""
    try_all: bool = False
    preset: QuantizationPreset = QuantizationPreset.PERFORMANCE
    ignored_names: tuple[str, ...] = ()
    ignored_types: tuple[str, ...] = ()
    qat: QatSettings = QatSettings()
    allow_over_budget: bool = False
    """No candidate within the budget: write the closest INT8 one (else BudgetNotMet)."""
    bf16_reference: bool = False
    """Also measure the FP32 IR run in bf16 on the budget images, for scale."""


@dataclass
class SearchResult:
    chosen: Candidate | None
    candidates: list[Candidate]
    reason: str


def plan_recipes(recipe: str, can_qat: bool, qat_epochs: int) -> tuple[str, ...]:
    """AUTO -> the four post-training recipes, then QAT (a checkpoint source with --qat-epochs > 0), then accuracy
    control; a named recipe -> itself."""
    if recipe != AUTO:
        return (str(recipe),)
    return (*(r.name for r in PTQ_RECIPES), *((QAT,) if can_qat and qat_epochs > 0 else ()), ACCURACY_CONTROL)


def _measure(name: str, model, images: BudgetImages, budget: DecisionBudget, seconds: float) -> Candidate:
    compiled = compile_cpu(model, IRPrecision.INT8)
    infer_compiled(compiled, images.pixels[:16])  # warm-up: the first request allocates
    t0 = time.perf_counter()
    p8 = infer_compiled(compiled, images.pixels)
    speed = len(images.pixels) / max(time.perf_counter() - t0, 1e-9)
    figures = decision_figures(images.names, images.labels, images.p32, p8, images.thresholds)
    ran = what_ran(compiled, IRPrecision.INT8)
    floats = sum(n for key, n in ran.compute.items() if not key.endswith((":u8", ":i8")))
    total = sum(ran.compute.values())
    candidate = Candidate(name, figures, figures.meets(budget) and floats < total, speed, seconds, floats, total, model)
    if floats >= total:
        candidate.note = "every compute layer left in float: not an INT8 model"
    return candidate


def _say(c: Candidate, budget: DecisionBudget) -> None:
    verdict = "within the budget" if c.met else "over: " + "; ".join(c.figures.over(budget) or [c.note])
    floats = f", {c.float_layers} of {c.compute_layers} compute layers in float" if c.float_layers else ""
    print(f"[quantize] recipe {c.recipe}: {c.figures.describe()}{floats}, {c.images_per_s:.0f} images/s -> "
          f"{verdict}", flush=True)


def search(plan: SearchPlan, fp32_model, calibration: np.ndarray, images: BudgetImages,
           torch_model: Callable[[], object] | None, train_images: Callable[[], np.ndarray] | None,
           input_size: int, explicit: Recipe | None = None) -> SearchResult:
    """Try plan.recipes in order (see the module docstring); `torch_model` and `train_images` load the checkpoint's
    PyTorch model and training images for QAT (None: no QAT). `explicit`: a post-training recipe named by its
    settings (quantize --ranges / --bias-correction), tried under its own name."""
    budget = plan.budget
    tried: list[Candidate] = []
    best_ptq: Recipe = PTQ_RECIPES[0]
    for name in plan.recipes:
        if any(c.met for c in tried) and not plan.try_all:
            break
        if name == QAT and (torch_model is None or train_images is None):
            continue
        if name == ACCURACY_CONTROL and any(c.met for c in tried):
            break  # the last resort is only worth its speed cost when nothing else held
        t0 = time.perf_counter()
        recipe = explicit if explicit is not None and name == explicit.name else ptq_recipe(name)
        if recipe is not None:
            with stage("quantize", f"post-training recipe {name} on {len(calibration)} calibration images"):
                model = quantize_int8(fp32_model, calibration, plan.preset, plan.ignored_names, plan.ignored_types,
                                      ranges=recipe.ranges, bias_correction=recipe.bias_correction,
                                      on_item=CountLine("quantize", f"{name} calibration", len(calibration)).tick)
        elif name == QAT:
            pixels = train_images()
            with stage("quantize", f"quantization-aware fine-tuning, {plan.qat.epochs} epochs on {len(pixels)} "
                                   f"training images (ranges {best_ptq.ranges})"):
                model = quantization_aware(
                    torch_model(), input_size, calibration, pixels, plan.qat, plan.preset, best_ptq.ranges,
                    on_epoch=lambda e, loss: print(f"[quantize] QAT epoch {e}/{plan.qat.epochs}: distillation loss "
                                                   f"{loss:.5f}", flush=True))
        else:
            model = _accuracy_controlled(plan, fp32_model, calibration, images, best_ptq)
        candidate = _measure(name, model, images, budget, time.perf_counter() - t0)
        made_with = recipe or best_ptq
        candidate.ranges = made_with.ranges.value
        candidate.bias_correction = None if name == QAT else made_with.bias_correction.value
        tried.append(candidate)
        _say(candidate, budget)
        ptq = [c for c in tried if ptq_recipe(c.recipe) is not None]
        if ptq:
            best_ptq = ptq_recipe(min(ptq, key=lambda c: _badness(c, budget)).recipe) or best_ptq
    met = [c for c in tried if c.met]
    if not met:
        return SearchResult(None, tried, "no recipe kept the decisions within the budget")
    chosen = min(met, key=lambda c: (c.float_layers, c.figures.worst_flips, c.figures.p99))
    full = [c for c in tried if c.float_layers == 0]
    reason = (f"{chosen.recipe} is within the budget" + (" with every compute layer INT8" if not chosen.float_layers
                                                         else ""))
    if chosen.float_layers and full:
        fastest = max(c.images_per_s for c in full)
        chosen.note = (f"{chosen.float_layers} layers in float: {chosen.images_per_s / fastest:.2f}x the speed of the "
                       f"fully quantized candidates ({fastest:.0f} images/s)")
        reason += f"; {chosen.note}"
        print(f"{PROG}: note: accuracy control kept the decisions by leaving {chosen.note}",
              file=sys.stderr, flush=True)
    return SearchResult(chosen, tried, reason)


def _badness(c: Candidate, budget: DecisionBudget) -> float:
    """How far over the budget a candidate is (the larger ratio of its two figures to their limits)."""
    flips = c.figures.worst_flips / budget.flips if budget.flips > 0 else math.inf
    p99 = c.figures.p99 / budget.p99 if budget.p99 > 0 else math.inf
    return max(0.0 if math.isnan(flips) else flips, 0.0 if math.isnan(p99) else p99)


def _accuracy_controlled(plan: SearchPlan, fp32_model, calibration: np.ndarray, images: BudgetImages,
                         recipe: Recipe):
    """NNCF's accuracy control on the budget images, scoring a candidate by how far it is within the budget."""
    budget = plan.budget

    def score(rows: np.ndarray, probs: np.ndarray) -> float:
        figures = decision_figures(images.names, images.labels[rows], images.p32[rows], probs,
                                   images.thresholds)
        flips = 0.0 if math.isnan(figures.worst_flips) else figures.worst_flips / max(budget.flips, 1e-9)
        p99 = 0.0 if math.isnan(figures.p99) else figures.p99 / max(budget.p99, 1e-9)
        return 1.0 - max(flips, p99)

    control = AccuracyControl(images.pixels, images.p32, score, max_drop=1.0)
    with stage("quantize", f"accuracy control ({recipe.name} ranges and bias correction) on {len(images.pixels)} "
                           "budget images"):
        return quantize_int8(fp32_model, calibration, plan.preset, plan.ignored_names, plan.ignored_types,
                             control=control, ranges=recipe.ranges, bias_correction=recipe.bias_correction)


def choose(plan: SearchPlan, fp32_model, labels: tuple[str, ...], calibration: np.ndarray, budget_set: BudgetSet,
           torch_model: Callable[[], object] | None, train_images: Callable[[], np.ndarray] | None, input_size: int,
           explicit: Recipe | None = None, out: str = "") -> tuple[object, dict]:
    """FP32 on the budget images, its thresholds, the search, and what to write: the chosen candidate, or with none
    within the budget BudgetNotMet (naming every candidate's figures and the closest), or the closest INT8 one
    when plan.allow_over_budget. Returns the model and the manifest's `decision_budget` record. `out` names the
    --out that nothing is written to, in the message."""
    budget = plan.budget
    with stage("quantize", f"FP32 on {len(budget_set.ids)} budget images (validation patients)"):
        p32 = infer_compiled(compile_cpu(fp32_model, IRPrecision.FP32), budget_set.pixels)
    images = BudgetImages(labels, budget_set.pixels, budget_set.labels, p32, fp32_thresholds(budget_set.labels, p32))
    bf16 = bf16_reference(fp32_model, images) if plan.bf16_reference else None
    print(f"[quantize] decision budget: worst-label flips <= {budget.flips:.1%}, p99 |dp| <= {budget.p99:.3f}, on "
          f"{len(budget_set.ids)} images of the model's validation patients at FP32's sensitivity-"
          f"{SCREENING_TARGET:g} thresholds", flush=True)
    result = search(plan, fp32_model, calibration, images, torch_model, train_images, input_size, explicit)
    chosen = result.chosen
    if chosen is None:
        # A candidate with every compute layer in float is not INT8: never the one written.
        int8 = [c for c in result.candidates if c.float_layers < c.compute_layers] or result.candidates
        closest = min(int8, key=lambda c: (c.figures.worst_flips, c.figures.p99))
        tried = "; ".join(f"{c.recipe}: {'; '.join(c.figures.over(budget))}" for c in result.candidates)
        if not plan.allow_over_budget:
            raise BudgetNotMet(f"no INT8 recipe kept FP32's decisions within the budget on {len(budget_set.ids)} "
                               f"validation images ({tried}). Nothing was written to --out {out}. Loosen "
                               "--budget-flips / --budget-p99, allow more --qat-epochs, or pass --allow-over-budget "
                               f"to write the closest ({closest.recipe}: {closest.figures.describe()})")
        print(f"{PROG}: warning: over the decision budget: writing {closest.recipe} ({closest.figures.describe()}) "
              "because of --allow-over-budget", file=sys.stderr, flush=True)
        chosen = closest
        result = SearchResult(closest, result.candidates, "over budget; closest written (--allow-over-budget)")
    print(f"[quantize] chose {chosen.recipe}: {result.reason}", flush=True)
    return chosen.model, {"measured": True, "budget": budget.to_json(), "split": "val",
                          "target_sensitivity": SCREENING_TARGET, "images": len(budget_set.ids),
                          "met": chosen.met, "chosen": chosen.recipe, "reason": result.reason,
                          "candidates": [c.to_json() for c in result.candidates], "bf16_reference": bf16}


def bf16_reference(fp32_model, images: BudgetImages) -> dict:
    """For scale, the same figures for the FP32 IR run in bf16 (what OpenVINO does with an FP32 IR on a CPU with
    avx512_bf16 or AMX unless told otherwise), printed and recorded with the precision that actually ran."""
    compiled = compile_cpu(fp32_model, IRPrecision.BF16)
    figures = decision_figures(images.names, images.labels, images.p32, infer_compiled(compiled, images.pixels),
                               images.thresholds)
    ran = what_ran(compiled, IRPrecision.BF16)
    native = "native bf16" if ran.cpu.bf16 else "no native bf16"
    print(f"[quantize] for scale, the FP32 IR run as {ran.precision} on {ran.cpu} ({native}): {figures.describe()}",
          flush=True)
    return {**figures.to_json(), "ran": ran.precision, **ran.cpu.to_json()}
