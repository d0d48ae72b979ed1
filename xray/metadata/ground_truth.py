"""Ground truth for scored images: findings from Data_Entry_2017.csv, the NIH split lists, and which images the
model trained on and which it held out (its patient split, redrawn from its artifact or given as a list).

Pure joins over parsed metadata (xray.metadata.nih); reading the files is storage/metadata_files.py's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from xray.metadata.labels import LABELS, NO_FINDING
from xray.metadata.nih import DataEntry
from xray.metadata.splits import UNLISTED, ModelSplit, Split


@dataclass(frozen=True)
class GroundTruth:
    """Per scored image (N,): multi-hot labels (N, L) in the run's label order, whether Data_Entry lists
    the image, its findings as written ('No Finding' for none, '' when unlisted), its NIH split, whether the
    model held it out for validation (`held_out`) and whether it trained on it (`trained`, known or assumed).
    `model_split` is the split `held_out`/`trained` come from (None: nothing known, train_val assumed trained)."""

    labels: np.ndarray
    known: np.ndarray
    findings: np.ndarray
    split: np.ndarray
    held_out: np.ndarray
    trained: np.ndarray
    model_split: ModelSplit | None = None

    def mask(self, split: Split) -> np.ndarray:
        """(N,) bool: the listed images of `split`."""
        if split is Split.ALL:
            return self.known.copy()
        if split is Split.VAL:
            return self.known & self.held_out
        if split is Split.TRAIN:
            return self.known & self.trained
        return self.known & (self.split == split.value)

    def role(self) -> np.ndarray:
        """(N,) object: 'train', 'val' or 'test' in the model's split of this image, '' when not known."""
        out = np.full(self.known.size, UNLISTED, dtype=object)
        out[self.split == Split.TEST.value] = Split.TEST.value
        out[self.trained] = Split.TRAIN.value
        out[self.held_out] = Split.VAL.value
        return out


def join_ground_truth(image_ids: Sequence[str], entries: Iterable[DataEntry], labels: Sequence[str],
                      train_val: Iterable[str] | None, test: Iterable[str] | None,
                      model_split: ModelSplit | None = None) -> GroundTruth:
    """(N,) image ids -> their ground truth; `labels` picks and orders the columns (names from LABELS).

    Without split lists, the model's split (when known) places the images: test from its test split,
    train_val from the rest. Without a model split, every train_val image counts as trained on (NIH's list is
    what a model is trained on unless its artifact says otherwise) and none as held out.
    Raises ValueError for a label name unknown to Data_Entry_2017.csv.
    """
    unknown = [name for name in labels if name not in LABELS]
    if unknown:
        raise ValueError(f"labels {unknown} are not ChestX-ray14 findings ({', '.join(LABELS)})")
    columns = [LABELS.index(name) for name in labels]
    by_image = {e.image_index: e for e in entries}
    if test is None and train_val is None and model_split is not None and model_split.test is not None:
        test = model_split.test
        train_val = (model_split.train or frozenset()) | model_split.val
    split_of = {image: Split.TEST.value for image in test or ()}
    split_of.update({image: Split.TRAIN_VAL.value for image in train_val or ()})
    n = len(image_ids)
    y = np.zeros((n, len(columns)), dtype=np.int8)
    known = np.zeros(n, dtype=bool)
    findings = np.full(n, "", dtype=object)
    split = np.full(n, UNLISTED, dtype=object)
    held_out = np.zeros(n, dtype=bool)
    trained = np.zeros(n, dtype=bool)
    val = model_split.val if model_split is not None else frozenset()
    train = model_split.train if model_split is not None else None
    for i, image in enumerate(image_ids):
        split[i] = split_of.get(image, UNLISTED)
        held_out[i] = image in val
        trained[i] = (image in train) if train is not None else (split[i] == Split.TRAIN_VAL.value and not held_out[i])
        entry = by_image.get(image)
        if entry is None:
            continue
        known[i] = True
        y[i] = [entry.labels[c] for c in columns]
        findings[i] = "|".join(entry.findings) or NO_FINDING
    return GroundTruth(y, known, findings, split, held_out, trained, model_split)
