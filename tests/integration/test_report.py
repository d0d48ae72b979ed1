"""`tilescope report` on real scored runs (two INT8 models over the synthetic archive), from local disk and S3,
on hand-built runs (uncommitted, with heatmaps and boxes, 120k rows), and its HTML rendered by headless Chromium.
Thresholds fit on held-out patients, predictions from elsewhere and flag agreement: test_report_screening.py."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess

import boto3
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cli.provenance import tilescope_versions
from jobs import report, score
from storage.artifacts import open_typed
from storage.fs import StorageError
from storage.metadata_files import load_metadata
from storage.scored_runs import open_run
from tests.integration.results_tables import make_run, write_bbox_list, write_image_shard
from tests.integration.test_score_s3 import upload_dir
from xray.metadata.labels import LABELS, prob_column
from xray.metadata.manifests import ArtifactKind
from xray.metadata.splits import split_by_patient
from xray.report.overlays import VIRIDIS
from xray.report.svg import (
    BASELINE_COLOUR,
    BOX_COLOUR,
    NEGATIVE_COLOUR,
    POSITIVE_COLOUR,
    ROC_COLOUR,
    THRESHOLD_COLOUR,
)


def read_csv(path: str) -> list[dict]:
    return pacsv.read_csv(path).to_pylist()


@pytest.fixture(scope="module")
def scored(local_ray, tiny_models, tmp_path_factory) -> dict:
    """The tiny archive scored by both tiny INT8 models into one --out root (two run directories)."""
    root = tmp_path_factory.mktemp("report_scores")
    metadata = os.path.join(tiny_models["archive"], "Data_Entry_2017.csv")
    runs = [score.run(score.ScoreConfig(archive=tiny_models["archive"], model=model, out=str(root / "scores"),
                                        metadata=metadata, chunk_size=16)).results_uri
            for model in tiny_models["models"]]
    return {"runs": runs, "root": str(root / "scores"), "metadata": metadata, "archive": tiny_models["archive"]}


@pytest.fixture(scope="module")
def two_run_report(scored, tmp_path_factory) -> dict:
    out = str(tmp_path_factory.mktemp("report") / "report")
    cfg = report.ReportConfig(results=tuple(scored["runs"]), metadata=scored["metadata"], out=out, eval_split="all",
                              bootstrap=300, seed=7)
    return {"cfg": cfg, "summary": report.run(cfg), "out": out}


def truth_and_probs(run_uri: str, metadata: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Independent of the report: every ok row's id, ground truth (N, 14) and probabilities (N, 14)."""
    rows = pads.dataset(run_uri, format="parquet").to_table().to_pylist()
    rows = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["image_id"])
    by_id = {e.image_index: e.labels for e in load_metadata(metadata).entries}
    y = np.array([by_id[r["image_id"]] for r in rows])
    p = np.array([[r[prob_column(label)] for label in LABELS] for r in rows], dtype=np.float64)
    return [r["image_id"] for r in rows], y, p


