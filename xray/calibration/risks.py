"""Which calibration source is known to hurt which backbone: measured by bench.calibration, read by quantize.

bench.calibration trains each backbone with tilescope's own train job on a synthetic archive, quantizes it
with every calibration source (xray.calibration.sets) by the default algorithm and with accuracy control, and
measures each INT8 model against FP32 (f32 hint) on the held-back test split. It writes the figures to
xray/calibration/calibration_risks.json, shipped in the package, with the rule that judges them (RiskRule). `tilescope
quantize` reads that file and warns when the chosen backbone and source are known to hurt (warning_for).

Rule: a source hurts a backbone when, with the default algorithm, the mean AUROC drop exceeds max_auroc_drop or
the share of flags that flip at the FP32 Youden thresholds (all images and labels) exceeds max_flip_share.
A model is not judged when its FP32 mean AUROC is below min_fp32_auroc (near chance, AUROC moves by noise) or its
FP32 probabilities barely spread over the test images (median over labels of their std below min_prob_std):
flags then flip under INT8 errors of any size, whatever calibrated it.

File layout (schema_version 1):
  {"schema_version": 1,
   "rule": {"max_auroc_drop", "max_flip_share", "min_fp32_auroc", "min_prob_std"},
   "measured_by": {"command", "machine", "date", "accuracy_control": "--max-drop ... --max-prob-diff ...", ...},
   "backbones": {NAME: {"input_size", "epochs", "fp32_mean_auroc", "fp32_prob_std", "eval_images",
                        "sources": {SOURCE: {"default": MEASURED, "accuracy_control": MEASURED}}}}}
  MEASURED: {"auroc_drop", "p99_abs_prob_diff", "flip_share", "worst_flip_share", "images_per_s", "reached",
             "hurts"}. "hurts" is written for readers and checked against the rule when read.
Pure: json and dataclasses only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

RISKS_SCHEMA_VERSION = 1
SHIPPED = "calibration_risks.json"
"""The file bench.calibration writes, in this package (xray/)."""
DEFAULT, ACCURACY_CONTROL = "default", "accuracy_control"
ALGORITHMS = (DEFAULT, ACCURACY_CONTROL)


@dataclass(frozen=True)
class RiskRule:
    """When a calibration source hurts a backbone (see the module docstring)."""

    max_auroc_drop: float = 0.01
    max_flip_share: float = 0.02
    min_fp32_auroc: float = 0.6
    min_prob_std: float = 0.02

    def judges(self, fp32_mean_auroc: float, fp32_prob_std: float) -> bool:
        """Whether a model is far enough from chance, with outputs that spread enough, to be judged."""
        return fp32_mean_auroc >= self.min_fp32_auroc and fp32_prob_std >= self.min_prob_std

    def hurts(self, measured: Measured, fp32_mean_auroc: float, fp32_prob_std: float) -> bool | None:
        """True / False by the rule; None when the model is not judged (judges)."""
        if not self.judges(fp32_mean_auroc, fp32_prob_std):
            return None
        drop = 0.0 if math.isnan(measured.auroc_drop) else measured.auroc_drop
        return drop > self.max_auroc_drop or measured.flip_share > self.max_flip_share

    def short(self) -> str:
        return f"drop > {self.max_auroc_drop:g} or flips > {100 * self.max_flip_share:g}%"

    def text(self) -> str:
        return (f"mean AUROC drop > {self.max_auroc_drop:g} or more than {100 * self.max_flip_share:g}% of flags "
                f"flipped at the FP32 thresholds, with the default algorithm (a model with an FP32 mean AUROC below "
                f"{self.min_fp32_auroc:g}, or whose FP32 probabilities spread less than {self.min_prob_std:g} (median "
                f"std over labels), is not judged)")


@dataclass(frozen=True)
class Measured:
    """One INT8 model against its FP32 model on the held-back test images."""

    auroc_drop: float
    """FP32 mean AUROC minus INT8's."""
    p99_abs_prob_diff: float
    flip_share: float
    """Share of all (image, label) flags that flip at the FP32 Youden thresholds (mean over the labels)."""
    worst_flip_share: float = math.nan
    """The same for the label with the most flips."""
    images_per_s: float | None = None
    """INT8 throughput (None when no model was written)."""
    reached: bool = True
    """False when accuracy control could not reach its limits (the quantize job then writes nothing)."""

    def to_json(self, hurts: bool | None = None) -> dict:
        return {**asdict(self), "hurts": hurts}


@dataclass(frozen=True)
class BackboneRisks:
    """A backbone's measured model and, per calibration source and algorithm, its INT8 figures."""

    input_size: int
    epochs: int
    fp32_mean_auroc: float
    fp32_prob_std: float
    """Median over labels of the std of the FP32 probabilities on the test images."""
    eval_images: int
    sources: Mapping[str, Mapping[str, Measured]]

    def verdict(self, rule: RiskRule, measured: Measured) -> bool | None:
        return rule.hurts(measured, self.fp32_mean_auroc, self.fp32_prob_std)


