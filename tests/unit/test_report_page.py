"""The pure parts of `tilescope report`: ground-truth join, SVG plots, the HTML page, heatmap overlays, the CLI."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jobs.cli import field_docs
from jobs.report import ReportConfig, merge_repeated, validate
from xray.evaluation import class_histogram, roc_curve
from xray.ground_truth import Split, join_ground_truth
from xray.labels import LABELS
from xray.metadata import DATA_ENTRY_HEADER, parse_data_entry
from xray.report_html import Overlay, ReportPage, TableView, render_page
from xray.report_plots import ROC_COLOUR, auroc_chart_svg, heatmap_overlay_png, histogram_svg, roc_svg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSV = ",".join(DATA_ENTRY_HEADER) + """,
00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,1024,1024,0.143,0.143,
00000002_000.png,No Finding,0,2,60,F,AP,1024,1024,0.143,0.143,
00000003_000.png,Hernia,0,3,70,F,PA,1024,1024,0.143,0.143,
"""


def test_join_ground_truth_orders_columns_and_marks_splits():
    entries = parse_data_entry(CSV)
    ids = ["00000003_000.png", "00000001_000.png", "unlisted.png", "00000002_000.png"]
    truth = join_ground_truth(ids, entries, ("Effusion", "Hernia", "Cardiomegaly"),
                              train_val=["00000001_000.png", "00000002_000.png"], test=["00000003_000.png"])
    assert truth.labels.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert truth.known.tolist() == [True, True, False, True]
    assert truth.findings.tolist() == ["Hernia", "Cardiomegaly|Effusion", "", "No Finding"]
    assert truth.split.tolist() == ["test", "train_val", "", "train_val"]
    assert truth.mask(Split.ALL).tolist() == [True, True, False, True]
    assert truth.mask(Split.TEST).tolist() == [True, False, False, False]
    assert truth.mask(Split.TRAIN_VAL).tolist() == [False, True, False, True]
    no_lists = join_ground_truth(ids, entries, LABELS, None, None)
    assert not no_lists.mask(Split.TEST).any() and no_lists.labels.shape == (4, 14)
    with pytest.raises(ValueError, match="Pneumonitis"):
        join_ground_truth(ids, entries, ("Pneumonitis",), None, None)


def sample_page(image_id: str = "00000001_000.png") -> ReportPage:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) * 0.5 + 0.4 * y
    fpr, tpr = roc_curve(y, s)
    h = class_histogram(y, s)
    table = TableView(("image_id", "top_prob"), [(image_id, 0.93), ("b.png", float("nan"))], frozenset({"image_id"}))
    png = heatmap_overlay_png(np.full((64, 64), 128, np.uint8), np.eye(4, dtype=np.float32))
    return ReportPage(
        title="tilescope report: test", facts=[("Run", "s3://b/scores/x")],
        auroc_chart=auroc_chart_svg(["Effusion"], np.array([0.8]), np.array([0.7]), np.array([0.9])),
        auroc=table, roc_plots=[roc_svg("Effusion", fpr, tpr, 0.8, 0.7, 0.9, baseline=(fpr, tpr))],
        histograms=[histogram_svg("Effusion", h.edges, h.positives, h.negatives, 0.5)],
        thresholds=table, thresholds_caption="fit on train_val", screening=table, screening_caption="top",
        errors=TableView(("reason", "rows"), []), overlays=[Overlay(image_id, "Effusion", 0.93, png)])


def test_page_is_self_contained_and_holds_the_plots():
    html = render_page(sample_page())
    assert html.startswith("<!DOCTYPE html>")
    for tag in ("<script", "<link", "<iframe", "@import", "url("):
        assert tag not in html
    # The only URLs are SVG namespace names (identifiers, never fetched) and inline data.
    assert set(re.findall(r"https?://[^\s\"')]+", html)) == {"http://www.w3.org/2000/svg"}
    assert re.findall(r'src="([^"]{0,22})', html) == ["data:image/png;base64,"]
    assert html.count('<svg class="roc"') == 1 and 'class="roc-curve"' in html and 'class="roc-baseline"' in html
    assert html.count('<svg class="histogram"') == 1 and 'class="threshold"' in html
    assert '<svg class="auroc-chart"' in html and f'stroke="{ROC_COLOUR}"' in html
    assert "No error rows." in html
    assert "\u2013" in html  # NaN shows as a dash, not "nan"


def test_page_escapes_values_from_the_data():
    html = render_page(sample_page(image_id='<script>alert("x")</script>.png'))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.png" in html


def test_roc_svg_points_lie_in_the_plot_box():
    svg = roc_svg("Mass", np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.9, 1.0]), 0.7, 0.6, 0.8, size=240)
    points = re.search(r'class="roc-curve" points="([^"]+)"', svg).group(1).split()
    xy = np.array([[float(v) for v in p.split(",")] for p in points])
    assert xy[0].tolist() == [40.0, 196.0]  # (0, 0): bottom left of the box
    assert xy[-1].tolist() == [230.0, 22.0]  # (1, 1): top right
    assert "AUROC 0.700 [0.600, 0.800]" in svg
    empty = roc_svg("Hernia", np.empty(0), np.empty(0), float("nan"), float("nan"), float("nan"))
    assert "roc-curve" not in empty and "one class only" in empty


def test_heatmap_overlay_is_an_image_of_the_requested_size_hot_where_the_map_is():
    gray = np.full((100, 200), 100, np.uint8)
    heat = np.zeros((2, 4), np.float32)
    heat[0, 0] = 0.9  # top-left cell hot
    img = Image.open(io.BytesIO(heatmap_overlay_png(gray, heat, size=128)))
    assert img.size == (128, 64) and img.mode == "RGB"
    px = np.asarray(img).astype(int)
    hot, cold = px[5, 5], px[-5, -5]
    # The peak cell is red at 55% opacity over grey 100: (0.45 * 100 + 0.55 * 255, 0.45 * 100, 0.45 * 100).
    assert np.abs(hot - [185, 45, 45]).max() <= 3
    assert cold.tolist() == [100, 100, 100]  # the image, untouched


def test_report_config_fields_are_documented_and_help_lists_them():
    docs = field_docs(ReportConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(ReportConfig)} and all(docs.values())
    proc = subprocess.run([sys.executable, "-m", "jobs.report", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    for f in dataclasses.fields(ReportConfig):
        assert "--" + f.name.replace("_", "-") in proc.stdout
        assert " ".join(docs[f.name].split()) in flat


def test_repeated_results_flags_are_merged():
    assert merge_repeated(["--results", "a", "--out", "o", "--results", "b"], "--results") == \
        ["--out", "o", "--results", "a", "b"]
    assert merge_repeated(["--results=a", "--results", "b", "c"], "--results") == ["--results", "a", "b", "c"]
    assert merge_repeated(["--out", "o"], "--results") == ["--out", "o"]


def test_validate_names_every_bad_flag():
    with pytest.raises(ValueError) as info:
        validate(ReportConfig(results=("a", "b", "c"), metadata="m", out="o", eval_split="val", fit_split="x",
                              target_sensitivity=1.5, bootstrap=-1, ci_level=1.0, top=0))
    msg = str(info.value)
    for flag in ("--results", "--eval-split 'val'", "--fit-split 'x'", "--target-sensitivity", "--bootstrap",
                 "--ci-level", "--top"):
        assert flag in msg
    assert msg.count("\n  - ") == 7
    validate(ReportConfig(results=("a",), metadata="m", out="o"))


def test_auroc_chart_axis_starts_at_chance_or_below_the_lowest_value():
    good = auroc_chart_svg(["A", "B"], np.array([0.7, 0.9]), np.array([0.6, 0.85]), np.array([0.8, 0.95]))
    assert re.findall(r">(\d\.\d)</text>", good) == ["0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]
    poor = auroc_chart_svg(["A", "B"], np.array([0.35, 0.9]), np.array([0.21, 0.85]), np.array([0.5, 0.95]),
                           baseline=np.array([0.4, float("nan")]))
    assert re.findall(r">(\d\.\d)</text>", poor)[0] == "0.2"
    # Box from x=150 to x=544: 0.35 on a 0.2..1 axis sits at 150 + 394 * 0.15 / 0.8.
    cx = [float(v) for v in re.findall(r'class="auroc-point" cx="([\d.]+)"', poor)]
    assert cx == [pytest.approx(150 + 394 * 0.15 / 0.8, abs=0.05), pytest.approx(150 + 394 * 0.7 / 0.8, abs=0.05)]
    assert poor.count('class="auroc-baseline"') == 1