def test_report_values_agree_with_sklearn_and_the_results(scored, two_run_report):
    out, summary = two_run_report["out"], two_run_report["summary"]
    ids, y, p = truth_and_probs(scored["runs"][0], scored["metadata"])
    _, y_b, p_b = truth_and_probs(scored["runs"][1], scored["metadata"])
    assert summary.rows == summary.scored == summary.evaluated == len(ids) == 80
    aurocs = read_csv(os.path.join(out, "auroc.csv"))
    assert [r["label"] for r in aurocs] == [*LABELS, "mean"]
    both = 0
    for j, row in enumerate(aurocs[:-1]):
        assert row["positives"] == int(y[:, j].sum()) and row["negatives"] == 80 - int(y[:, j].sum())
        if 0 < y[:, j].sum() < 80:
            both += 1
            assert row["auroc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-6)
            assert row["baseline_auroc"] == pytest.approx(roc_auc_score(y_b[:, j], p_b[:, j]), abs=1e-6)
            assert row["delta"] == pytest.approx(row["auroc"] - row["baseline_auroc"], abs=1e-9)
            assert row["ci_low"] - 1e-9 <= row["auroc"] <= row["ci_high"] + 1e-9
            assert row["baseline_ci_low"] - 1e-9 <= row["baseline_auroc"] <= row["baseline_ci_high"] + 1e-9
            assert row["delta_ci_low"] <= row["delta"] <= row["delta_ci_high"]
            assert row["paired_images"] == 80
        else:
            assert row["auroc"] is None and row["ci_low"] is None
    assert both >= 8  # the synthetic archive draws most findings
    mean = aurocs[-1]
    assert mean["auroc"] == pytest.approx(np.mean([r["auroc"] for r in aurocs[:-1] if r["auroc"] is not None]))
    assert mean["baseline_auroc"] == pytest.approx(np.mean([r["baseline_auroc"] for r in aurocs[:-1]
                                                            if r["baseline_auroc"] is not None]))
    assert mean["delta"] == pytest.approx(mean["auroc"] - mean["baseline_auroc"], abs=1e-9)
    assert mean["ci_low"] < mean["auroc"] < mean["ci_high"] and mean["delta_ci_low"] < mean["delta"] < \
        mean["delta_ci_high"]
    body = json.load(open(os.path.join(out, "report.json")))
    assert body["mean_auroc"] == pytest.approx(mean["auroc"]) and body["mean_delta"]["mean"] == \
        pytest.approx(mean["delta"])
    # The summary carries the paired scores the deltas rest on (the demo words its verdicts from them).
    paired = summary.paired
    assert paired.labels == LABELS and paired.truth.shape == paired.a.shape == paired.b.shape == (80, len(LABELS))
    assert paired.mean_delta(LABELS, 0.95).mean == pytest.approx(mean["delta"], abs=1e-9)
    assert [r["committed"] for r in body["runs"]] == [True, True] and body["runs"][0]["rows"] == 80
    assert body["runs"][0]["model_split"].endswith("patient split val_fraction 0.15, seed 0")
    assert body["runs"][1]["model_split"].endswith("patient split val_fraction 0.15, seed 1")
    assert sorted(os.listdir(out)) == sorted(body["files"])
    assert {k: v for k, v in body["versions"].items() if k.startswith("tilescope")} == tilescope_versions()
    assert pq.read_schema(os.path.join(out, "auroc.parquet")).metadata[b"tilescope.report_schema_version"] == b"2"

    # Thresholds: fit on the model's validation patients (its artifact's split, redrawn) reach the target there.
    meta = load_metadata(scored["metadata"])
    _, manifest = open_typed(json.load(open(os.path.join(scored["runs"][0], "_manifest.json")))["artifact_uri"],
                             None, "--model", ArtifactKind.MODEL)
    val_ids = split_by_patient(meta, manifest.split.val_fraction, manifest.split.seed).val
    fit = np.array([i in val_ids for i in ids])
    assert 0 < fit.sum() < 40
    thresholds = {r["label"]: r for r in read_csv(os.path.join(out, "thresholds.csv"))}
    for j, label in enumerate(LABELS):
        t = thresholds[label]
        assert t["fit_images"] == int(fit.sum())
        if y[fit, j].sum():
            assert np.mean(p[fit & (y[:, j] == 1), j] >= np.float32(t["threshold"])) >= 0.9
            assert t["fit_positives"] == int(y[fit, j].sum()) and t["fit_sensitivity"] >= 0.9
        else:
            assert t["threshold"] is None and t["fit_flagged"] == 0
        if t["apply_sensitivity"] is not None:
            assert t["apply_sensitivity_low"] <= t["apply_sensitivity"] <= t["apply_sensitivity_high"]
    # The view split is the evaluated one (all here): the screening view ranks all 80 images.
    screening = pq.read_table(os.path.join(out, "screening.parquet")).to_pylist()
    assert len(screening) == 80 and sorted(r["image_id"] for r in screening) == ids
    assert [r["rank"] for r in screening] == list(range(1, 81))
    assert {r["model_split"] for r in screening} == {"train", "val", "test"}
    assert all(a["top_prob"] >= b["top_prob"] for a, b in zip(screening, screening[1:], strict=False))
    row = screening[0]
    i = ids.index(row["image_id"])
    assert row["top_prob"] == pytest.approx(p[i].max()) and row["top_label"] == LABELS[int(p[i].argmax())]
    expected = [label for j, label in enumerate(LABELS) if thresholds[label]["threshold"] is not None
                and p[i, j] >= np.float32(thresholds[label]["threshold"])]
    assert row["flagged_labels"] == "|".join(expected) and row["n_flagged"] == len(expected)
    assert read_csv(os.path.join(out, "errors.csv")) == []
    assert any("holds" in n and "images the model trained on: optimistic" in n for n in body["notes"])


def test_same_inputs_same_report_and_ambiguous_root_refused(scored, two_run_report, tmp_path):
    again = str(tmp_path / "again")
    report.run(report.ReportConfig(**{**two_run_report["cfg"].__dict__, "out": again}))
    for name in ("auroc.csv", "thresholds.csv", "screening.csv", "report.html"):
        assert open(os.path.join(again, name), "rb").read() == open(os.path.join(two_run_report["out"], name),
                                                                     "rb").read(), name
    with pytest.raises(StorageError, match="holds several runs"):
        open_run(scored["root"])


def test_report_reads_and_writes_s3(scored, s3_endpoint, s3_bucket, tmp_path):
    name = os.path.basename(scored["runs"][0])
    upload_dir(scored["runs"][0], s3_bucket, f"scores/{name}", s3_endpoint)
    for listing in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        boto3.client("s3", endpoint_url=s3_endpoint).upload_file(
            os.path.join(scored["archive"], listing), s3_bucket, f"nih/{listing}")
    common = {"bootstrap": 200, "seed": 3}
    # The --out root of `score` with one run in it is accepted for that run.
    s3 = report.run(report.ReportConfig(results=(f"s3://{s3_bucket}/scores",), out=f"s3://{s3_bucket}/report",
                                        metadata=f"s3://{s3_bucket}/nih/Data_Entry_2017.csv",
                                        s3_endpoint=s3_endpoint, **common))
    local = report.run(report.ReportConfig(results=(scored["runs"][0],), metadata=scored["metadata"],
                                           out=str(tmp_path / "local"), **common))
    assert s3.out_uri == f"s3://{s3_bucket}/report" and s3.evaluated == local.evaluated > 0
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="report/")["Contents"]}
    assert keys == {f"report/{f}" for f in s3.files}
    for table in ("auroc.csv", "thresholds.csv", "screening.csv"):
        body = client.get_object(Bucket=s3_bucket, Key=f"report/{table}")["Body"].read()
        assert body == open(tmp_path / "local" / table, "rb").read(), table
    assert pq.read_table(io.BytesIO(client.get_object(Bucket=s3_bucket, Key="report/auroc.parquet")["Body"]
                                    .read())).num_rows == 15  # 14 labels and the mean


