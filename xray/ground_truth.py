"""Ground truth for scored images: findings from Data_Entry_2017.csv and the split from the NIH split lists.

Pure joins over parsed metadata (xray.metadata); reading the files is storage/metadata_files.py's job.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from xray.labels import LABELS, NO_FINDING
from xray.metadata import DataEntry


class Split(enum.StrEnum):
    """Which images a statistic uses: every labelled image, or one of the NIH split lists."""

    ALL = "all"
    TRAIN_VAL = "train_val"
    TEST = "test"


UNLISTED = ""  # the split of an image in neither list


@dataclass(frozen=True)
class GroundTruth:
    """Per scored image (N,): multi-hot labels (N, L) in the run's label order, whether Data_Entry lists
    the image, its findings as written ('No Finding' for none, '' when unlisted), and its split."""

    labels: np.ndarray
    known: np.ndarray
    findings: np.ndarray
    split: np.ndarray

    def mask(self, split: Split) -> np.ndarray:
        """(N,) bool: the listed images of `split`."""
        if split is Split.ALL:
            return self.known.copy()
        return self.known & (self.split == split.value)


def join_ground_truth(image_ids: Sequence[str], entries: Iterable[DataEntry], labels: Sequence[str],
                      train_val: Iterable[str] | None, test: Iterable[str] | None) -> GroundTruth:
    """(N,) image ids -> their ground truth; `labels` picks and orders the columns (names from LABELS).

    Raises ValueError for a label name unknown to Data_Entry_2017.csv.
    """
    unknown = [name for name in labels if name not in LABELS]
    if unknown:
        raise ValueError(f"labels {unknown} are not ChestX-ray14 findings ({', '.join(LABELS)})")
    columns = [LABELS.index(name) for name in labels]
    by_image = {e.image_index: e for e in entries}
    split_of = {image: Split.TEST.value for image in test or ()}
    split_of.update({image: Split.TRAIN_VAL.value for image in train_val or ()})
    n = len(image_ids)
    y = np.zeros((n, len(columns)), dtype=np.int8)
    known = np.zeros(n, dtype=bool)
    findings = np.full(n, "", dtype=object)
    split = np.full(n, UNLISTED, dtype=object)
    for i, image in enumerate(image_ids):
        split[i] = split_of.get(image, UNLISTED)
        entry = by_image.get(image)
        if entry is None:
            continue
        known[i] = True
        y[i] = [entry.labels[c] for c in columns]
        findings[i] = "|".join(entry.findings) or NO_FINDING
    return GroundTruth(y, known, findings, split)
