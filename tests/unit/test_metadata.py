"""xray.metadata.nih against the real NIH files (as shipped in the torchxrayvision wheel) and handwritten quirks.

The real files come from `pip download torchxrayvision==1.5.7` into .cache/wheels (gitignored), read straight
from the wheel zip; the package is never installed. Without network the real-file tests skip, unless CI is
set, where they fail.
"""

from __future__ import annotations

import collections
import gzip
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from xray.metadata.labels import LABELS
from xray.metadata.nih import (
    ArchiveMetadata,
    BBox,
    DataEntry,
    entries_by_image,
    parse_age,
    parse_bbox_list,
    parse_data_entry,
    parse_split_list,
)
from xray.metadata.splits import patient_split, split_patients

WHEEL_DIR = Path(__file__).resolve().parents[2] / ".cache" / "wheels"
WHEEL = WHEEL_DIR / "torchxrayvision-1.5.7-py3-none-any.whl"
DATA_ENTRY_MEMBER = "torchxrayvision/data/Data_Entry_2017_v2020.csv.gz"
BBOX_MEMBER = "torchxrayvision/data/BBox_List_2017.csv.gz"

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def _wheel_path() -> Path:
    if WHEEL.exists():
        return WHEEL
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "torchxrayvision==1.5.7", "-d", str(WHEEL_DIR)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        failure = None if proc.returncode == 0 and WHEEL.exists() else \
            f"rc {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-500:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    if failure is None:
        return WHEEL
    message = f"cannot download the torchxrayvision 1.5.7 wheel with the real NIH metadata ({failure})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message + "; offline? (under CI=true this is a failure)")