def test_uncommitted_run_is_refused_unless_allow_partial(tmp_path):
    run = make_run(str(tmp_path), 500, commit=False)
    cfg = report.ReportConfig(results=(run.run_dir,), metadata=run.metadata, out=str(tmp_path / "r"), bootstrap=50)
    with pytest.raises(ValueError, match="not committed.*--allow-partial"):
        report.run(cfg)
    assert not os.path.exists(tmp_path / "r")
    summary = report.run(report.ReportConfig(**{**cfg.__dict__, "allow_partial": True}))
    body = json.load(open(tmp_path / "r" / "report.json"))
    assert body["runs"][0]["committed"] is False and any("not committed" in n for n in body["notes"])
    assert "Throughput (last attempt)</dt><dd>n/a (not committed)" in open(tmp_path / "r" / "report.html").read()
    assert summary.scored == 497 and summary.rows == 500
    errors = read_csv(str(tmp_path / "r" / "errors.csv"))
    assert errors == [{"reason": "corrupt or truncated image data", "rows": 3,
                       "example_image_id": errors[0]["example_image_id"],
                       "example_error": f"corrupt or truncated image data: row {errors[0]['example_image_id']}"}]


@pytest.fixture(scope="module")
def heatmap_report(tmp_path_factory) -> dict:
    """A tile-ensemble-like run (4x4 heatmaps) with its images, BBox_List boxes on some of its test images, and a
    second model's predictions from elsewhere (a CSV, its validation patients given with --val-list) as baseline."""
    root = tmp_path_factory.mktemp("heatmaps")
    run = make_run(str(root), 300, heatmap_shape=(14, 4, 4), seed=2, val_fraction=0.4)
    archive = os.path.dirname(run.metadata)
    write_image_shard(archive, run.image_ids)
    positives = [(str(run.image_ids[i]), label) for i in np.flatnonzero(run.test & ~run.errors)
                 for j, label in enumerate(LABELS[:8]) if run.labels[i, j]]
    boxes = [(image, label, 10.0 + 5 * k % 40, 20.0, 30.0, 25.0) for k, (image, label) in enumerate(positives)]
    write_bbox_list(archive, boxes)
    rng = np.random.default_rng(3)
    keep = ~run.errors & (run.val | run.test)
    other = np.clip(run.probs[keep] + rng.normal(0, 0.05, (int(keep.sum()), 14)), 0, 1)
    csv = str(root / "other_model.csv")
    with open(csv, "w") as f:
        f.write("Image Index," + ",".join(LABELS) + "\n")
        f.writelines(f"{i}," + ",".join(f"{v:.6f}" for v in row) + "\n"
                     for i, row in zip(run.image_ids[keep], other, strict=True))
    val_list = str(root / "val_list.txt")
    with open(val_list, "w") as f:
        f.write("\n".join(run.image_ids[run.val]) + "\n")
    cfg = report.ReportConfig(results=(run.run_dir, csv), metadata=run.metadata, out=str(root / "r"),
                              archive=archive, overlays=5, bootstrap=50, val_list=val_list)
    return {"run": run, "cfg": cfg, "summary": report.run(cfg), "boxes": boxes, "out": str(root / "r")}


