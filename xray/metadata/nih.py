"""Parsers for the NIH ChestX-ray14 metadata files: Data_Entry_2017.csv, the split lists, BBox_List_2017.csv.

Pure functions over text: reading the files (local or S3) is the caller's job via storage/fs.py.

Quirks of the real files, handled here:
- Bracketed headers split when read as CSV: `OriginalImage[Width,Height]` is two columns
  (`OriginalImage[Width`, `Height]`), so the data-entry header names 9 things but has 11 fields.
- The 2017 file ends every line (header included) with a comma, i.e. a 12th empty column; the
  2020 revision (Data_Entry_2017_v2020.csv) has no trailing column.
- Ages are plain integers in the 2017/2020 files but DICOM age strings (`058Y`, `006M`) in some
  derived sample files; both parse. The original 2017 file holds a few impossible ages (> 400):
  they are kept as written, not rejected, since the 2020 revision is the corrected source.
- In the 2020 revision the `Follow-up #` column was renumbered and no longer matches the `_NNN`
  suffix of the image name, so the two are not cross-checked.
- BBox_List_2017.csv names Infiltration `Infiltrate`; BBox.label holds the name from LABELS.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from xray.metadata.labels import LABELS, NO_FINDING, parse_findings

DATA_ENTRY_HEADER: tuple[str, ...] = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
)
# Later copies of the file on the NIH box rename "Patient Gender" to "Patient Sex".
_HEADER_ALIASES = {"Patient Sex": "Patient Gender"}
BBOX_HEADER: tuple[str, ...] = ("Image Index", "Finding Label", "Bbox [x", "y", "w", "h]")
BBOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
GENDERS = ("M", "F")
VIEWS = ("PA", "AP")
MAX_REPORTED_PROBLEMS = 10
T = TypeVar("T")
_AGE_UNIT_YEARS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


@dataclass(frozen=True)
class DataEntry:
    """One row of Data_Entry_2017.csv: one image and what is known about it."""

    image_index: str
    findings: tuple[str, ...]  # names from LABELS as written; () for "No Finding"
    labels: tuple[int, ...]  # multi-hot (len(LABELS),) in LABELS order
    follow_up: int
    patient_id: int
    patient_age: int  # years
    patient_gender: str  # "M" | "F"
    view_position: str  # "PA" | "AP"
    width: int  # original DICOM width, pixels
    height: int
    spacing_x: float  # original pixel spacing, mm
    spacing_y: float


@dataclass(frozen=True)
class BBox:
    """One row of BBox_List_2017.csv; coordinates are pixels of the 1024x1024 PNG."""

    image_index: str
    label: str  # a name from LABELS (the file's "Infiltrate" becomes "Infiltration")
    x: float
    y: float
    w: float
    h: float


class _Problems:
    """Collects per-line problems so one error can report many of them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, line: int, cause: str) -> None:
        self.items.append(f"line {line}: {cause}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_REPORTED_PROBLEMS]
        more = len(self.items) - len(shown)
        tail = f"\n  ... and {more} more" if more else ""
        raise ValueError(f"{self.source}: {len(self.items)} malformed line(s):\n  "
                         + "\n  ".join(shown) + tail)


def _text(data: str | bytes, source: str = "metadata") -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); NIH's files "
                         "are ASCII: is this the right file?") from None


def _rows(text: str) -> Iterable[tuple[int, list[str]]]:
    """(1-based line number, fields) for every non-blank CSV line, header included."""
    reader = csv.reader(io.StringIO(text))
    for fields in reader:
        if fields and any(f.strip() for f in fields):
            yield reader.line_num, fields


def _strip_trailing_empty(fields: list[str], keep: int) -> list[str] | None:
    """Drop empty fields beyond the first `keep`; None when a non-empty one is found there."""
    if any(f.strip() for f in fields[keep:]):
        return None
    return fields[:keep]


def parse_age(value: str) -> int:
    """'58' or a DICOM age string '058Y' / '006M' / '012W' / '200D' -> whole years (floor).

    Raises ValueError for anything else or a negative age.
    """
    text = value.strip().upper()
    unit = 1.0
    if text[-1:] in _AGE_UNIT_YEARS:
        unit = _AGE_UNIT_YEARS[text[-1]]
        text = text[:-1]
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"patient age {value!r} is neither an integer nor a DICOM age like '058Y'")
    return int(math.floor(int(text) * unit + 1e-9))


def _check_header(line: int, fields: list[str], expected: tuple[str, ...], source: str,
                  aliases: dict[str, str] | None = None) -> None:
    names = [f.strip() for f in fields]
    while names and not names[-1]:
        names.pop()
    names = [(aliases or {}).get(n, n) for n in names]
    if tuple(names) != expected:
        raise ValueError(f"{source}: line {line}: unexpected header {','.join(fields)!r}; "
                         f"expected {','.join(expected)!r} (optionally with trailing commas)")