def _member(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return gzip.decompress(archive.read(name))


@pytest.fixture(scope="module")
def nih_wheel() -> Path:
    return _wheel_path()


@pytest.fixture(scope="module")
def real_entries(nih_wheel: Path) -> list[DataEntry]:
    return parse_data_entry(_member(nih_wheel, DATA_ENTRY_MEMBER), source=DATA_ENTRY_MEMBER)


@pytest.fixture(scope="module")
def real_boxes(nih_wheel: Path) -> list[BBox]:
    return parse_bbox_list(_member(nih_wheel, BBOX_MEMBER), source=BBOX_MEMBER)


# --- the real 2020 revision of Data_Entry_2017.csv --------------------------------------------------------


def test_real_data_entry_shape(real_entries: list[DataEntry]) -> None:
    assert len(real_entries) == 112_120
    assert len({e.patient_id for e in real_entries}) == 30_805
    assert len(entries_by_image(real_entries)) == 112_120
    assert real_entries[0] == DataEntry(
        image_index="00000001_000.png", findings=("Cardiomegaly",), labels=tuple(int(n == "Cardiomegaly")
                                                                                   for n in LABELS),
        follow_up=0, patient_id=1, patient_age=57, patient_gender="M", view_position="PA",
        width=2682, height=2749, spacing_x=0.14300000000000002, spacing_y=0.14300000000000002)
    assert real_entries[1].findings == ("Cardiomegaly", "Emphysema")
    assert real_entries[-1].image_index == "00030805_000.png"
    assert (real_entries[-1].patient_id, real_entries[-1].patient_age, real_entries[-1].spacing_x) == \
        (30805, 26, 0.171)
    assert max(e.follow_up for e in real_entries) == 183
    assert max(e.patient_age for e in real_entries) == 95


def test_real_data_entry_label_counts(real_entries: list[DataEntry]) -> None:
    counts = collections.Counter(name for e in real_entries for name in e.findings)
    assert counts["Hernia"] == 227
    assert counts["Pneumonia"] == 1_431
    assert counts["Infiltration"] == 19_894
    assert counts["Effusion"] == 13_317
    assert sum(1 for e in real_entries if not e.findings) == 60_361  # "No Finding"
    assert all(sum(e.labels) == len(e.findings) for e in real_entries)
    by_label = [sum(e.labels[i] for e in real_entries) for i in range(len(LABELS))]
    assert by_label[LABELS.index("Hernia")] == 227


def test_real_data_entry_demographics(real_entries: list[DataEntry]) -> None:
    assert collections.Counter(e.patient_gender for e in real_entries) == {"M": 63_340, "F": 48_780}
    assert collections.Counter(e.view_position for e in real_entries) == {"PA": 67_310, "AP": 44_810}


def test_real_patient_split(real_entries: list[DataEntry]) -> None:
    train, val = patient_split(real_entries, 0.1, seed=0)
    assert not set(train) & set(val)
    assert len(train) + len(val) == 30_805
    assert len(val) == round(0.1 * 30_805) == 3_080
    assert patient_split(real_entries, 0.1, seed=0) == (train, val)
    assert patient_split(real_entries, 0.1, seed=1)[1] != val
    val_set = set(val)
    val_images = sum(1 for e in real_entries if e.patient_id in val_set)
    assert 0.07 < val_images / len(real_entries) < 0.13


# --- the real BBox_List_2017.csv ----------------------------------------------------------------------------


def test_real_bbox_list(real_boxes: list[BBox], real_entries: list[DataEntry]) -> None:
    assert len(real_boxes) == 984
    assert len({b.image_index for b in real_boxes}) == 880
    counts = collections.Counter(b.label for b in real_boxes)
    assert counts == {"Atelectasis": 180, "Effusion": 153, "Cardiomegaly": 146, "Infiltration": 123,
                      "Pneumonia": 120, "Pneumothorax": 98, "Mass": 85, "Nodule": 79}
    assert real_boxes[0] == BBox("00013118_008.png", "Atelectasis", 225.084745762712, 547.019216763771,
                                 86.7796610169491, 79.1864406779661)
    assert all(b.x + b.w <= 1024 and b.y + b.h <= 1024 for b in real_boxes)
    known = entries_by_image(real_entries)
    assert all(b.image_index in known for b in real_boxes)


# --- handwritten files: the quirks of each release ---------------------------------------------------------


def test_2017_style_trailing_comma_dicom_age_and_no_finding() -> None:
    text = (HEADER + ",\n"
            "00000001_000.png,Cardiomegaly,0,1,058Y,M,PA,2682,2749,0.143,0.143,\n"
            "00000002_000.png,No Finding,0,2,81,F,AP,2500,2048,0.171,0.171,\n"
            "\n")
    first, second = parse_data_entry(text)
    assert first.patient_age == 58 and first.labels[LABELS.index("Cardiomegaly")] == 1
    assert second.findings == () and second.labels == (0,) * len(LABELS)
    assert (second.patient_gender, second.view_position, second.width, second.height) == \
        ("F", "AP", 2500, 2048)


def test_2020_style_bytes_with_bom_and_patient_sex_header() -> None:
    text = (HEADER.replace("Patient Gender", "Patient Sex") + "\r\n"
            "00000003_001.png,Hernia|Infiltration,0,3,74,F,PA,2500,2048,0.168,0.168\r\n")
    (entry,) = parse_data_entry(("\ufeff" + text).encode("utf-8"))
    assert entry.findings == ("Hernia", "Infiltration")
    assert entry.follow_up == 0  # the 2020 revision renumbered follow-ups; the name keeps _001


def test_malformed_rows_are_all_reported_with_line_numbers() -> None:
    text = (HEADER + "\n"
            "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
            "00000001_001.png,Cardiomegaly,1,1,57,M,PA,2682\n"
            "00000001_002.png,Pneumonitis,2,1,57,M,PA,2682,2749,0.143,0.143\n"
            "00000001_003.png,No Finding|Mass,3,1,57,M,PA,2682,2749,0.143,0.143\n"
            "00000001_004.png,Mass,4,1,old,X,LL,2682,2749,0.143,-1\n"
            "00000001_000.png,Mass,5,1,57,M,PA,2682,2749,0.143,0.143\n"
            "00000001_006.png,Mass,6,1,57,M,PA,2682,2749,0.143,0.143,extra\n")
    with pytest.raises(ValueError) as info:
        parse_data_entry(text, source="Data_Entry_2017.csv")
    message = str(info.value)
    assert message.startswith("Data_Entry_2017.csv: 6 malformed line(s)")
    assert "line 3: expected 11 values" in message
    assert "line 4: unknown finding 'Pneumonitis'" in message
    assert "line 5: finding labels 'No Finding|Mass' combine" in message
    assert "line 6: patient age 'old' is neither" in message  # every cause of a row, not just the first
    assert "; patient gender 'X' is not one of M, F; view position 'LL' is not one of PA, AP; " \
        "pixel spacing y -1.0 must be positive" in message
    assert "line 7: image 00000001_000.png already listed on line 2" in message
    assert "line 8: expected 11 values" in message


def test_many_malformed_rows_report_the_first_ten() -> None:
    rows = "".join(f"{i:08d}_000.png,Mass,0,{i},57,M,PA,2682,2749,0.143,zero\n" for i in range(25))
    with pytest.raises(ValueError, match=r"25 malformed line\(s\)") as info:
        parse_data_entry(HEADER + "\n" + rows)
    assert "line 11: pixel spacing y 'zero' is not a number" in str(info.value)
    assert "line 12:" not in str(info.value)
    assert "... and 15 more" in str(info.value)


def test_a_label_table_of_ones_own_needs_only_image_index_and_finding_labels() -> None:
    entries = parse_data_entry("Finding Labels,Image Index,Patient ID,Site\n"
                               "Mass|Nodule,x.png,7,A\nNo Finding,y.png,7,B\n")
    assert [(e.image_index, e.findings, e.patient_id) for e in entries] == [("x.png", ("Mass", "Nodule"), 7),
                                                                            ("y.png", (), 7)]
    assert entries[0].labels[LABELS.index("Mass")] == 1 and sum(entries[1].labels) == 0
    assert ArchiveMetadata(tuple(entries), None, None, ()).patients_known
    # without Patient ID every image is its own patient, and the metadata says so
    alone = parse_data_entry("Image Index,Finding Labels\nx.png,Mass\ny.png,Effusion\n")
    assert len({e.patient_id for e in alone}) == 2
    assert not ArchiveMetadata(tuple(alone), None, None, ()).patients_known
    # bad rows are named by line, as in the NIH file
    with pytest.raises(ValueError, match="line 3: .*finding"):
        parse_data_entry("Image Index,Finding Labels\nx.png,Mass\ny.png,Nodul\n")


def test_a_missing_column_is_named_and_an_empty_file_rejected() -> None:
    with pytest.raises(ValueError, match=r"line 1: no 'Finding Labels' column \(the header has 'Image Index', "
                                         r"'Labels', 'Patient ID'\)"):
        parse_data_entry("Image Index,Labels,Patient ID\nx.png,Mass,1\n")
    with pytest.raises(ValueError, match="empty file"):
        parse_data_entry("")


@pytest.mark.parametrize("value, years", [("58", 58), ("058Y", 58), (" 7 ", 7), ("018M", 1), ("006M", 0),
                                          ("400D", 1), ("104W", 1), ("0", 0)])
def test_parse_age(value: str, years: int) -> None:
    assert parse_age(value) == years


@pytest.mark.parametrize("value", ["", "Y", "-5", "5.5", "058X", "fifty"])
def test_parse_age_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="patient age"):
        parse_age(value)


