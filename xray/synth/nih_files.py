"""The NIH metadata files of a synthetic archive, rendered from its case records: Data_Entry_2017.csv (with
the real header quirks), train_val_list.txt / test_list.txt (split by patient) and BBox_List_2017.csv.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from xray.metadata.labels import NO_FINDING
from xray.metadata.nih import DATA_ENTRY_HEADER
from xray.metadata.splits import split_patients

# BBox_List_2017.csv annotates only these 8 labels, and spells Infiltration "Infiltrate".
BBOX_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
               "Pneumonia", "Pneumothorax")
_BBOX_SPELLING = {"Infiltration": "Infiltrate"}


class CsvStyle(StrEnum):
    """Which Data_Entry release to imitate: 2017 ends every line with a comma, 2020 does not."""

    V2017 = "2017"
    V2020 = "2020"


@dataclass(frozen=True)
class CaseRecord:
    """Everything known about one synthetic image except its pixels."""

    image_index: str  # "{patient_id:08d}_{follow_up:03d}.png"
    findings: tuple[str, ...]  # names from LABELS in LABELS order; () means "No Finding"
    bboxes: tuple[tuple[str, float, float, float, float], ...]  # (label, x, y, w, h) in pixels
    patient_id: int
    follow_up: int
    gender: str  # "M" | "F"
    age: int
    view: str  # "PA" | "AP"
    size: int  # the image is (size, size)
    spacing: float  # pixel spacing, mm


def render_data_entry_csv(cases: Sequence[CaseRecord], style: CsvStyle | str = CsvStyle.V2017) -> str:
    """Data_Entry_2017.csv text with the real header quirks (style 2017: every line ends with a comma)."""
    end = "," if CsvStyle(style) is CsvStyle.V2017 else ""
    lines = [",".join(DATA_ENTRY_HEADER) + end]
    for c in cases:
        found = "|".join(c.findings) or NO_FINDING
        lines.append(f"{c.image_index},{found},{c.follow_up},{c.patient_id},{c.age},{c.gender},{c.view},"
                     f"{c.size},{c.size},{c.spacing!r},{c.spacing!r}{end}")
    return "\n".join(lines) + "\n"


def render_split_lists(cases: Sequence[CaseRecord], test_fraction: float, seed: int) -> tuple[str, str]:
    """(train_val_list.txt, test_list.txt) texts; split by patient, image names sorted, one per line."""
    _, test_ids = split_patients((c.patient_id for c in cases), test_fraction, seed)
    held = set(test_ids)
    train_val = sorted(c.image_index for c in cases if c.patient_id not in held)
    test = sorted(c.image_index for c in cases if c.patient_id in held)
    return "".join(f"{n}\n" for n in train_val), "".join(f"{n}\n" for n in test)


def render_bbox_csv(cases: Sequence[CaseRecord]) -> str:
    """BBox_List_2017.csv text: boxes of the 8 annotated labels only, grouped by label like the real file."""
    rows = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]  # BBOX_HEADER as the real file spells it
    for label in BBOX_LABELS:
        name = _BBOX_SPELLING.get(label, label)
        for c in cases:
            rows.extend(f"{c.image_index},{name},{x!r},{y!r},{w!r},{h!r}"
                        for box_label, x, y, w, h in c.bboxes if box_label == label)
    return "\n".join(rows) + "\n"