@dataclass(frozen=True)
class CalibrationRisks:
    rule: RiskRule = field(default_factory=RiskRule)
    measured_by: Mapping[str, Any] = field(default_factory=dict)
    backbones: Mapping[str, BackboneRisks] = field(default_factory=dict)

    def measured(self, backbone: str, source: str, algorithm: str = DEFAULT) -> Measured | None:
        entry = self.backbones.get(backbone)
        return None if entry is None else entry.sources.get(str(source), {}).get(algorithm)

    def hurts(self, backbone: str, source: str) -> bool | None:
        """By the rule, with the default algorithm; None when not measured or not judged."""
        m = self.measured(backbone, source)
        return None if m is None else self.backbones[backbone].verdict(self.rule, m)

    def to_json(self) -> dict:
        body: dict = {}
        for name, b in sorted(self.backbones.items()):
            sources = {s: {alg: m.to_json(b.verdict(self.rule, m) if alg == DEFAULT else None)
                           for alg, m in algs.items()} for s, algs in b.sources.items()}
            body[name] = {"input_size": b.input_size, "epochs": b.epochs, "fp32_mean_auroc": b.fp32_mean_auroc,
                          "fp32_prob_std": b.fp32_prob_std, "eval_images": b.eval_images, "sources": sources}
        return {"schema_version": RISKS_SCHEMA_VERSION, "rule": asdict(self.rule),
                "measured_by": dict(self.measured_by), "backbones": body}


def risks_from_json(body: Mapping[str, Any], where: str) -> CalibrationRisks:
    """Parse the file's JSON; a malformed file, or a stored `hurts` the rule contradicts, is a ValueError naming
    `where` (the file) and the entry."""
    if not isinstance(body, Mapping) or body.get("schema_version") != RISKS_SCHEMA_VERSION:
        raise ValueError(f"{where}: not a calibration-risks file of schema_version {RISKS_SCHEMA_VERSION}")
    try:
        rule = RiskRule(**body.get("rule", {}))
        backbones = {}
        for name, b in body.get("backbones", {}).items():
            entry = BackboneRisks(int(b["input_size"]), int(b["epochs"]), float(b["fp32_mean_auroc"]),
                                  float(b["fp32_prob_std"]), int(b["eval_images"]), {})
            for source, algs in b["sources"].items():
                entry.sources[source] = {}
                for alg, m in algs.items():
                    stored = m.get("hurts")
                    measured = Measured(**{k: v for k, v in m.items() if k != "hurts"})
                    judged = entry.verdict(rule, measured) if alg == DEFAULT else None
                    if alg == DEFAULT and stored != judged:
                        raise ValueError(f"backbones.{name}.sources.{source}.default says hurts={stored}, the rule "
                                         f"says {judged}")
                    entry.sources[source][alg] = measured
            backbones[name] = entry
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: malformed calibration-risks file: {exc}") from exc
    return CalibrationRisks(rule, dict(body.get("measured_by", {})), backbones)


def load_risks(path: str | None = None) -> CalibrationRisks:
    """The figures in `path`, or in the file shipped with tilescope (xray/calibration/calibration_risks.json)."""
    if path is None:
        text = resources.files("xray.calibration").joinpath(SHIPPED).read_text()
        return risks_from_json(json.loads(text), f"xray/calibration/{SHIPPED}")
    with open(path) as f:
        return risks_from_json(json.load(f), path)


def _figures(m: Measured) -> str:
    return f"mean AUROC drop {m.auroc_drop:.3f}, {100 * m.flip_share:.1f}% of flags flipped"


def warning_for(risks: CalibrationRisks, backbone: str, source: str) -> str | None:
    """One line for a backbone and calibration source known (by the rule) to hurt, naming what was measured and
    what did better; None when they are not known to hurt (not measured, not judged, or fine)."""
    if not risks.hurts(backbone, source):
        return None
    chosen = risks.measured(backbone, source)
    assert chosen is not None
    entry = risks.backbones[backbone]
    better = sorted(((m.auroc_drop, s, m) for s, algs in entry.sources.items() if s != str(source)
                     for alg, m in algs.items() if alg == DEFAULT and risks.hurts(backbone, s) is False),
                    key=lambda item: (item[0], item[1]))
    advice = [f"--calibration {s} ({_figures(m)})" for _, s, m in better[:1]]
    control = risks.measured(backbone, source, ACCURACY_CONTROL)
    flags = risks.measured_by.get("accuracy_control", "--max-drop / --max-prob-diff")
    if control is not None and control.reached:
        advice.append(f"accuracy control ({flags}: {_figures(control)})")
    else:
        advice.append(f"accuracy control ({flags})")
    return (f"--calibration {source} is known to hurt {backbone}: with the default algorithm bench.calibration "
            f"measured {_figures(chosen)} ({entry.input_size} px model trained on a synthetic archive; hurts: "
            f"{risks.rule.short()}). Consider " + ", or ".join(advice))