def test_entries_by_image_rejects_duplicates() -> None:
    (entry,) = parse_data_entry(HEADER + "\n00000001_000.png,Mass,0,1,57,M,PA,2682,2749,0.143,0.143\n")
    assert entries_by_image([entry]) == {"00000001_000.png": entry}
    with pytest.raises(ValueError, match="00000001_000.png appears more than once"):
        entries_by_image([entry, entry])


def test_parse_split_list() -> None:
    text = b"00000001_000.png\n\n00000002_000.png\r\n"
    assert parse_split_list(text) == ["00000001_000.png", "00000002_000.png"]
    with pytest.raises(ValueError) as info:
        parse_split_list("a.png\nb.png c.png\na.png\n", source="test_list.txt")
    assert "test_list.txt: 2 malformed line(s)" in str(info.value)
    assert "line 2: expected one image index" in str(info.value)
    assert "line 3: image a.png already listed on line 1" in str(info.value)


def test_parse_bbox_list_quirks() -> None:
    text = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
            "00013118_008.png,Atelectasis,225.08,547.02,86.78,79.19\n"
            "00000001_000.png,Infiltrate,10,20,30,40,,,\n")
    first, second = parse_bbox_list(text)
    assert first == BBox("00013118_008.png", "Atelectasis", 225.08, 547.02, 86.78, 79.19)
    assert (second.label, second.x, second.h) == ("Infiltration", 10.0, 40.0)
    bad = text + "00000002_000.png,Mass,1,2,0,4\n00000003_000.png,Tumour,1,2,3,4\n00000004_000.png,Mass,1,2\n"
    with pytest.raises(ValueError) as info:
        parse_bbox_list(bad)
    message = str(info.value)
    assert "line 4: w 0.0 must be positive" in message
    assert "line 5: unknown finding label 'Tumour'" in message
    assert "line 6: expected 6 values" in message


def test_patient_split_small_cases() -> None:
    assert split_patients([3, 1, 2, 1], 0.5, seed=0) == split_patients([1, 2, 3], 0.5, seed=0)
    kept, held = split_patients(range(1, 11), 0.3, seed=4)
    assert len(held) == 3 and sorted(kept + held) == list(range(1, 11)) and kept == sorted(kept)
    assert split_patients([1, 2], 0.01, seed=0)[1] != []  # both sides non-empty when possible
    assert split_patients([1, 2], 0.99, seed=0)[0] != []
    assert split_patients([7], 0.5, seed=0) == ([7], [])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_patients([1, 2], 1.0, seed=0)
