"""A foreign model's outputs -> tilescope's label columns, in CheXNet order.

A model brought in by `tilescope import` may list its findings in any order (CheXpert-trained models do),
cover only some of the 14 ChestX-ray14 labels, or have outputs tilescope has no column for ("Lung Opacity",
"Support Devices", ...). The user names every output once (`--labels`), `-` for one to leave out. Kept
outputs are reordered into xray.metadata.labels.LABELS order; a label the model lacks gets no column at all (a column
of zeros would read as "certainly absent"). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from xray.metadata.labels import LABELS

DROP = "-"
# Other spellings of a ChestX-ray14 label seen in published models (CheXpert, torchxrayvision).
ALIASES = {"pleural effusion": "Effusion", "infiltrate": "Infiltration", "infiltrates": "Infiltration",
           "pleural thickening": "Pleural_Thickening"}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip()).lower()


_CANONICAL = {_key(label): label for label in LABELS} | ALIASES


def canonical_label(name: str) -> str | None:
    """'pleural thickening' / 'Pleural_Thickening' -> 'Pleural_Thickening'; `-` -> None (output dropped).
    Raises ValueError naming the known labels for anything else."""
    if name.strip() == DROP:
        return None
    label = _CANONICAL.get(_key(name))
    if label is None:
        raise ValueError(f"--labels: {name!r} is not a ChestX-ray14 label ({', '.join(LABELS)}); write "
                         f"{DROP!r} for an output tilescope has no column for")
    return label


def split_names(values: Sequence[str]) -> list[str]:
    """`--labels A B` or `--labels A,B` (or both): one name per model output."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class OutputMap:
    """Which model outputs become which label columns: `rows[k]` is the model output holding `labels[k]`;
    labels in LABELS order, each once."""

    rows: tuple[int, ...]
    labels: tuple[str, ...]
    dropped: tuple[int, ...] = ()
    """Model outputs left out (named `-`)."""

    @property
    def identity(self) -> bool:
        """The model's outputs are already the columns (nothing reordered or dropped)."""
        return self.rows == tuple(range(len(self.rows))) and not self.dropped

    def to_json(self) -> dict:
        return {"model_outputs": len(self.rows) + len(self.dropped), "rows": list(self.rows),
                "labels": list(self.labels), "dropped": list(self.dropped)}


def output_map(names: Sequence[str], n_outputs: int) -> OutputMap:
    """The model's outputs named in order (`--labels`; empty = the 14 in CheXNet order) -> its OutputMap.

    Raises ValueError when the count does not match the model, a label repeats, or no output is kept.
    """
    names = split_names(names) or (list(LABELS) if n_outputs == len(LABELS) else [])
    if len(names) != n_outputs:
        given = f"--labels names {len(names)}" if names else "no --labels given"
        raise ValueError(f"--labels: the model has {n_outputs} outputs and {given}; name each output in order "
                         f"(one of {', '.join(LABELS)}, or {DROP!r} to leave it out)")
    labels = [canonical_label(n) for n in names]
    repeated = sorted({x for x in labels if x is not None and labels.count(x) > 1})
    if repeated:
        raise ValueError(f"--labels: {', '.join(repeated)} named for more than one output")
    kept = {label: row for row, label in enumerate(labels) if label is not None}
    if not kept:
        raise ValueError(f"--labels: every output is {DROP!r}; nothing would be scored")
    order = [label for label in LABELS if label in kept]
    return OutputMap(tuple(kept[label] for label in order), tuple(order),
                     tuple(row for row, label in enumerate(labels) if label is None))
