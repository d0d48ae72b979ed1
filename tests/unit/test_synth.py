"""xray.synth.images (deterministic synthetic cases, NIH-style metadata) and jobs.synth (the archive writer)."""

from __future__ import annotations

import collections
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.synth import SynthConfig, main, run, shard_plan
from xray.metadata.labels import LABELS
from xray.metadata.nih import entries_by_image, parse_bbox_list, parse_data_entry, parse_split_list
from xray.synth.images import (
    PAINTERS,
    REAL_FILTER_MIX,
    SMALL_FINDINGS,
    _anatomy,
    _background,
    _Grid,
    draw_findings,
    encode_png,
    patient_of,
    synth_case,
)
from xray.synth.nih_files import BBOX_LABELS, render_bbox_csv, render_data_entry_csv, render_split_lists


@pytest.fixture(scope="module")
def cases_128() -> list:
    return [synth_case(i, seed=3, size=128) for i in range(240)]


def test_same_arguments_give_identical_bytes() -> None:
    a, b = synth_case(17, seed=5, size=160), synth_case(17, seed=5, size=160)
    assert a.image.tobytes() == b.image.tobytes()
    assert encode_png(a.image) == encode_png(b.image)
    assert a.record() == b.record()
    assert synth_case(18, seed=5, size=160).image.tobytes() != a.image.tobytes()
    assert synth_case(17, seed=6, size=160).image.tobytes() != a.image.tobytes()


@pytest.mark.parametrize("size", [32, 100, 256, 1024])
def test_image_shape_dtype_and_png_round_trip(size: int) -> None:
    case = synth_case(4, seed=0, size=size)
    assert case.image.shape == (size, size) and case.image.dtype == np.uint8
    assert 20 < case.image.mean() < 200 and case.image.std() > 20  # a picture, not a flat field
    decoded = Image.open(io.BytesIO(encode_png(case.image)))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), case.image)


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="size >= 32"):
        synth_case(0, seed=0, size=16)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))


def test_finding_prevalence_matches_the_design() -> None:
    draws = [draw_findings(np.random.default_rng([0, i])) for i in range(6000)]
    assert 0.37 < sum(1 for d in draws if not d) / len(draws) < 0.43
    counts = collections.Counter(name for d in draws for name in d)
    assert set(counts) == set(LABELS)
    assert all(0.08 < counts[name] / len(draws) < 0.12 for name in LABELS)  # designed: ~0.099 each
    assert sum(1 for d in draws if len(d) >= 2) / len(draws) > 0.35
    assert all(list(d) == sorted(d, key=LABELS.index) for d in draws)


def test_cases_carry_findings_and_boxes(cases_128: list) -> None:
    normal = sum(1 for c in cases_128 if not c.findings) / len(cases_128)
    assert 0.28 < normal < 0.52
    per_label = collections.Counter(name for c in cases_128 for name in c.findings)
    assert all(per_label[name] >= 8 for name in LABELS)
    for case in cases_128:
        assert [b[0] for b in case.bboxes] == list(case.findings)  # one box per finding
        for _, x, y, w, h in case.bboxes:
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 128 and y + h <= 128


def test_small_findings_have_small_boxes(cases_128: list) -> None:
    areas = collections.defaultdict(list)
    for case in cases_128:
        for label, _, _, w, h in case.bboxes:
            areas[label].append(w * h / 128**2)
    for label in SMALL_FINDINGS:
        assert areas[label] and max(areas[label]) < 0.05, label
    assert max(areas["Nodule"]) < 0.005  # ~2.5% of the width across
    assert min(areas["Cardiomegaly"]) > 0.05  # a whole-heart finding, for contrast


def test_finding_scale_shrinks_focal_findings_only() -> None:
    def areas(scale: float) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for i in range(120):
            for label, _, _, w, h in synth_case(i, seed=3, size=128, finding_scale=scale).bboxes:
                out[label] += w * h
        return out

    full, half = areas(1.0), areas(0.5)
    for label in ("Nodule", "Mass", "Consolidation", "Hernia"):
        assert 0.15 < half[label] / full[label] < 0.35, label  # a box of half the side: ~1/4 the area
    assert half["Cardiomegaly"] == full["Cardiomegaly"]  # diffuse findings keep their size
    same = synth_case(7, seed=3, size=128, finding_scale=1.0)
    assert same.image.tobytes() == synth_case(7, seed=3, size=128).image.tobytes()
    with pytest.raises(ValueError, match="finding_scale"):
        synth_case(0, seed=0, size=64, finding_scale=0.0)


@pytest.mark.parametrize("label", LABELS)
def test_each_finding_is_visible_inside_its_box(label: str) -> None:
    # Uses the private background on purpose: before/after one painter isolates that finding's pixels.
    r = 128
    centres = (np.arange(r, dtype=np.float32) + 0.5) / r
    grid = _Grid(y=centres[:, None], x=centres[None, :], r=r)
    for k in range(6):
        anatomy = _anatomy(np.random.default_rng([k, 1]))
        before = _background(grid, anatomy, np.random.default_rng([k, 2]), "PA")
        after = before.copy()
        x0, y0, x1, y1 = PAINTERS[label](after, grid, anatomy, np.random.default_rng([k, 3]))
        change = np.abs(after - before)
        inside = (grid.y >= y0) & (grid.y <= y1) & (grid.x >= x0) & (grid.x <= x1)
        assert change[inside].max() > 0.1, f"{label}: too faint to learn"
        assert change[inside].sum() > 0.95 * change.sum(), f"{label}: paints outside its box"


