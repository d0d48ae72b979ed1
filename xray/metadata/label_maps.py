"""Label maps: how another ground truth's labels read off a model's outputs, e.g. the Google 2019 expert label
`Nodule or mass` is max(Nodule, Mass) of a ChestX-ray14 model.

A map is written as `Expert label: combiner(Output, Output, ...)`, one entry per line or `;`-separated, or as a
YAML mapping of the same (a value may also be a list of outputs). The combiner is `max` (the default, also for
a bare list) or `mean`; a single output needs none (`Pneumothorax: Pneumothorax`). The same map turns the
model's probabilities into one score per expert label (its combiner) and NIH's multi-hot labels into one label
per expert label (positive when any mapped NIH label is: the combiner does not apply to labels).
Pure: parsing text and combining arrays; reading a map file is storage's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

COMBINERS = ("max", "mean")
_CALL = re.compile(r"^(?P<fn>[A-Za-z_]\w*)\s*\((?P<args>.*)\)$")


@dataclass(frozen=True)
class MappedLabel:
    """One expert label and the model outputs that score it."""

    name: str
    outputs: tuple[str, ...]
    combiner: str = "max"

    def describe(self) -> str:
        if len(self.outputs) == 1:
            return f"{self.name}: {self.outputs[0]}"
        return f"{self.name}: {self.combiner}({', '.join(self.outputs)})"


@dataclass(frozen=True)
class LabelMap:
    """Expert labels in order, each with its outputs; `origin` says where the map came from (for the page)."""

    entries: tuple[MappedLabel, ...]
    origin: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def describe(self) -> str:
        return "; ".join(e.describe() for e in self.entries)

    def missing_outputs(self, outputs: Sequence[str]) -> list[str]:
        """`Expert: Output` for every output this map names that is not in `outputs`."""
        return [f"{e.name}: {o}" for e in self.entries for o in e.outputs if o not in outputs]

    def restricted_to(self, outputs: Sequence[str]) -> tuple[LabelMap, tuple[str, ...]]:
        """(the entries whose outputs are all in `outputs`, the names of those left out)."""
        kept = tuple(e for e in self.entries if all(o in outputs for o in e.outputs))
        return LabelMap(kept, self.origin), tuple(e.name for e in self.entries if e not in kept)

    def scores(self, probs: np.ndarray, outputs: Sequence[str]) -> np.ndarray:
        """(N, L) probabilities over `outputs` -> (N, K) one score per expert label (its combiner)."""
        columns = []
        for e in self.entries:
            picked = probs[:, [list(outputs).index(o) for o in e.outputs]].astype(np.float64)
            columns.append(picked.max(axis=1) if e.combiner == "max" else picked.mean(axis=1))
        return np.stack(columns, axis=1) if columns else np.zeros((len(probs), 0))

    def labels(self, multi_hot: np.ndarray, outputs: Sequence[str]) -> np.ndarray:
        """(N, L) {0, 1} labels over `outputs` -> (N, K) {0, 1}: positive where any mapped label is."""
        columns = [multi_hot[:, [list(outputs).index(o) for o in e.outputs]].max(axis=1) for e in self.entries]
        return np.stack(columns, axis=1).astype(np.int8) if columns else np.zeros((len(multi_hot), 0), np.int8)


def parse_entry(name: str, value: object, where: str) -> MappedLabel:
    """One entry: `value` is `Output`, `combiner(Output, ...)`, `Output, Output` (max) or a list of outputs."""
    name = str(name).strip()
    if not name:
        raise ValueError(f"{where}: an entry has no label name before ':'")
    combiner = "max"
    if isinstance(value, (list, tuple)):
        outputs = [str(v).strip() for v in value]
    elif isinstance(value, str):
        text = value.strip()
        call = _CALL.match(text)
        if call:
            combiner = call["fn"].lower()
            if combiner not in COMBINERS:
                raise ValueError(f"{where}: {name!r} uses {call['fn']}(...); the combiners are "
                                 f"{', '.join(COMBINERS)}")
            text = call["args"]
        outputs = [part.strip() for part in text.split(",")]
    else:
        raise ValueError(f"{where}: {name!r} maps to {value!r}; give an output name, a list, or max(A, B)")
    outputs = [o for o in outputs if o]
    if not outputs:
        raise ValueError(f"{where}: {name!r} maps to no output")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"{where}: {name!r} names an output twice ({', '.join(outputs)})")
    return MappedLabel(name, tuple(outputs), combiner)


def label_map_from_mapping(mapping: Mapping[object, object], origin: str) -> LabelMap:
    """A YAML mapping (already loaded) -> LabelMap; entries keep the mapping's order."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(f"{origin}: a label map is a mapping of `Expert label: outputs`, got {type(mapping).__name__}")
    return LabelMap(tuple(parse_entry(str(k), v, origin) for k, v in mapping.items()), origin)


def parse_label_map(text: str, origin: str) -> LabelMap:
    """Inline text: `A: max(X, Y); B: Z` (or one entry per line) -> LabelMap. A repeated label is refused."""
    entries = []
    for raw in re.split(r"[;\n]", text):
        part = raw.strip()
        if not part or part.startswith("#"):
            continue
        if ":" not in part:
            raise ValueError(f"{origin}: {part!r} is not `Expert label: outputs` (e.g. `Nodule or mass: "
                             "max(Nodule, Mass)`)")
        name, value = part.split(":", 1)
        entries.append(parse_entry(name, value, origin))
    if not entries:
        raise ValueError(f"{origin}: the label map is empty")
    names = [e.name for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{origin}: {', '.join(repeated)} mapped more than once")
    return LabelMap(tuple(entries), origin)
