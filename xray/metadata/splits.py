"""Patient splits, in one place: which images train a model, which validate it and which test it, disjoint by
patient; the names a report uses for them (Split); and a model's own split as the report knows it (ModelSplit).

Test images come from NIH's test_list.txt; validation is a seeded share of the train_val patients. Without
split lists, test is carved out of all patients the same way as validation (seed + 1). The split a model
was trained with is recorded in its artifact (xray.metadata.manifests.SplitRecord), so later stages (quantize, the
report's thresholds) can redraw exactly the same one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from xray.metadata.labels import LABELS
from xray.metadata.nih import ArchiveMetadata, DataEntry


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


class Split(enum.StrEnum):
    """Which images a statistic uses: every labelled image, one of the NIH split lists, or one part of the
    model's own patient split of train_val (train: the images it learnt from; val: the patients it held out)."""

    ALL = "all"
    TRAIN_VAL = "train_val"
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


UNLISTED = ""  # the split of an image in neither list


@dataclass(frozen=True)
class ModelSplit:
    """The images a model trained on and the ones it held out for validation (its patient split).

    `train` is None when only the held-out images are known (a --val-list for predictions from elsewhere):
    the rest of train_val is then taken as trained on. `test` is the model's test split, used only where
    the archive has no test_list.txt. `source` says where the split comes from, for the page and errors.
    """

    train: frozenset[str] | None
    val: frozenset[str]
    source: str
    test: frozenset[str] | None = None


def split_patients(patient_ids: Iterable[int], held_fraction: float,
                   seed: int) -> tuple[list[int], list[int]]:
    """Deterministically split distinct patient ids into (kept, held), both sorted.

    round(held_fraction * n) patients are held, clamped so both sides are non-empty when n >= 2.
    The result depends only on the set of ids, the fraction and the seed (not on input order).
    """
    if not 0.0 < held_fraction < 1.0:
        raise ValueError(f"held fraction must be in (0, 1), got {held_fraction}")
    ids = sorted(set(patient_ids))
    n_held = min(max(round(held_fraction * len(ids)), 1), len(ids) - 1) if len(ids) >= 2 else 0
    order = np.random.default_rng([seed, 0x5E1]).permutation(len(ids))
    held_positions = set(order[:n_held].tolist())
    kept = [pid for i, pid in enumerate(ids) if i not in held_positions]
    held = [pid for i, pid in enumerate(ids) if i in held_positions]
    return kept, held


def patient_split(entries: Sequence[DataEntry], val_fraction: float,
                  seed: int) -> tuple[list[int], list[int]]:
    """(train patient ids, validation patient ids), disjoint and sorted; no patient is in both.

    About val_fraction of the patients (not images) go to validation; select images with
    `entry.patient_id in set(val_ids)`.
    """
    return split_patients((e.patient_id for e in entries), val_fraction, seed)