def test_patients_own_consecutive_images() -> None:
    pairs = [patient_of(i, seed=9) for i in range(120)]
    assert len({p for p, _ in pairs}) == 40  # 4 patients per block of 12 images
    by_patient = collections.defaultdict(list)
    for patient, follow_up in pairs:
        by_patient[patient].append(follow_up)
    assert all(f == list(range(len(f))) for f in by_patient.values())
    assert max(len(f) for f in by_patient.values()) > 1
    case = synth_case(5, seed=9, size=64)
    assert case.image_index == f"{case.patient_id:08d}_{case.follow_up:03d}.png"


@pytest.mark.parametrize("style", ["2017", "2020"])
def test_data_entry_csv_round_trips_through_the_parser(cases_128: list, style: str) -> None:
    text = render_data_entry_csv(cases_128, style)
    assert text.splitlines()[0].endswith("OriginalImagePixelSpacing[x,y]" + ("," if style == "2017" else ""))
    assert all(line.endswith(",") == (style == "2017") for line in text.splitlines())
    entries = parse_data_entry(text)
    assert len(entries) == len(cases_128)
    for case, entry in zip(cases_128, entries, strict=True):
        assert entry.image_index == case.image_index and entry.findings == case.findings
        assert entry.labels == tuple(int(name in case.findings) for name in LABELS)
        assert (entry.patient_id, entry.follow_up) == (case.patient_id, case.follow_up)
        assert (entry.patient_age, entry.patient_gender) == (case.age, case.gender)
        assert entry.view_position == case.view
        assert (entry.width, entry.spacing_x) == (128, case.spacing)


