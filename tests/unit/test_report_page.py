"""The pure parts of `tilescope report`: ground-truth join and model splits, the fit-split refusal, SVG plots, the
HTML page, heatmap overlays with boxes, the CLI."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli.flags import field_docs, merge_repeated
from jobs.report import ReportConfig, validate
from jobs.report_stages import KnownSplit, ScoredImages, fit_split_problem
from xray.evaluation.intervals import class_histogram, roc_curve
from xray.metadata.ground_truth import join_ground_truth
from xray.metadata.labels import LABELS
from xray.metadata.nih import DATA_ENTRY_HEADER, parse_data_entry
from xray.metadata.splits import ModelSplit, Split
from xray.report.html import Overlay, ReportPage, TableView, format_probability, render_page
from xray.report.overlays import (
    HEAT_OPACITY,
    VIRIDIS,
    colormap,
    colour_bar_svg,
    heatmap_overlay_png,
    overlay_svg,
)
from xray.report.plots import (
    Estimates,
    auroc_chart_svg,
    format_interval,
    histogram_svg,
    roc_svg,
)
from xray.report.svg import BOX_COLOUR, ROC_COLOUR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSV = ",".join(DATA_ENTRY_HEADER) + """,
00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,1024,1024,0.143,0.143,
00000002_000.png,No Finding,0,2,60,F,AP,1024,1024,0.143,0.143,
00000003_000.png,Hernia,0,3,70,F,PA,1024,1024,0.143,0.143,
00000004_000.png,No Finding,0,4,70,F,PA,1024,1024,0.143,0.143,
"""
IDS = ["00000003_000.png", "00000001_000.png", "unlisted.png", "00000002_000.png", "00000004_000.png"]


def test_join_ground_truth_orders_columns_and_marks_splits():
    entries = parse_data_entry(CSV)
    truth = join_ground_truth(IDS, entries, ("Effusion", "Hernia", "Cardiomegaly"),
                              train_val=["00000001_000.png", "00000002_000.png", "00000004_000.png"],
                              test=["00000003_000.png"])
    assert truth.labels.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert truth.known.tolist() == [True, True, False, True, True]
    assert truth.findings.tolist() == ["Hernia", "Cardiomegaly|Effusion", "", "No Finding", "No Finding"]
    assert truth.split.tolist() == ["test", "train_val", "", "train_val", "train_val"]
    assert truth.mask(Split.ALL).tolist() == [True, True, False, True, True]
    assert truth.mask(Split.TEST).tolist() == [True, False, False, False, False]
    assert truth.mask(Split.TRAIN_VAL).tolist() == [False, True, False, True, True]
    # No model split known: all of train_val counts as trained on, nothing as held out.
    assert truth.mask(Split.TRAIN).tolist() == truth.mask(Split.TRAIN_VAL).tolist()
    assert not truth.mask(Split.VAL).any()
    no_lists = join_ground_truth(IDS, entries, LABELS, None, None)
    assert not no_lists.mask(Split.TEST).any() and no_lists.labels.shape == (5, 14)
    with pytest.raises(ValueError, match="Pneumonitis"):
        join_ground_truth(IDS, entries, ("Pneumonitis",), None, None)


def test_model_split_marks_held_out_and_trained_images_and_stands_in_for_missing_lists():
    entries = parse_data_entry(CSV)
    split = ModelSplit(frozenset({"00000001_000.png"}), frozenset({"00000002_000.png", "00000004_000.png"}),
                       "artifact x", frozenset({"00000003_000.png"}))
    truth = join_ground_truth(IDS, entries, LABELS, ["00000001_000.png", "00000002_000.png", "00000004_000.png"],
                              ["00000003_000.png"], split)
    assert truth.mask(Split.VAL).tolist() == [False, False, False, True, True]
    assert truth.mask(Split.TRAIN).tolist() == [False, True, False, False, False]
    assert truth.role().tolist() == ["test", "train", "", "val", "val"]
    # Without NIH's lists, the model's own split places test and train_val.
    bare = join_ground_truth(IDS, entries, LABELS, None, None, split)
    assert bare.mask(Split.TEST).tolist() == [True, False, False, False, False]
    assert bare.mask(Split.TRAIN_VAL).tolist() == [False, True, False, True, True]
    # Only the held-out list known (--val-list): the rest of train_val is taken as trained on.
    listed = join_ground_truth(IDS, entries, LABELS, ["00000001_000.png", "00000002_000.png", "00000004_000.png"],
                               ["00000003_000.png"], ModelSplit(None, frozenset({"00000004_000.png"}), "--val-list"))
    assert listed.mask(Split.TRAIN).tolist() == [False, True, False, True, False]
    assert listed.mask(Split.VAL).tolist() == [False, False, False, False, True]


def scored(split: ModelSplit | None) -> ScoredImages:
    truth = join_ground_truth(IDS, parse_data_entry(CSV), LABELS,
                              ["00000001_000.png", "00000002_000.png", "00000004_000.png"], ["00000003_000.png"], split)
    return ScoredImages("run", LABELS, np.array(IDS), np.array(IDS, dtype=object),
                        np.full((5, 14), 0.5, np.float32), None, truth, 0)


def test_fit_split_on_training_images_or_unknown_patients_is_refused_naming_the_flags():
    split = ModelSplit(frozenset({"00000001_000.png"}), frozenset({"00000002_000.png", "00000004_000.png"}),
                       "artifact s3://b/m (dwsep_cnn): patient split val_fraction 0.15, seed 0")
    images = scored(split)
    known = KnownSplit(split)
    assert fit_split_problem(images, known, Split.VAL, False) == ""
    assert fit_split_problem(images, known, Split.TEST, False) == ""
    problem = fit_split_problem(images, known, Split.TRAIN_VAL, False)
    assert "--fit-split train_val: 1 of its 3 images are ones the model trained on (artifact s3://b/m" in problem
    assert "--fit-split val" in problem and "--allow-fit-on-train" in problem
    assert "2 of its 4 images" not in problem and fit_split_problem(images, known, Split.ALL, False)
    assert fit_split_problem(images, known, Split.TRAIN_VAL, True) == ""
    # Predictions from elsewhere: no held-out patients known, and train_val is assumed trained on.
    unknown = KnownSplit(None, "predictions from elsewhere carry no model artifact that records its patient split")
    none = scored(None)
    problem = fit_split_problem(none, unknown, Split.VAL, False)
    assert "predictions from elsewhere carry no model artifact" in problem and "--val-list FILE" in problem
    assert "NIH's train_val_list.txt" in fit_split_problem(none, unknown, Split.TRAIN_VAL, False)


def sample_page(image_id: str = "00000001_000.png") -> ReportPage:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) * 0.5 + 0.4 * y
    fpr, tpr = roc_curve(y, s)
    h = class_histogram(y, s)
    table = TableView(("image_id", "top_prob"), [(image_id, 0.93), ("b.png", float("nan"))], frozenset({"image_id"}))
    png, w, hh = heatmap_overlay_png(np.full((64, 64), 128, np.uint8), np.eye(4, dtype=np.float32))
    chart = auroc_chart_svg(["Effusion", "Mean (1 labels)"], Estimates.of([0.8, 0.8], [0.7, 0.7], [0.9, 0.9]),
                            summary_rows=1)
    return ReportPage(
        title="tilescope report: test", facts=[("Run", "s3://b/scores/x")], auroc_chart=chart, auroc=table,
        auroc_caption="points", roc_plots=[roc_svg("Effusion", fpr, tpr, 0.8, 0.7, 0.9, baseline=(fpr, tpr))],
        roc_caption="blue", histograms=[histogram_svg("Effusion", h.edges, h.positives, h.negatives, 0.5)],
        thresholds=table, thresholds_caption="fit on val", screening=table, screening_caption="top",
        errors=TableView(("reason", "rows"), []),
        overlays=[Overlay(image_id, "Effusion", 0.93, 0.41, "Effusion", png, w, hh,
                          (("Effusion", 3.0, 4.0, 20.0, 10.0),))],
        colour_bar=colour_bar_svg("heatmap"))


def test_page_is_self_contained_and_holds_the_plots():
    html = render_page(sample_page())
    assert html.startswith("<!DOCTYPE html>")
    for tag in ("<script", "<link", "<iframe", "@import", "url(http", "<img"):
        assert tag not in html
    # The only URLs are SVG namespace names (identifiers, never fetched) and inline data.
    assert set(re.findall(r"https?://[^\s\"')]+", html)) == {"http://www.w3.org/2000/svg"}
    assert re.findall(r'href="([^"]{0,22})', html) == ["data:image/png;base64,"]
    assert html.count('<svg class="roc"') == 1 and 'class="roc-curve"' in html and 'class="roc-baseline"' in html
    assert html.count('<svg class="histogram"') == 1 and 'class="threshold"' in html
    assert '<svg class="auroc-chart"' in html and f'fill="{ROC_COLOUR}"' in html
    assert html.count('<svg class="colour-bar"') == 1 and html.count('class="gt-box"') == 1
    assert "Effusion 0.930 (threshold 0.410)" in html and "truth: Effusion; boxes: Effusion" in html
    assert "No error rows." in html
    assert "\u2013" in html  # NaN shows as a dash, not "nan"


def test_page_escapes_values_from_the_data():
    html = render_page(sample_page(image_id='<script>alert("x")</script>.png'))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.png" in html


def test_roc_svg_points_lie_in_the_plot_box_and_the_legend_names_both_runs():
    svg = roc_svg("Mass", np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.9, 1.0]), 0.7, 0.6, 0.8, size=240,
                  baseline=(np.array([0.0, 1.0]), np.array([0.0, 1.0])), baseline_auroc=0.5,
                  operating_point=(0.5, 0.9))
    points = re.search(r'class="roc-curve" points="([^"]+)"', svg).group(1).split()
    xy = np.array([[float(v) for v in p.split(",")] for p in points])
    assert xy[0].tolist() == [48.0, 190.0]  # (0, 0): bottom left of the box (48, 22, 182 x 168)
    assert xy[-1].tolist() == [230.0, 22.0]  # (1, 1): top right
    assert "AUROC 0.700 [0.600, 0.800]" in svg
    legend = re.findall(r'class="legend-text">([^<]+)<', svg)
    assert legend == ["run 0.700", "baseline 0.500", "threshold"]
    dot = re.search(r'class="operating-point" cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert (float(dot.group(1)), float(dot.group(2))) == (139.0, pytest.approx(22 + 0.1 * 168, abs=0.05))
    assert min(float(v) for v in re.findall(r'font-size="([\d.]+)"', svg)) >= 11  # no text under 11 px
    for label in ("sensitivity", "1 - specificity"):
        assert f">{label}</text>" in svg
    empty = roc_svg("Hernia", np.empty(0), np.empty(0), float("nan"), float("nan"), float("nan"))
    assert "roc-curve" not in empty and "one class only" in empty and "legend" not in empty


def test_histogram_has_a_percent_axis_a_legend_and_the_threshold():
    edges = np.linspace(0, 1, 21)
    pos, neg = np.zeros(20, int), np.zeros(20, int)
    pos[[15, 18]] = [3, 7]  # 70% of positives in one bin -> axis to 100%
    neg[[1, 2]] = [60, 40]  # 60% of negatives
    svg = histogram_svg("Mass", edges, pos, neg, 0.42)
    assert re.findall(r'class="y-tick">([^<]+)<', svg) == ["0", "20", "40", "60", "80", "100"]
    assert re.findall(r'class="legend-text">([^<]+)<', svg) == ["with finding (n=10)", "without (n=100)",
                                                                "threshold 0.42 (fit split)"]
    assert ">% of class</text>" in svg and ">probability</text>" in svg
    heights = {float(h) for h in re.findall(r'class="bar-pos"[^>]*height="([\d.]+)"', svg)}
    assert max(heights) == pytest.approx(0.7 * 146, abs=0.1)  # 70% of a 146 px tall box
    assert min(float(v) for v in re.findall(r'font-size="([\d.]+)"', svg)) >= 11
    flat = histogram_svg("Mass", edges, np.full(20, 2), np.full(20, 5), math.nan)  # 5% per bin -> axis to 5%
    assert re.findall(r'class="y-tick">([^<]+)<', flat) == ["0", "1", "2", "3", "4", "5"]
    assert 'class="threshold"' not in flat
    # scores on their own range: the x ticks name it
    narrow = histogram_svg("Mass", np.linspace(0.01, 0.05, 21), pos, neg, 0.03)
    ticks = re.findall(r'font-size="11" text-anchor="middle" font-family="sans-serif" >([^<]+)<', narrow)
    assert ticks[:5] == ["0.01", "0.02", "0.03", "0.04", "0.05"]


def test_auroc_chart_axis_legend_baseline_intervals_and_delta_panel():
    good = auroc_chart_svg(["A", "B"], Estimates.of([0.7, 0.9], [0.6, 0.85], [0.8, 0.95]))
    ticks = re.findall(r">(\d\.\d)</text>", good)
    assert ticks == ["0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]
    poor = auroc_chart_svg(["A", "B", "Mean (2 labels)"], Estimates.of([0.35, 0.9, 0.62], [0.21, 0.85, 0.5],
                                                                       [0.5, 0.95, 0.7]),
                           names=("densenet121-0123 int8", "chexnet.csv"),
                           baseline=Estimates.of([0.4, math.nan, 0.4], [0.3, math.nan, 0.3], [0.5, math.nan, 0.5]),
                           delta=Estimates.of([-0.05, math.nan, 0.22], [-0.2, math.nan, 0.1], [0.1, math.nan, 0.31]),
                           summary_rows=1)
    assert re.findall(r">(\d\.\d)</text>", poor)[0] == "0.2"
    # Box from x=150 to x=480: 0.35 on a 0.2..1 axis sits at 150 + 330 * 0.15 / 0.8.
    cx = [float(v) for v in re.findall(r'class="auroc-point" cx="([\d.]+)"', poor)]
    assert cx[:2] == [pytest.approx(150 + 330 * 0.15 / 0.8, abs=0.06), pytest.approx(150 + 330 * 0.7 / 0.8, abs=0.06)]
    assert poor.count('class="auroc-baseline"') == 2 and poor.count('class="auroc-baseline-ci"') == 2
    assert poor.count('class="delta-point"') == 2 and ">AUROC difference</text>" in poor
    assert re.findall(r'class="legend-text">([^<]+)<', poor) == ["densenet121-0123 int8", "chexnet.csv", "95% CI",
                                                                  "run - baseline"]
    # Delta axis: round steps about 0 reaching past the largest |value| (0.31 -> 0.4 in steps of 0.2).
    assert re.findall(r">([+-]0\.\d+|0)</text>", poor) == ["-0.4", "-0.2", "0", "+0.2", "+0.4"]
    assert '>Mean (2 labels)</text>' in poor and 'font-weight="bold">Mean' in poor


def test_heatmap_overlay_uses_one_absolute_scale_on_viridis():
    gray = np.full((100, 200), 100, np.uint8)
    heat = np.zeros((2, 4), np.float32)
    heat[0, 0] = 0.9  # top-left cell hot
    png, width, height = heatmap_overlay_png(gray, heat, size=128)
    img = Image.open(io.BytesIO(png))
    assert img.size == (width, height) == (128, 64) and img.mode == "RGB"
    px = np.asarray(img).astype(int)
    hot, cold = px[5, 5], px[-5, -5]
    blend = (1 - HEAT_OPACITY) * 100
    assert np.abs(hot - (blend + HEAT_OPACITY * colormap(0.9))).max() <= 3
    assert np.abs(cold - (blend + HEAT_OPACITY * VIRIDIS[0])).max() <= 1  # 0 is viridis' dark end, not nothing
    # Absolute: a cell of 0.3 looks the same whatever the map's maximum (no per-image rescaling).
    weak = np.full((2, 4), 0.3, np.float32)
    strong = weak.copy()
    strong[1, 3] = 1.0
    a = np.asarray(Image.open(io.BytesIO(heatmap_overlay_png(gray, weak, size=128)[0])))[5, 5]
    b = np.asarray(Image.open(io.BytesIO(heatmap_overlay_png(gray, strong, size=128)[0])))[5, 5]
    assert a.tolist() == b.tolist()
    assert colormap(np.array([0.0, 1.0])).tolist() == [VIRIDIS[0].tolist(), VIRIDIS[-1].tolist()]


def test_overlay_svg_draws_named_boxes_and_the_colour_bar_its_scale():
    svg = overlay_svg(b"png", 256, 128, (("Mass", 10.0, 20.0, 30.0, 40.0), ("Nodule", 100.0, 2.0, 5.0, 5.0)), "Mass")
    rects = re.findall(r'<rect class="gt-box" data-label="(\w+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" '
                       r'height="([\d.]+)"[^>]*stroke="([^"]+)"[^>]*?(stroke-dasharray)?', svg)
    assert [r[:5] for r in rects] == [("Mass", "10.0", "20.0", "30.0", "40.0"),
                                      ("Nodule", "100.0", "2.0", "5.0", "5.0")]
    assert all(r[5] == BOX_COLOUR for r in rects)
    assert svg.count("stroke-dasharray") == 1  # the other label's box is dashed, the shown label's solid
    assert ">Mass</text>" in svg and ">Nodule</text>" in svg
    bar = colour_bar_svg("probability")
    assert re.findall(r">([\d.]+)</text>", bar) == ["0", "0.25", "0.5", "0.75", "1"]
    assert bar.count("<stop ") == len(VIRIDIS) and 'stop-color="rgb(68,1,84)"' in bar


def test_formatting_of_intervals_and_probabilities():
    assert format_interval(0.81234, 0.79, 0.83) == "0.812 [0.790, 0.830]"
    assert format_interval(0.8, math.nan, math.nan) == "0.800" and format_interval(math.nan, 0, 1) == "n/a"
    assert format_probability(0.12345) == "0.123" and format_probability(0.999871) == "0.99987"
    assert format_probability(1.0) == "1.00000"


def test_report_config_fields_are_documented_and_help_lists_them():
    docs = field_docs(ReportConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(ReportConfig)} and all(docs.values())
    proc = subprocess.run([sys.executable, "-m", "jobs.report", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr
    flat = "".join(proc.stdout.split())  # argparse wraps lines, also inside hyphenated flag names
    for f in dataclasses.fields(ReportConfig):
        assert "--" + f.name.replace("_", "-") in proc.stdout
        assert "".join(docs[f.name].split()) in flat
    assert "--fit-split {all,train_val,train,val,test}" in proc.stdout


def test_repeated_results_flags_are_merged():
    assert merge_repeated(["--results", "a", "--out", "o", "--results", "b"], "--results") == \
        ["--out", "o", "--results", "a", "b"]
    assert merge_repeated(["--results=a", "--results", "b", "c"], "--results") == ["--results", "a", "b", "c"]
    assert merge_repeated(["--out", "o"], "--results") == ["--out", "o"]


def test_validate_names_every_bad_flag():
    with pytest.raises(ValueError) as info:
        validate(ReportConfig(results=("a", "b", "c"), metadata="m", out="o", eval_split="dev", fit_split="x",
                              view_split="everything", target_sensitivity=1.5, bootstrap=-1, ci_level=1.0, top=0))
    msg = str(info.value)
    for flag in ("--results", "--eval-split 'dev'", "--fit-split 'x'", "--view-split 'everything'",
                 "--target-sensitivity", "--bootstrap", "--ci-level", "--top"):
        assert flag in msg
    assert msg.count("\n  - ") == 8
    cfg = ReportConfig(results=("a",), metadata="m", out="o")
    validate(cfg)
    assert cfg.fit_split is Split.VAL and cfg.eval_split is Split.TEST and cfg.view_split is None


def test_a_faint_heatmap_scaled_to_its_own_range_shows_its_structure():
    from xray.report.overlays import heatmap_scale

    gray = np.full((64, 128), 100, np.uint8)
    faint = np.array([[0.01, 0.02, 0.03, 0.05], [0.01, 0.01, 0.01, 0.01]], np.float32)
    assert heatmap_scale(faint) == (pytest.approx(0.01), pytest.approx(0.05))
    assert heatmap_scale(np.full((2, 2), 0.3)) == (0.0, 1.0)  # flat: read on the absolute scale
    absolute = np.asarray(Image.open(io.BytesIO(heatmap_overlay_png(gray, faint, size=128)[0]))).astype(int)
    scaled = np.asarray(Image.open(io.BytesIO(heatmap_overlay_png(gray, faint, size=128,
                                                                  scale=heatmap_scale(faint))[0]))).astype(int)
    blend = (1 - HEAT_OPACITY) * 100
    # on the absolute scale hot and cold cells are one colour (washed out); scaled, they span viridis
    assert np.abs(absolute[5, 120] - absolute[60, 5]).max() <= 10
    assert np.abs(scaled[5, 120] - (blend + HEAT_OPACITY * VIRIDIS[-1])).max() <= 3
    assert np.abs(scaled[60, 5] - (blend + HEAT_OPACITY * VIRIDIS[0])).max() <= 3
