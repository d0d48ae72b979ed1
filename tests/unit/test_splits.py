"""xray.metadata.splits: patient splits that never share a patient, honour NIH's lists and redraw identically."""

from __future__ import annotations

import numpy as np
import pytest

from xray.metadata.labels import LABELS
from xray.metadata.nih import ArchiveMetadata, DataEntry
from xray.metadata.splits import labelled_split, labels_for, split_by_patient


def _entry(patient: int, follow_up: int, findings: tuple[str, ...] = ()) -> DataEntry:
    labels = tuple(int(name in findings) for name in LABELS)
    return DataEntry(f"{patient:08d}_{follow_up:03d}.png", findings, labels, follow_up, patient, 50, "M", "PA",
                     1024, 1024, 0.14, 0.14)


def _meta(with_lists: bool) -> ArchiveMetadata:
    entries = tuple(_entry(p, f, ("Nodule",) if (p + f) % 3 == 0 else ()) for p in range(1, 41) for f in range(3))
    if not with_lists:
        return ArchiveMetadata(entries, None, None, ())
    test = tuple(e.image_index for e in entries if e.patient_id > 32)
    train_val = tuple(e.image_index for e in entries if e.patient_id <= 32)
    return ArchiveMetadata(entries, train_val, test, ())


def _patients(ids) -> set[int]:
    return {int(i.split("_")[0]) for i in ids}


@pytest.mark.parametrize("with_lists", [True, False])
def test_splits_cover_every_image_once_and_never_share_a_patient(with_lists):
    meta = _meta(with_lists)
    s = split_by_patient(meta, 0.25, seed=7)
    assert s.all == {e.image_index for e in meta.entries}
    assert not (s.train & s.val) and not (s.train & s.test) and not (s.val & s.test)
    assert not (_patients(s.train) & _patients(s.val))
    assert not (_patients(s.train | s.val) & _patients(s.test))
    assert all(len(ids) > 0 for ids in (s.train, s.val, s.test))


def test_test_list_is_honoured_and_validation_is_a_share_of_train_val_patients():
    meta = _meta(with_lists=True)
    s = split_by_patient(meta, 0.25, seed=0)
    assert s.test == frozenset(meta.test)
    assert _patients(s.val) <= set(range(1, 33))
    assert len(_patients(s.val)) == 8  # a quarter of the 32 train_val patients


def test_same_fraction_and_seed_redraw_the_same_split_and_another_seed_does_not():
    meta = _meta(with_lists=True)
    assert split_by_patient(meta, 0.25, 3) == split_by_patient(meta, 0.25, 3)
    assert split_by_patient(meta, 0.25, 3).val != split_by_patient(meta, 0.25, 4).val


def test_labelled_split_keeps_decoded_images_sorted_with_their_labels():
    meta = _meta(with_lists=True)
    s = split_by_patient(meta, 0.25, seed=1)
    present = set(sorted(s.all)[::2])
    ls = labelled_split(s, meta, present)
    assert list(ls.train) == sorted(i for i in s.train if i in present)
    assert set(ls.test) == {i for i in s.test if i in present}
    nodule = LABELS.index("Nodule")
    expected = [float((int(i[:8]) + int(i[9:12])) % 3 == 0) for i in ls.train]
    np.testing.assert_array_equal(ls.train_labels[:, nodule], expected)
    assert ls.val_labels.shape == (len(ls.val), len(LABELS))
    with pytest.raises(KeyError):
        labels_for(("99999999_000.png",), meta)
