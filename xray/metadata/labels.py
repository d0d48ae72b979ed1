"""The 14 ChestX-ray14 findings in CheXNet order, and the Parquet column names derived from them."""

from __future__ import annotations

LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"


def prob_column(label: str) -> str:
    """Parquet column holding the probability of one label, e.g. prob_Pleural_Thickening."""
    return f"prob_{label}"


def parse_findings(text: str, labels: tuple[str, ...] = LABELS) -> list[int]:
    """'Effusion|Mass' -> multi-hot list over labels; 'No Finding' -> all zeros.

    Raises ValueError naming an unknown finding.
    """
    text = text.strip()
    hot = [0] * len(labels)
    if text == NO_FINDING or not text:
        return hot
    for name in text.split("|"):
        name = name.strip()
        if name not in labels:
            raise ValueError(f"unknown finding {name!r} (known: {', '.join(labels)}, {NO_FINDING!r})")
        hot[labels.index(name)] = 1
    return hot
