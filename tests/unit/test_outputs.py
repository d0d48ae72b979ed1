"""xray.models.outputs: a foreign model's outputs mapped to CheXNet column order; labels it lacks get no column."""

from __future__ import annotations

import pytest

from xray.metadata.labels import LABELS
from xray.models.outputs import canonical_label, output_map


def test_default_is_the_14_in_chexnet_order():
    m = output_map((), len(LABELS))
    assert m.labels == LABELS and m.rows == tuple(range(14)) and m.identity and m.dropped == ()


def test_any_order_and_a_subset_map_to_chexnet_order():
    names = ("Hernia", "-", "Mass", "pleural effusion", "-", "Atelectasis",
             "cardiomegaly", "Pleural Thickening")
    m = output_map(names, len(names))
    assert m.labels == ("Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Pleural_Thickening", "Hernia")
    assert m.rows == (5, 6, 3, 2, 7, 0)  # model output holding each label, in that order
    assert m.dropped == (1, 4) and not m.identity
    assert m.to_json() == {"model_outputs": 8, "rows": [5, 6, 3, 2, 7, 0], "labels": list(m.labels), "dropped": [1, 4]}


def test_comma_separated_names_count_one_per_output():
    assert output_map(("Mass,Nodule", "Edema"), 3).labels == ("Mass", "Nodule", "Edema")


@pytest.mark.parametrize(("names", "n", "message"), [
    ((), 18, "the model has 18 outputs and no --labels given"),
    (("Mass", "Nodule"), 3, "the model has 3 outputs and --labels names 2"),
    (("Mass", "mass"), 2, "Mass named for more than one output"),
    (("-", "-"), 2, "every output is '-'"),
    (("Mass", "Lung Opacity"), 2, "'Lung Opacity' is not a ChestX-ray14 label"),
])
def test_bad_label_lists_name_the_problem(names, n, message):
    with pytest.raises(ValueError, match="--labels") as info:
        output_map(names, n)
    assert message in str(info.value)


def test_canonical_spellings():
    assert canonical_label(" pleural_thickening ") == "Pleural_Thickening"
    assert canonical_label("INFILTRATE") == "Infiltration"
    assert canonical_label("-") is None
