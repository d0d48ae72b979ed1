"""Ground-truth tables and label maps (xray.metadata.expert_labels, xray.metadata.label_maps): pure parsing."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from xray.metadata.expert_labels import (
    GOOGLE_2019_LABELS,
    GOOGLE_2019_MAP,
    HEDGED,
    MISSING,
    parse_expert_table,
    read_value,
)
from xray.metadata.label_maps import label_map_from_mapping, parse_label_map
from xray.metadata.labels import LABELS


def google_columns(ids, **labels) -> dict:
    n = len(ids)
    cols = {"Image Index": list(ids), "Finding Labels": ["No Finding"] * n, "Patient ID": ["1"] * n}
    for name in GOOGLE_2019_LABELS:
        cols[name] = labels.get(name.replace(" ", "_"), ["NO"] * n)
    cols["Set Id"] = ["test"] * n
    return cols


def test_the_google_format_is_recognised_with_its_four_labels_and_set_id():
    cols = google_columns(["a.png", "b.png", "c.png"], Nodule_or_mass=["YES", "NO", "HEDGED"],
                          Fracture=["", "NO", "YES"])
    table = parse_expert_table(cols, "s3://b/google2019.csv.gz")
    assert table.google_2019 and table.labels == GOOGLE_2019_LABELS and table.name == "Google 2019 expert labels"
    assert table.values[:, 3].tolist() == [1, 0, HEDGED] and table.values[:, 0].tolist() == [MISSING, 0, 1]
    assert table.set_id.tolist() == ["test"] * 3 and "Majkowska" in table.citation
    assert table.default_map() is GOOGLE_2019_MAP


def test_reads_accept_yes_no_and_numbers_and_refuse_anything_else():
    assert [read_value(v) for v in ("YES", " no ", "1", "0.0", "True", "uncertain", "-1", "", None, "NaN")] == [
        1, 0, 1, 0, 1, HEDGED, HEDGED, MISSING, MISSING, MISSING]
    with pytest.raises(ValueError):
        read_value("probably")
    cols = {"image_id": ["x/a.png", "b.png"], "Effusion": ["1", "maybe so"]}
    with pytest.raises(ValueError, match=r"column 'Effusion', line 3 \(b.png\): 'maybe so' is not a read"):
        parse_expert_table(cols, "t.csv")


def test_duplicates_missing_ids_and_missing_columns_are_refused_by_name():
    with pytest.raises(ValueError, match=r"2 image ids appear more than once, e.g. a.png \(2 rows\), b.png \(3 rows\)"):
        parse_expert_table({"image_id": ["a.png", "a.png", "b.png", "b.png", "b.png"], "Mass": ["1"] * 5}, "t.csv")
    with pytest.raises(ValueError, match="no image id column"):
        parse_expert_table({"id": ["a.png"], "Mass": ["1"]}, "t.csv")
    with pytest.raises(ValueError, match="1 rows have no image id"):
        parse_expert_table({"image_id": ["a.png", ""], "Mass": ["1", "0"]}, "t.csv")
    with pytest.raises(ValueError, match="no label columns: name them with --label-map"):
        parse_expert_table({"image_id": ["a.png"], "Lesion": ["1"]}, "t.csv")
    with pytest.raises(ValueError, match="names 'Opacity', which the table has no column for"):
        parse_expert_table({"image_id": ["a.png"], "Lesion": ["1"]}, "t.csv", parse_label_map("Opacity: Edema", "m"))


def test_a_path_in_the_id_column_counts_by_its_file_name_and_plain_label_columns_map_to_themselves():
    table = parse_expert_table({"image_id": ["images/a.png", "C:\\x\\b.png"], "Mass": ["1", "0"],
                                "Reader": ["r1", "r2"]}, "t.csv")
    assert table.image_id.tolist() == ["a.png", "b.png"] and table.labels == ("Mass",)
    assert table.default_map().describe() == "Mass: Mass"


def test_label_maps_inline_and_yaml():
    m = parse_label_map("Nodule or mass: max(Nodule, Mass); Opacity: Edema, Pneumonia\nPtx: Pneumothorax", "inline")
    assert m.names == ("Nodule or mass", "Opacity", "Ptx")
    assert [e.combiner for e in m.entries] == ["max", "max", "max"]
    assert m.describe() == "Nodule or mass: max(Nodule, Mass); Opacity: max(Edema, Pneumonia); Ptx: Pneumothorax"
    y = label_map_from_mapping(yaml.safe_load("Lesion: mean(Nodule, Mass)\nFluid: [Effusion, Edema]\n"), "f.yaml")
    assert [(e.name, e.outputs, e.combiner) for e in y.entries] == [
        ("Lesion", ("Nodule", "Mass"), "mean"), ("Fluid", ("Effusion", "Edema"), "max")]
    assert y.missing_outputs(("Nodule", "Mass", "Effusion")) == ["Fluid: Edema"]
    kept, dropped = y.restricted_to(("Nodule", "Mass"))
    assert kept.names == ("Lesion",) and dropped == ("Fluid",)
    for bad, match in (("Lesion", "is not `Expert label: outputs`"), ("A: median(Mass)", "the combiners are"),
                       ("A: Mass; A: Nodule", "A mapped more than once"), ("A: Mass, Mass", "names an output twice"),
                       ("A: ", "maps to no output"), ("", "the label map is empty")):
        with pytest.raises(ValueError, match=match):
            parse_label_map(bad, "inline")


def test_a_map_combines_probabilities_with_its_combiner_and_labels_with_any():
    m = parse_label_map("Lesion: mean(Nodule, Mass); Any: max(Nodule, Mass)", "inline")
    probs = np.zeros((2, len(LABELS)), np.float32)
    probs[:, LABELS.index("Nodule")] = [0.2, 0.9]
    probs[:, LABELS.index("Mass")] = [0.6, 0.1]
    np.testing.assert_allclose(m.scores(probs, LABELS), [[0.4, 0.6], [0.5, 0.9]], atol=1e-7)
    y = np.zeros((3, len(LABELS)), np.int8)
    y[0, LABELS.index("Mass")] = 1
    y[1, LABELS.index("Nodule")] = y[1, LABELS.index("Mass")] = 1
    assert m.labels(y, LABELS).tolist() == [[1, 1], [1, 1], [0, 0]]