def test_heatmap_overlays_one_label_at_a_time_with_their_boxes(heatmap_report, tmp_path):
    run, out = heatmap_report["run"], heatmap_report["out"]
    assert heatmap_report["summary"].overlays == 5
    html = open(os.path.join(out, "report.html")).read()
    assert html.count('<figure class="overlay">') == 5 and html.count("data:image/png;base64,") == 5
    assert html.count('<svg class="colour-bar"') == 1
    thresholds = {r["label"]: r["threshold"] for r in read_csv(os.path.join(out, "thresholds.csv"))}
    captions = re.findall(r"<figcaption><b>([^<]+)</b><br>(\w+) ([\d.]+) \(threshold ([\d.]+)\)<br>truth: ([^;]+);",
                          html)
    by_id = dict(zip(run.image_ids, range(len(run.image_ids)), strict=True))
    # One label at a time: as many different labels as have a flagged test image, each image once.
    test_rows = np.flatnonzero(run.test & ~run.errors)
    labels_flagged = {label for label, t in thresholds.items() if t is not None
                      and (run.probs[test_rows, LABELS.index(label)] >= np.float32(t)).any()}
    shown = [c[1] for c in captions]
    assert len(captions) == 5 and len({c[0] for c in captions}) == 5
    assert len(set(shown[:len(labels_flagged)])) == min(5, len(labels_flagged)) >= 3
    assert set(shown) <= labels_flagged
    boxed = {}
    for image, label, *_ in heatmap_report["boxes"]:
        boxed.setdefault(image, []).append(label)
    drawn_boxes = 0
    for image, label, prob, threshold, findings in captions:
        i = by_id[image]
        assert run.test[i]  # the view split defaults to the evaluated one: test
        assert float(prob) == pytest.approx(run.probs[i, LABELS.index(label)], abs=6e-4)
        assert float(prob) >= thresholds[label] - 6e-4
        assert float(threshold) == pytest.approx(thresholds[label], abs=6e-4)
        assert findings == "|".join(np.array(LABELS)[run.labels[i] > 0]) or findings == "No Finding"
        drawn_boxes += len(boxed.get(image, []))
    assert html.count('class="gt-box"') == drawn_boxes > 0
    screening = pq.read_table(os.path.join(out, "screening.parquet")).to_pylist()
    assert {r["split"] for r in screening} == {"test"} and len(screening) == int((run.test & ~run.errors).sum())
    assert all(r["tile_max"] is not None and 0.0 <= r["tile_max"] < 0.2 for r in screening)
    # Without --archive, and for a run without heatmaps, the section says why it is empty.
    cfg = heatmap_report["cfg"]
    report.run(report.ReportConfig(**{**cfg.__dict__, "archive": None, "out": str(tmp_path / "n")}))
    assert "pass --archive" in open(tmp_path / "n" / "report.html").read()
    plain = make_run(str(tmp_path / "plain"), 60)
    report.run(report.ReportConfig(results=(plain.run_dir,), metadata=plain.metadata, out=str(tmp_path / "p"),
                                   archive=os.path.dirname(plain.metadata), bootstrap=50))
    assert "This run has no heatmaps" in open(tmp_path / "p" / "report.html").read()


