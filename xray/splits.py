"""Patient splits: which images train a model, which validate it and which test it, disjoint by patient.

Test images come from NIH's test_list.txt; validation is a seeded share of the train_val patients. Without
split lists, test is carved out of all patients the same way as validation (seed + 1). The split a model
was trained with is recorded in its artifact (xray.manifests.SplitRecord), so later stages (quantize, the
report's thresholds) can redraw exactly the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xray.labels import LABELS
from xray.metadata import ArchiveMetadata, patient_split


@dataclass(frozen=True)
class PatientSplit:
    """Image ids of each split, as drawn from the metadata (images may still be missing from the archive)."""

    train: frozenset[str]
    val: frozenset[str]
    test: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.train | self.val | self.test


@dataclass(frozen=True)
class LabelledSplit:
    """The images of a PatientSplit that were decoded, sorted, with multi-hot labels (N, L) in the same order
    for train and validation (what a trainer needs; picklable, shared through Ray's object store)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    train_labels: np.ndarray
    val_labels: np.ndarray


def split_by_patient(meta: ArchiveMetadata, val_fraction: float, seed: int) -> PatientSplit:
    """(train, val, test) image ids: test from test_list.txt, val = held-out train_val patients."""
    entries = list(meta.entries)
    if meta.test is not None:
        test = set(meta.test)
    else:
        _, test_patients = patient_split(entries, val_fraction, seed + 1)
        tp = set(test_patients)
        test = {e.image_index for e in entries if e.patient_id in tp}
    pool = [e for e in entries if e.image_index not in test]
    if meta.train_val is not None:
        allowed = set(meta.train_val)
        pool = [e for e in pool if e.image_index in allowed]
    _, val_patients = patient_split(pool, val_fraction, seed)
    vp = set(val_patients)
    val = {e.image_index for e in pool if e.patient_id in vp}
    train = {e.image_index for e in pool} - val
    return PatientSplit(frozenset(train), frozenset(val), frozenset(test))


def labels_for(ids: tuple[str, ...], meta: ArchiveMetadata) -> np.ndarray:
    """(N,) image ids -> (N, L) float32 multi-hot labels in LABELS order. KeyError for an unlisted id."""
    by_id = {e.image_index: e.labels for e in meta.entries}
    return np.array([by_id[i] for i in ids], dtype=np.float32).reshape(len(ids), len(LABELS))


def labelled_split(split: PatientSplit, meta: ArchiveMetadata, present: set[str]) -> LabelledSplit:
    """The decoded (present) images of each split, sorted, with train and validation labels."""
    train = tuple(sorted(i for i in split.train if i in present))
    val = tuple(sorted(i for i in split.val if i in present))
    test = tuple(sorted(i for i in split.test if i in present))
    return LabelledSplit(train, val, test, labels_for(train, meta), labels_for(val, meta))
