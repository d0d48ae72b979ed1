"""Ground-truth tables beside NIH's own labels: image ids and labels in the table's own vocabulary, read as
1 (positive), 0 (negative), hedged or missing.

The Google 2019 expert labels (Majkowska et al.) are recognised as published: columns `Image Index`,
`Fracture`, `Pneumothorax`, `Airspace opacity`, `Nodule or mass` (YES/NO) and `Set Id` (test/val), and come with
a default map onto ChestX-ray14 outputs (GOOGLE_2019_MAP). Any other table names its label columns through a
label map (xray.metadata.label_maps), or uses columns named like ChestX-ray14 findings as they are.
Pure: parsed columns in, typed values out; reading the file is storage/ground_truth_files.py's job.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xray.metadata.label_maps import LabelMap, MappedLabel
from xray.metadata.labels import LABELS

POSITIVE, NEGATIVE, HEDGED, MISSING = 1, 0, -1, -2
"""Cell values of ExpertTable.values."""

_POSITIVE = {"yes", "y", "true", "t", "1", "1.0", "positive", "pos", "present"}
_NEGATIVE = {"no", "n", "false", "f", "0", "0.0", "negative", "neg", "absent"}
_HEDGED = {"hedge", "hedged", "uncertain", "-1", "-1.0", "possible", "equivocal", "indeterminate"}
_MISSING = {"", "na", "n/a", "nan", "none", "null", "not read", "-"}

ID_COLUMNS = ("Image Index", "image_id")
GOOGLE_2019_LABELS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
GOOGLE_2019_SET = "Set Id"
GOOGLE_2019_NAME = "Google 2019 expert labels"
GOOGLE_2019_CITATION = (
    "Majkowska A, Mittal S, Steiner DF, et al. Chest radiograph interpretation with deep learning models: "
    "assessment with radiologist-adjudicated reference standards and population-adjusted evaluation. "
    "Radiology 2020;294(2):421-431. Each image read by three radiologists, disagreements adjudicated; "
    "4,376 images of NIH ChestX-ray14 (1,962 from NIH's test list, 2,414 from its train/val list).")
GOOGLE_2019_MAP = LabelMap((
    MappedLabel("Pneumothorax", ("Pneumothorax",)),
    MappedLabel("Airspace opacity", ("Consolidation", "Pneumonia", "Infiltration", "Edema", "Atelectasis")),
    MappedLabel("Nodule or mass", ("Nodule", "Mass")),
), "default map for the Google 2019 labels")
"""Fracture has no ChestX-ray14 output: it is left out of the comparison and said so."""


@dataclass(frozen=True)
class ExpertTable:
    """One ground-truth table: N images, K labels (its vocabulary, in the table's column order)."""

    source: str
    """Where it was read from (URI)."""
    name: str
    """What the page calls it: GOOGLE_2019_NAME for the Google file, else the file name."""
    labels: tuple[str, ...]
    image_id: np.ndarray
    """(N,) str."""
    values: np.ndarray
    """(N, K) int8: POSITIVE, NEGATIVE, HEDGED or MISSING."""
    set_id: np.ndarray | None = None
    """(N,) str from `Set Id` (Google: test / val), None without that column."""
    google_2019: bool = False

    @property
    def citation(self) -> str:
        return GOOGLE_2019_CITATION if self.google_2019 else ""

    def default_map(self) -> LabelMap | None:
        """The map used without --label-map: Google's default, or columns named like ChestX-ray14 findings."""
        if self.google_2019:
            return GOOGLE_2019_MAP
        same = tuple(MappedLabel(label, (label,)) for label in self.labels if label in LABELS)
        return LabelMap(same, "columns named like the model's outputs") if same else None


def is_google_2019(columns: Sequence[str]) -> bool:
    return all(c in columns for c in ("Image Index", *GOOGLE_2019_LABELS, GOOGLE_2019_SET))


def read_value(cell: object) -> int:
    """One cell -> POSITIVE / NEGATIVE / HEDGED / MISSING; ValueError for anything else."""
    text = "" if cell is None else str(cell).strip().lower()
    if text in _POSITIVE:
        return POSITIVE
    if text in _NEGATIVE:
        return NEGATIVE
    if text in _HEDGED:
        return HEDGED
    if text in _MISSING:
        return MISSING
    raise ValueError(f"{cell!r}")


def parse_expert_table(columns: Mapping[str, Sequence[object]], source: str,
                       label_map: LabelMap | None = None) -> ExpertTable:
    """Columns (name -> cells) -> ExpertTable. Label columns: the Google file's four, else the map's labels,
    else the columns named like ChestX-ray14 findings. Refused, naming the cause: no id column, a label column
    the map names but the table lacks, a cell that is not a read (YES/NO, 1/0, hedged or empty), an empty or
    repeated image id."""
    names = list(columns)
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    if id_column is None:
        raise ValueError(f"{source}: no image id column ({' or '.join(ID_COLUMNS)}); columns are {names[:20]}")
    google = is_google_2019(names)
    if label_map is not None:
        labels = label_map.names
    elif google:
        labels = GOOGLE_2019_LABELS
    else:
        labels = tuple(c for c in names if c in LABELS)
    absent = [label for label in labels if label not in columns]
    if absent:
        raise ValueError(f"{source}: the label map names {', '.join(repr(a) for a in absent)}, which the table "
                         f"has no column for; its columns are {names[:20]}")
    if not labels:
        raise ValueError(f"{source}: no label columns: name them with --label-map (e.g. `My label: max(Nodule, "
                         f"Mass)`), or name the columns like ChestX-ray14 findings; its columns are {names[:20]}")
    ids = [posixpath.basename(str(v).strip().replace("\\", "/")) if v is not None else "" for v in columns[id_column]]
    empty = [i + 2 for i, v in enumerate(ids) if not v]
    if empty:
        raise ValueError(f"{source}: {len(empty)} rows have no image id (line {empty[0]} first)")
    seen: dict[str, int] = {}
    for v in ids:
        seen[v] = seen.get(v, 0) + 1
    repeated = [f"{v} ({n} rows)" for v, n in seen.items() if n > 1]
    if repeated:
        raise ValueError(f"{source}: {len(repeated)} image ids appear more than once, e.g. "
                         f"{', '.join(repeated[:5])}; one read per image expected")
    values = np.empty((len(ids), len(labels)), dtype=np.int8)
    for k, label in enumerate(labels):
        for i, cell in enumerate(columns[label]):
            try:
                values[i, k] = read_value(cell)
            except ValueError:
                raise ValueError(f"{source}: column {label!r}, line {i + 2} ({ids[i]}): {cell!r} is not a read; "
                                 "expected YES/NO or 1/0 (hedged reads such as HEDGED, UNCERTAIN or -1 and empty "
                                 "cells are excluded and counted)") from None
    set_id = (np.array([str(v or "").strip() for v in columns[GOOGLE_2019_SET]], dtype=object)
              if GOOGLE_2019_SET in columns else None)
    name = GOOGLE_2019_NAME if google else posixpath.basename(source.rstrip("/")) or source
    return ExpertTable(source, name, tuple(labels), np.array(ids, dtype=object), values, set_id, google)