def test_bbox_csv_round_trips_for_the_annotated_labels(cases_128: list) -> None:
    text = render_bbox_csv(cases_128)
    assert text.startswith("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    assert ",Infiltrate," in text and ",Infiltration," not in text  # the real file's spelling
    boxes = parse_bbox_list(text)
    expected = sorted((c.image_index, *b) for c in cases_128 for b in c.bboxes if b[0] in BBOX_LABELS)
    assert sorted((b.image_index, b.label, b.x, b.y, b.w, b.h) for b in boxes) == expected
    assert {b.label for b in boxes} == set(BBOX_LABELS)


def test_split_lists_are_disjoint_by_patient(cases_128: list) -> None:
    train_text, test_text = render_split_lists(cases_128, test_fraction=0.25, seed=1)
    train, test = parse_split_list(train_text), parse_split_list(test_text)
    assert sorted(train + test) == sorted(c.image_index for c in cases_128)
    patient = {c.image_index: c.patient_id for c in cases_128}
    assert not {patient[i] for i in train} & {patient[i] for i in test}
    assert len({patient[i] for i in test}) == round(0.25 * len(set(patient.values())))
    assert train == sorted(train)


def test_shard_plan_is_contiguous() -> None:
    plan = shard_plan(10, 3)
    assert [name for name, _ in plan] == ["images_001.tar.gz", "images_002.tar.gz", "images_003.tar.gz"]
    assert [i for _, r in plan for i in r] == list(range(10))


def test_job_writes_a_deterministic_archive(tmp_path: Path) -> None:
    cfg = SynthConfig(out=str(tmp_path / "a"), n_images=36, size=64, shards=3, seed=2, csv_style="2020")
    summary = run(cfg)
    assert (summary.n_images, len(summary.shards), summary.n_train_val + summary.n_test) == (36, 3, 36)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["BBox_List_2017.csv", "Data_Entry_2017.csv", "images_001.tar.gz", "images_002.tar.gz",
                     "images_003.tar.gz", "test_list.txt", "tilescope_synth.json", "train_val_list.txt"]
    marker = json.loads((tmp_path / "a" / "tilescope_synth.json").read_text())
    assert marker["synthetic"] is True and marker["patient_data"] is False and marker["config"]["seed"] == cfg.seed
    entries = parse_data_entry((tmp_path / "a" / "Data_Entry_2017.csv").read_bytes())
    assert summary.n_patients == len({e.patient_id for e in entries}) == 12  # 4 per 12 images
    by_image = entries_by_image(entries)
    members = []
    for shard in ("images_001.tar.gz", "images_002.tar.gz", "images_003.tar.gz"):
        with tarfile.open(tmp_path / "a" / shard, "r:gz") as tar:
            for info in tar.getmembers():
                assert info.isfile() and info.mtime == 0 and info.uid == 0 and info.uname == ""
                members.append(info.name)
                pixels = np.asarray(Image.open(io.BytesIO(tar.extractfile(info).read())))
                assert pixels.shape == (64, 64) and by_image[info.name.removeprefix("images/")]
    assert members == [f"images/{e.image_index}" for e in entries]
    run(SynthConfig(out=str(tmp_path / "b"), n_images=36, size=64, shards=3, seed=2, csv_style="2020"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_job_refuses_stale_shards_of_a_larger_run(tmp_path: Path) -> None:
    run(SynthConfig(out=str(tmp_path), n_images=6, size=32, shards=3))
    with pytest.raises(ValueError, match="images_003.tar.gz from an earlier run"):
        run(SynthConfig(out=str(tmp_path), n_images=6, size=32, shards=2, force=True))


def test_job_overwrites_nothing_without_force(tmp_path: Path) -> None:
    # a folder of "real" shards and metadata: synth must not replace them
    (tmp_path / "images_001.tar.gz").write_bytes(b"real shard")
    (tmp_path / "Data_Entry_2017.csv").write_bytes(b"real metadata")
    with pytest.raises(ValueError, match=r"is not empty \(2 files, .*pass --force"):
        run(SynthConfig(out=str(tmp_path), n_images=6, size=32, shards=1))
    assert (tmp_path / "images_001.tar.gz").read_bytes() == b"real shard"
    assert (tmp_path / "Data_Entry_2017.csv").read_bytes() == b"real metadata"
    assert main(["--out", str(tmp_path), "--n-images", "6", "--size", "32", "--shards", "1"]) == 2
    summary = run(SynthConfig(out=str(tmp_path), n_images=6, size=32, shards=1, force=True))
    assert summary.n_images == 6 and (tmp_path / "images_001.tar.gz").read_bytes() != b"real shard"


def test_job_validation_names_every_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError) as info:
        run(SynthConfig(out="", n_images=0, size=8, shards=0, seed=-1, test_fraction=1.5, csv_style="2019"))
    for flag in ("--out", "--n-images", "--size", "--shards", "--seed", "--test-fraction", "--csv-style"):
        assert flag in str(info.value)
    with pytest.raises(ValueError, match="--shards 1: ~2.7 GiB per shard .* use --shards 3"):
        run(SynthConfig(out="x", n_images=4000, size=1024, shards=1))
    assert main(["--out", "x", "--shards", "5", "--n-images", "3"]) == 2
    assert "--shards 5 exceeds --n-images 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0


def test_main_prints_a_one_line_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--n-images", "12", "--size", "48", "--shards", "1"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("synth: 12 images of 4 patients") and "\n" not in out


# ---- PNGs that decode like NIH's (issue 16) -----------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "nih-sample"
FILTERS = ("None", "Sub", "Up", "Average", "Paeth")


def png_profile(data: bytes) -> collections.Counter:
    """Row filter types of an 8-bit grey PNG, by name; and its IDAT chunk sizes under 'idat:<n>'."""
    import struct
    import zlib

    pos, idat, sizes, height = 8, [], collections.Counter(), 0
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IHDR":
            height = struct.unpack_from(">I", data, pos + 12)[0]
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
            sizes[f"idat:{length}"] += 1
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = len(raw) // height
    return collections.Counter(FILTERS[raw[r * stride]] for r in range(height)) + sizes


def shares(profile: collections.Counter) -> dict[str, float]:
    rows = sum(profile[f] for f in FILTERS)
    return {f: profile[f] / rows for f in FILTERS}


def test_synthetic_pngs_have_the_real_filter_mix_and_size() -> None:
    blobs = [encode_png(synth_case(i, seed=1, size=1024).image) for i in range(3)]
    mean_kb = sum(map(len, blobs)) / len(blobs) / 1000
    assert 340 <= mean_kb <= 480, mean_kb  # NIH's 8-bit PNGs: ~410 KB (was ~620 KB before issue 16)
    profile = sum((png_profile(b) for b in blobs), collections.Counter())
    got = shares(profile)
    real_total = sum(REAL_FILTER_MIX)
    for name, count in zip(FILTERS, REAL_FILTER_MIX, strict=True):
        assert abs(got[name] - count / real_total) < 0.05, (name, got)
    assert got["Average"] + got["Paeth"] > 0.85  # the one-byte-at-a-time filters dominate, as in real files
    assert profile["idat:8192"] >= 3 * 40  # 8 KiB IDAT chunks, as NIH's
    for blob, i in zip(blobs, range(3), strict=True):  # still exactly the image
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blob))), synth_case(i, 1, 1024).image)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/nih-sample (real NIH PNGs) is not present")
def test_real_sample_filter_mix_is_the_one_synth_copies() -> None:
    grey = [p.read_bytes() for p in sorted(SAMPLE.glob("*.png"))]
    grey = [b for b in grey if b[25] == 0]  # colour type 0: the 8-bit grey ones
    profile = sum((png_profile(b) for b in grey), collections.Counter())
    assert tuple(profile[f] for f in FILTERS) == REAL_FILTER_MIX
    real_kb = sum(map(len, grey)) / len(grey) / 1000
    synth_kb = sum(len(encode_png(synth_case(i, seed=1, size=1024).image)) for i in range(2)) / 2000
    assert abs(synth_kb / real_kb - 1) < 0.15, (synth_kb, real_kb)