def _int(value: str, what: str, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an integer") from None
    if number < minimum:
        raise ValueError(f"{what} {number} is below {minimum}")
    return number


def _float(value: str, what: str, positive: bool) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{what} {number} must be {'positive' if positive else 'non-negative'} and finite")
    return number


@functools.lru_cache(maxsize=4096)  # ~800 distinct combinations in the real file
def _findings(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    names = tuple(n.strip() for n in text.split("|"))
    if text.strip() == NO_FINDING:
        return (), tuple(parse_findings(NO_FINDING))
    if not text.strip():
        raise ValueError(f"empty finding labels (write {NO_FINDING!r} for a normal image)")
    if NO_FINDING in names:
        raise ValueError(f"finding labels {text!r} combine {NO_FINDING!r} with findings")
    if len(set(names)) != len(names):
        raise ValueError(f"finding labels {text!r} repeat a finding")
    return names, tuple(parse_findings(text))


class _Fields:
    """Parses the fields of one row, collecting every cause instead of stopping at the first."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        self.causes: list[str] = []

    def get(self, parse: Callable[..., T], i: int, *args: object) -> T:
        try:
            return parse(self.fields[i], *args)
        except ValueError as exc:
            self.causes.append(str(exc))
            return None  # type: ignore[return-value]  # never used: done() raises first

    def done(self) -> None:
        if self.causes:
            raise ValueError("; ".join(self.causes))


def _image(value: str) -> str:
    if not value.strip():
        raise ValueError("empty image index")
    return value.strip()


def _choice(value: str, what: str, allowed: tuple[str, ...]) -> str:
    if value.strip().upper() not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value.strip().upper()


def _data_entry(fields: list[str]) -> DataEntry:
    row = _Fields(fields)
    image = row.get(_image, 0)
    findings, labels = row.get(_findings, 1) or ((), ())
    follow_up, patient_id = row.get(_int, 2, "follow-up #", 0), row.get(_int, 3, "patient ID", 0)
    age = row.get(parse_age, 4)
    gender, view = row.get(_choice, 5, "patient gender", GENDERS), row.get(_choice, 6, "view position", VIEWS)
    width, height = row.get(_int, 7, "width", 1), row.get(_int, 8, "height", 1)
    spacing_x = row.get(_float, 9, "pixel spacing x", True)
    spacing_y = row.get(_float, 10, "pixel spacing y", True)
    row.done()
    return DataEntry(image_index=image, findings=findings, labels=labels, follow_up=follow_up,
                     patient_id=patient_id, patient_age=age, patient_gender=gender, view_position=view,
                     width=width, height=height, spacing_x=spacing_x, spacing_y=spacing_y)


def parse_data_entry(data: str | bytes, source: str = "Data_Entry_2017.csv") -> list[DataEntry]:
    """Parse the 2017 (trailing comma) or 2020 data-entry CSV into one DataEntry per image, in file order.

    Raises ValueError naming the source, line numbers and causes (up to 10) of every malformed row,
    including duplicate image indices.
    """
    rows = _rows(_text(data, source))
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{source}: empty file; expected the header {','.join(DATA_ENTRY_HEADER)!r}")
    names = [_HEADER_ALIASES.get(f.strip(), f.strip()) for f in first[1]]
    while names and not names[-1]:
        names.pop()
    if tuple(names) != DATA_ENTRY_HEADER:
        return _parse_label_table(first[0], names, rows, source)
    problems = _Problems(source)
    entries: list[DataEntry] = []
    seen: dict[str, int] = {}
    width = len(DATA_ENTRY_HEADER)
    for line, raw in rows:
        fields = _strip_trailing_empty(raw, width) if len(raw) >= width else None
        if fields is None:
            problems.add(line, f"expected {width} values (plus optional empty trailing ones), got {len(raw)}")
            continue
        try:
            entry = _data_entry(fields)
        except ValueError as exc:
            problems.add(line, str(exc))
            continue
        if entry.image_index in seen:
            problems.add(line, f"image {entry.image_index} already listed on line {seen[entry.image_index]}")
            continue
        seen[entry.image_index] = line
        entries.append(entry)
    problems.raise_if_any()
    return entries


LABEL_TABLE_REQUIRED = ("Image Index", "Finding Labels")
PATIENT_UNKNOWN = 10**12
"""Patient ids from here up stand for "not given": a label table without a Patient ID column gets one per image
(ArchiveMetadata.patients_known is then False, and splits and intervals are per image)."""


def _parse_label_table(line: int, names: list[str], rows: Iterable[tuple[int, list[str]]],
                       source: str) -> list[DataEntry]:
    """A table of one's own labels in Data_Entry's vocabulary: `Image Index` and `Finding Labels` columns (any
    order, other columns ignored), `Patient ID` optional."""
    missing = [n for n in LABEL_TABLE_REQUIRED if n not in names]
    if missing:
        shown = ", ".join(repr(n[:40]) for n in names[:12]) + (" ..." if len(names) > 12 else "")
        raise ValueError(f"{source}: line {line}: no {' or '.join(repr(m) for m in missing)} column (the header has "
                         f"{shown}); a label table needs {' and '.join(LABEL_TABLE_REQUIRED)} ('Patient ID' "
                         "optional), or use NIH's Data_Entry_2017.csv as published")
    i_image, i_labels = names.index("Image Index"), names.index("Finding Labels")
    i_patient = names.index("Patient ID") if "Patient ID" in names else None
    problems = _Problems(source)
    entries: list[DataEntry] = []
    seen: dict[str, int] = {}
    for number, raw in rows:
        row = _Fields(raw + [""] * (len(names) - len(raw)))
        image = row.get(_image, i_image)
        findings, labels = row.get(_findings, i_labels) or ((), ())
        patient = (row.get(_int, i_patient, "patient ID", 0) if i_patient is not None
                   else PATIENT_UNKNOWN + len(entries))
        try:
            row.done()
        except ValueError as exc:
            problems.add(number, str(exc))
            continue
        if image in seen:
            problems.add(number, f"image {image} already listed on line {seen[image]}")
            continue
        seen[image] = number
        entries.append(DataEntry(image_index=image, findings=findings, labels=labels, follow_up=0,
                                 patient_id=patient, patient_age=0, patient_gender="", view_position="", width=0,
                                 height=0, spacing_x=0.0, spacing_y=0.0))
    problems.raise_if_any()
    return entries


def entries_by_image(entries: Iterable[DataEntry]) -> dict[str, DataEntry]:
    """image_index -> entry; raises ValueError on a duplicate image index."""
    by_image: dict[str, DataEntry] = {}
    for entry in entries:
        if entry.image_index in by_image:
            raise ValueError(f"image {entry.image_index} appears more than once")
        by_image[entry.image_index] = entry
    return by_image


def parse_split_list(data: str | bytes, source: str = "split list") -> list[str]:
    """train_val_list.txt / test_list.txt -> image indices in file order (blank lines skipped).

    Raises ValueError for lines holding more than one token and for duplicates.
    """
    problems = _Problems(source)
    images: list[str] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(_text(data, source).splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        if len(name.split()) != 1 or "," in name:
            problems.add(line, f"expected one image index, got {raw!r}")
        elif name in seen:
            problems.add(line, f"image {name} already listed on line {seen[name]}")
        else:
            seen[name] = line
            images.append(name)
    problems.raise_if_any()
    return images


def _bbox_label(value: str) -> str:
    label = BBOX_LABEL_ALIASES.get(value.strip(), value.strip())
    if label not in LABELS:
        raise ValueError(f"unknown finding label {value.strip()!r}")
    return label


def _bbox(fields: list[str]) -> BBox:
    row = _Fields(fields)
    image, label = row.get(_image, 0), row.get(_bbox_label, 1)
    x, y = row.get(_float, 2, "x", False), row.get(_float, 3, "y", False)
    w, h = row.get(_float, 4, "w", True), row.get(_float, 5, "h", True)
    row.done()
    return BBox(image_index=image, label=label, x=x, y=y, w=w, h=h)


def parse_bbox_list(data: str | bytes, source: str = "BBox_List_2017.csv") -> list[BBox]:
    """BBox_List_2017.csv -> one BBox per row, in file order.

    Header `Image Index,Finding Label,Bbox [x,y,w,h],,,` (brackets split into 4 columns, then 3 empty
    ones); rows hold 6 values, optionally followed by the 3 empty ones. Raises ValueError listing
    malformed rows.
    """
    rows = _rows(_text(data, source))
    first = next(rows, None)
    if first is None:
        raise ValueError(f"{source}: empty file; expected the header {','.join(BBOX_HEADER)!r}")
    _check_header(*first, BBOX_HEADER, source)
    problems = _Problems(source)
    boxes: list[BBox] = []
    width = len(BBOX_HEADER)
    for line, raw in rows:
        fields = _strip_trailing_empty(raw, width) if len(raw) >= width else None
        if fields is None:
            problems.add(line, f"expected {width} values (plus optional empty trailing ones), got {len(raw)}")
            continue
        try:
            boxes.append(_bbox(fields))
        except ValueError as exc:
            problems.add(line, str(exc))
    problems.raise_if_any()
    return boxes


@dataclass(frozen=True)
class ArchiveMetadata:
    """An archive's parsed metadata: Data_Entry rows, the NIH split lists (None when absent) and the boxes."""

    entries: tuple[DataEntry, ...]
    train_val: tuple[str, ...] | None
    test: tuple[str, ...] | None
    bboxes: tuple[BBox, ...]

    @property
    def patients_known(self) -> bool:
        """False for a label table without a Patient ID column: every image is then its own patient."""
        return all(e.patient_id < PATIENT_UNKNOWN for e in self.entries)