def test_120k_result_rows(tmp_path):
    run = make_run(str(tmp_path), 120_000, seed=4)
    summary = report.run(report.ReportConfig(results=(run.run_dir,), metadata=run.metadata, out=str(tmp_path / "r"),
                                             bootstrap=200))
    ok = ~run.errors
    assert summary.scored == 119_997 and summary.evaluated == int((ok & run.test).sum())
    aurocs = read_csv(str(tmp_path / "r" / "auroc.csv"))
    eval_rows = ok & run.test
    for j, row in enumerate(aurocs[:-1]):
        assert row["auroc"] == pytest.approx(roc_auc_score(run.labels[eval_rows, j], run.probs[eval_rows, j]),
                                             abs=1e-6)
        assert row["ci_high"] - row["ci_low"] < 0.15
    assert aurocs[-1]["label"] == "mean" and aurocs[-1]["ci_high"] - aurocs[-1]["ci_low"] < 0.02
    for row in read_csv(str(tmp_path / "r" / "thresholds.csv")):
        assert row["fit_sensitivity"] >= 0.9 and row["fit_images"] == int((run.val & ok).sum())
        se = np.sqrt(0.9 * 0.1 / row["apply_positives"])
        assert abs(row["apply_sensitivity"] - 0.9) < 4 * se  # fit on the validation patients, applied to test
    assert pq.read_metadata(tmp_path / "r" / "screening.parquet").num_rows == int((ok & run.test).sum())  # the view


# ---- the page in a browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (installed by `make test`); skipped when absent outside CI, a failure in CI."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed; `make test` installs it")
    return path


def browse(chromium: str, html: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", *args, f"file://{html}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def colour_pixels(img: np.ndarray, hex_colour: str, tolerance: int = 12) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance).sum())


def test_html_renders_in_headless_chromium(chromium, two_run_report, tmp_path):
    html = os.path.join(two_run_report["out"], "report.html")
    shot = tmp_path / "report.png"
    browse(chromium, html, tmp_path, f"--screenshot={shot}", "--window-size=1280,3400")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (3400, 1280, 3)
    assert (img.min(axis=-1) < 240).mean() > 0.03  # not blank
    aurocs = read_csv(os.path.join(two_run_report["out"], "auroc.csv"))[:-1]
    curves = sum(r["auroc"] is not None for r in aurocs)
    assert colour_pixels(img, ROC_COLOUR) > 150 * curves  # every curve drawn (about 2.5 px x 200+ px each)
    assert colour_pixels(img, BASELINE_COLOUR) > 50 * curves
    assert colour_pixels(img, POSITIVE_COLOUR) > 300 and colour_pixels(img, NEGATIVE_COLOUR) > 300

    dom = browse(chromium, html, tmp_path, "--dump-dom").stdout
    assert dom.count('<svg class="roc"') == 14 and dom.count('class="roc-curve"') == curves
    assert dom.count('class="roc-baseline"') == curves
    assert dom.count('<svg class="histogram"') == 14 and dom.count('<svg class="auroc-chart"') == 1
    assert dom.count("<tr>") >= 1 + 15 + 14 + 25


def test_page_shows_legends_colour_bar_and_boxes_and_its_tables_fit(chromium, heatmap_report, tmp_path):
    html = os.path.join(heatmap_report["out"], "report.html")
    dom = browse(chromium, html, tmp_path, "--dump-dom").stdout
    # Legends: the chart names both runs and the interval; every ROC plot says which curve is which.
    chart = dom[dom.index('<svg class="auroc-chart"'):]
    chart = chart[:chart.index("</svg>")]
    assert re.findall(r'class="legend-text">([^<]+)<', chart) == ["synthetic int8", "other_model.csv", "95% CI",
                                                                   "run - baseline"]
    roc_legends = re.findall(r'<svg class="roc".*?</svg>', dom)
    assert len(roc_legends) == 14
    for svg in roc_legends:
        if 'class="roc-curve"' in svg:
            texts = re.findall(r'class="legend-text">([^<]+)<', svg)
            assert re.fullmatch(r"run [01]\.\d{3}", texts[0]) and re.fullmatch(r"baseline [01]\.\d{3}", texts[1])
    assert dom.count('<svg class="colour-bar"') == 1 and dom.count('class="gt-box"') > 0
    assert dom.count('class="y-tick"') >= 14 * 2 + 14 * 6  # every histogram and ROC plot has a y axis

    shot = tmp_path / "heatmaps.png"
    browse(chromium, html, tmp_path, f"--screenshot={shot}", "--window-size=1280,7000")
    img = np.asarray(Image.open(shot).convert("RGB"))
    # The colour bar: viridis from its dark to its bright end, unblended (the overlays are blended with the X-ray).
    for end in (VIRIDIS[0], VIRIDIS[-1]):
        assert colour_pixels(img, "#" + "".join(f"{int(v):02x}" for v in end), tolerance=6) > 30
    boxes = dom.count('class="gt-box"')
    assert colour_pixels(img, BOX_COLOUR, tolerance=20) > 60 * boxes  # 2 px outlines of >= 30 x 25 px boxes
    assert colour_pixels(img, BASELINE_COLOUR) > 500 and colour_pixels(img, THRESHOLD_COLOUR) > 300

    # Tables fit the page: no table (nor the page) is wider than a 1280 px window. The page has no script of its
    # own; the measurement runs in a copy with one appended.
    probe = tmp_path / "probe.html"
    probe.write_text(open(html).read().replace("</body>", """<script>
      const w = document.documentElement.clientWidth;
      const wide = [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right > w + 1);
      document.body.setAttribute("data-fit", JSON.stringify({tables: document.querySelectorAll("table").length,
        wide: wide.map(t => t.className), page: document.documentElement.scrollWidth, window: w}));
    </script></body>"""))
    measured = browse(chromium, str(probe), tmp_path, "--window-size=1280,900", "--dump-dom").stdout
    fit = json.loads(re.search(r'data-fit="([^"]+)"', measured).group(1).replace("&quot;", '"'))
    assert fit["tables"] == 5 and fit["wide"] == [] and fit["page"] <= fit["window"], fit  # 5: with triage


def test_report_replaces_its_own_report_and_nothing_else(tmp_path):
    run = make_run(str(tmp_path), 200)
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cfg = report.ReportConfig(results=(run.run_dir,), metadata=run.metadata, out=str(out), bootstrap=20)
    with pytest.raises(ValueError, match=r"is not empty and holds no earlier report .*notes.txt.*--force"):
        report.run(cfg)
    assert sorted(os.listdir(out)) == ["notes.txt"]
    report.run(report.ReportConfig(**{**cfg.__dict__, "force": True}))
    report.run(cfg)  # an earlier report is there now: replaced in place
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.json").exists()


def test_a_clinician_reads_the_summary_box_badges_and_no_small_text_at_800_px(chromium, heatmap_report, tmp_path):
    html = os.path.join(heatmap_report["out"], "report.html")
    page = open(html).read()
    # What the summary says is worded from the numbers on the page: the mean AUROC and its interval.
    body = json.load(open(os.path.join(heatmap_report["out"], "report.json")))
    ci = body["mean_auroc_ci"]
    box = page[page.index('id="conclusions"'):page.index("</section>", page.index('id="conclusions"'))]
    assert f"mean AUROC {ci['mean']:.3f} (95% CI {ci['low']:.3f} to {ci['high']:.3f})" in box
    assert "Intended use:" in box and "Data: " in box
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", """<script>
      const w = document.documentElement.clientWidth;
      let smallest = 1e9, where = "";
      for (const el of document.querySelectorAll("body *")) {
        const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!own || el.closest("style, script, title")) continue;
        let px = parseFloat(getComputedStyle(el).fontSize);
        const svg = el.closest("svg");
        if (svg && svg.viewBox.baseVal && svg.viewBox.baseVal.width) {
          px *= svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
        }
        if (px < smallest) { smallest = px; where = el.tagName + ":" + el.textContent.trim().slice(0, 30); }
      }
      const summary = document.getElementById("conclusions").getBoundingClientRect();
      document.body.setAttribute("data-probe", JSON.stringify({smallest, where,
        page: document.documentElement.scrollWidth, window: w, summaryTop: summary.top, summaryWidth: summary.width,
        badges: document.querySelectorAll("span.badge").length}));
    </script></body>"""))
    measured = browse(chromium, str(probe), tmp_path, "--window-size=800,1200", "--dump-dom").stdout
    got = json.loads(re.search(r'data-probe="([^"]+)"', measured).group(1).replace("&quot;", '"'))
    assert got["smallest"] >= 11 - 0.01, got  # no text under 11 px, in HTML or in the (scaled) plots
    assert got["page"] <= got["window"], got  # nothing wider than an 800 px window
    assert got["summaryTop"] < 200 and got["summaryWidth"] > 500, got  # the summary box comes first
    assert got["badges"] >= 1, got
    shot = tmp_path / "top.png"
    browse(chromium, html, tmp_path, f"--screenshot={shot}", "--window-size=800,700")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert colour_pixels(img, "#f0f6ff", tolerance=3) > 20_000  # the summary box, drawn at the top
    assert colour_pixels(img, "#2b6cb0", tolerance=20) > 500  # and its border
