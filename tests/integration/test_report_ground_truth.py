"""`tilescope report --ground-truth`: a run judged against expert labels beside NIH's, on tables in the Google 2019
file's exact format (its column names, YES/NO, Set Id) that the test writes, and on the real file when the
torchxrayvision wheel that ships it is on this machine (never downloaded)."""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import zipfile

import numpy as np
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import roc_auc_score

from jobs import report
from tests.integration.results_tables import make_run
from tests.integration.test_report import browse, chromium  # noqa: F401  (chromium is a fixture)
from xray.metadata.labels import LABELS

GOOGLE_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                 "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],Fracture,Pneumothorax,Airspace opacity,"
                 "Nodule or mass,Set Id")
GOOGLE_WHEEL_MEMBER = "torchxrayvision/data/google2019_nih-chest-xray-labels.csv.gz"


def read_csv(path: str) -> list[dict]:
    return pacsv.read_csv(path).to_pylist()


def col(name: str) -> int:
    return LABELS.index(name)


def write_google_table(path: str, run, rng: np.random.Generator, flip: float = 0.1, hedged: int = 0,
                       missing: int = 0, duplicate: bool = False) -> dict:
    """A table in the Google 2019 file's format for the run's test images and its validation patients' images
    plus some training images (the Google file's val set comes from NIH's train/val list): expert reads are NIH's
    labels (mapped as the default map does) with a share `flip` flipped; `hedged` HEDGED and `missing` empty
    Nodule-or-mass cells. Returns what was written."""
    pick = np.flatnonzero(~run.errors & (run.test | run.val | (run.train & (rng.random(run.train.size) < 0.1))))
    y = run.labels[pick]
    nih = {"Pneumothorax": y[:, col("Pneumothorax")],
           "Airspace opacity": y[:, [col(x) for x in ("Consolidation", "Pneumonia", "Infiltration", "Edema",
                                                      "Atelectasis")]].max(axis=1),
           "Nodule or mass": np.maximum(y[:, col("Nodule")], y[:, col("Mass")])}
    expert = {k: np.where(rng.random(v.size) < flip, 1 - v, v) for k, v in nih.items()}
    fracture = (rng.random(pick.size) < 0.05).astype(int)
    cells = {k: np.where(v == 1, "YES", "NO").astype(object) for k, v in expert.items()}
    cells["Nodule or mass"][:hedged] = "HEDGED"
    cells["Nodule or mass"][hedged:hedged + missing] = ""
    lines = [GOOGLE_HEADER]
    for r, i in enumerate(pick):
        image = run.image_ids[i]
        lines.append(f"{image},No Finding,0,{int(image[:8])},50,M,PA,2500,2048,0.168,0.168,"
                     f"{'YES' if fracture[r] else 'NO'},{cells['Pneumothorax'][r]},{cells['Airspace opacity'][r]},"
                     f"{cells['Nodule or mass'][r]},{'test' if run.test[i] else 'val'}")
    if duplicate:
        lines.append(lines[1])
    data = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)
    return {"pick": pick, "expert": expert, "nih": nih, "cells": cells}


@pytest.fixture(scope="module")
def expert_report(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gt")
    run = make_run(str(root), 3_000, seed=3, val_fraction=0.3, error_rows=4)
    table = write_google_table(str(root / "google2019_nih-chest-xray-labels.csv.gz"), run, np.random.default_rng(4),
                               hedged=5, missing=3)
    out = str(root / "report")
    gt = str(root / "google2019_nih-chest-xray-labels.csv.gz")
    assert report.main(["--results", run.run_dir, "--metadata", run.metadata, "--out", out, "--bootstrap", "200",
                        "--eval-split", "all", "--ground-truth", gt]) == 0
    return {"run": run, "table": table, "out": out, "root": root}


def test_side_by_side_auroc_and_agreement_match_an_independent_count(expert_report):
    run, table, out = expert_report["run"], expert_report["table"], expert_report["out"]
    pick = table["pick"]
    # --eval-split all, minus the patients the model trained on (its artifact's split).
    kept = ~run.train[pick]
    rows = {r["label"]: r for r in read_csv(os.path.join(out, "ground_truth_1_auroc.csv"))}
    assert list(rows) == ["Pneumothorax", "Airspace opacity", "Nodule or mass"]  # Fracture has no output
    outputs = {"Pneumothorax": ["Pneumothorax"], "Nodule or mass": ["Nodule", "Mass"],
               "Airspace opacity": ["Consolidation", "Pneumonia", "Infiltration", "Edema", "Atelectasis"]}
    for label, row in rows.items():
        definite = kept.copy()
        if label == "Nodule or mass":
            definite &= np.isin(table["cells"][label], ["YES", "NO"])
        score = run.probs[pick][:, [col(x) for x in outputs[label]]].max(axis=1)
        e, n = table["expert"][label][definite], table["nih"][label][definite]
        assert row["images"] == int(definite.sum())
        assert (row["expert_positives"], row["nih_positives"]) == (int(e.sum()), int(n.sum()))
        assert row["auroc_expert"] == pytest.approx(roc_auc_score(e, score[definite]), abs=1e-9)
        assert row["auroc_nih"] == pytest.approx(roc_auc_score(n, score[definite]), abs=1e-9)
        assert row["delta"] == pytest.approx(row["auroc_expert"] - row["auroc_nih"], abs=1e-12)
        assert row["auroc_expert_ci_low"] < row["auroc_expert"] < row["auroc_expert_ci_high"]
        assert row["delta_ci_low"] < row["delta"] < row["delta_ci_high"]
        # The scores were drawn from NIH's labels, the expert reads are them with 10% flipped: NIH ranks higher.
        assert row["auroc_nih"] > row["auroc_expert"]
    assert (rows["Nodule or mass"]["hedged_excluded"], rows["Nodule or mass"]["missing_excluded"]) == (
        int(kept[:5].sum()), int(kept[5:8].sum()))
    agreement = {r["label"]: r for r in read_csv(os.path.join(out, "ground_truth_1_agreement.csv"))}
    e, n = table["expert"]["Pneumothorax"][kept], table["nih"]["Pneumothorax"][kept]
    a = agreement["Pneumothorax"]
    assert (a["both_positive"], a["only_nih"], a["only_expert"], a["both_negative"]) == (
        int((e & n).sum()), int((n & ~e.astype(bool)).sum()), int((e & ~n.astype(bool)).sum()),
        int((~e.astype(bool) & ~n.astype(bool)).sum()))
    assert a["nih_sensitivity"] == pytest.approx((e & n).sum() / e.sum())
    assert a["nih_ppv"] == pytest.approx((e & n).sum() / n.sum())
    body = json.load(open(os.path.join(out, "report.json")))
    counts = body["ground_truth"][0]["counts"]
    assert counts["rows"] == pick.size and counts["trained"] == int(run.train[pick].sum())
    assert counts["evaluated"] == int(kept.sum()) and body["ground_truth"][0]["unmapped"] == ["Fracture"]


def test_triage_thresholds_fit_on_held_out_patients_clear_what_they_say_on_test(expert_report):
    run, table, out = expert_report["run"], expert_report["table"], expert_report["out"]
    pick = table["pick"]
    fit, apply = run.val[pick], run.test[pick]
    rows = read_csv(os.path.join(out, "ground_truth_1_triage.csv"))
    assert [(r["label"], r["target_sensitivity"]) for r in rows] == [
        (label, t) for label in ("Pneumothorax", "Airspace opacity", "Nodule or mass", "any finding")
        for t in (0.95, 0.99)]
    score = run.probs[pick][:, col("Pneumothorax")]
    e = table["expert"]["Pneumothorax"]
    for r in rows[:2]:
        positives = np.sort(score[fit & (e == 1)])[::-1]
        threshold = positives[math.ceil(r["target_sensitivity"] * positives.size - 1e-9) - 1]
        assert r["threshold"] == pytest.approx(threshold)
        assert r["fit_positives"] == positives.size and r["apply_images"] == int(apply.sum())
        assert r["cleared_share"] == pytest.approx((score[apply] < threshold).mean())
        assert r["sensitivity"] == pytest.approx((score[apply & (e == 1)] >= threshold).mean())
        assert r["positives_cleared"] == int((score[apply & (e == 1)] < threshold).sum())
        assert r["cleared_share_ci_low"] <= r["cleared_share"] <= r["cleared_share_ci_high"]
    any_rows = [r for r in rows if r["label"] == "any finding"]
    assert all(r["fit_cleared_share"] is not None and 0 < r["cleared_share"] < 1 for r in any_rows)
    # A higher target sensitivity clears less.
    assert any_rows[1]["cleared_share"] <= any_rows[0]["cleared_share"]
    assert any_rows[1]["sensitivity"] >= any_rows[0]["sensitivity"]


def test_the_page_has_a_section_per_source_with_its_citation_and_curve(expert_report):
    html = open(os.path.join(expert_report["out"], "report.html")).read()
    assert html.count('class="ground-truth"') == 1
    assert "Ground truth: Google 2019 expert labels" in html and "Majkowska" in html and "Radiology 2020" in html
    assert "text-mined" in html and "Nodule or mass: max(Nodule, Mass)" in html
    assert "left out (no model output scores them): Fracture" in html
    section = html[html.index('id="ground-truth-1"'):]
    assert section.count('class="triage-curve"') == 4 and "share of images cleared" in section


def test_the_section_reads_at_800_px_with_no_text_under_11_px(chromium, expert_report, tmp_path):  # noqa: F811
    page = open(os.path.join(expert_report["out"], "report.html")).read()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", """<script>
      let smallest = 1e9, where = "";
      const section = document.getElementById("ground-truth-1");
      for (const el of section.querySelectorAll("*")) {
        const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!own) continue;
        let px = parseFloat(getComputedStyle(el).fontSize);
        const svg = el.closest("svg");
        if (svg && svg.viewBox.baseVal && svg.viewBox.baseVal.width) {
          px *= svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
        }
        if (px < smallest) { smallest = px; where = el.tagName + ":" + el.textContent.trim().slice(0, 30); }
      }
      const curve = section.querySelector("svg.triage").getBoundingClientRect();
      document.body.setAttribute("data-probe", JSON.stringify({smallest, where, curveWidth: curve.width,
        page: document.documentElement.scrollWidth, window: document.documentElement.clientWidth}));
    </script></body>"""))
    measured = browse(chromium, str(probe), tmp_path, "--window-size=800,1200", "--dump-dom").stdout
    got = json.loads(re.search(r'data-probe="([^"]+)"', measured).group(1).replace("&quot;", '"'))
    assert got["smallest"] >= 11 - 0.01, got
    assert got["page"] <= got["window"], got  # the three tables and the curve fit an 800 px window
    assert got["curveWidth"] > 300, got


def test_bad_ground_truth_tables_are_refused_naming_the_cause(expert_report, tmp_path, capsys):
    run, root = expert_report["run"], expert_report["root"]
    base = ["--results", run.run_dir, "--metadata", run.metadata, "--bootstrap", "0"]
    dup = str(tmp_path / "dup.csv")
    write_google_table(dup, run, np.random.default_rng(1), duplicate=True)
    assert report.main([*base, "--out", str(tmp_path / "a"), "--ground-truth", dup]) == 2
    err = capsys.readouterr().err
    assert "image ids appear more than once" in err and "(2 rows)" in err
    gt = str(root / "google2019_nih-chest-xray-labels.csv.gz")
    assert report.main([*base, "--out", str(tmp_path / "b"), "--ground-truth", gt,
                        "--label-map", "Nodule or mass: max(Nodule, Mass, Lump)"]) == 2
    err = capsys.readouterr().err
    assert "Nodule or mass: Lump: the model has no such output" in err
    bad = str(tmp_path / "bad.csv")
    with open(bad, "w") as f:
        f.write("Image Index,Pneumothorax\n" + f"{run.image_ids[0]},maybe not\n")
    assert report.main([*base, "--out", str(tmp_path / "c"), "--ground-truth", bad]) == 2
    assert "column 'Pneumothorax', line 2" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a") or not os.listdir(tmp_path / "a")


def test_any_table_with_a_label_map_and_labels_absent_for_some_images(expert_report, tmp_path):
    run = expert_report["run"]
    ids = run.image_ids[~run.errors & run.test]
    rng = np.random.default_rng(6)
    reads = (rng.random(ids.size) < 0.3).astype(int)
    path = str(tmp_path / "reads.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq
    cells = [str(v) for v in reads]
    cells[:10] = [None] * 10  # absent for some images
    pq.write_table(pa.table({"image_id": list(ids), "Lung lesion": cells}), path)
    out = str(tmp_path / "r")
    assert report.main(["--results", run.run_dir, "--metadata", run.metadata, "--out", out, "--bootstrap", "0",
                        "--ground-truth", path, "--label-map", "Lung lesion: mean(Nodule, Mass)"]) == 0
    row = read_csv(os.path.join(out, "ground_truth_1_auroc.csv"))[0]
    score = run.probs[~run.errors & run.test][:, [col("Nodule"), col("Mass")]].mean(axis=1)
    assert row["label"] == "Lung lesion" and row["missing_excluded"] == 10 and row["images"] == ids.size - 10
    assert row["auroc_expert"] == pytest.approx(roc_auc_score(reads[10:], score[10:]), abs=1e-9)


def google_2019_file() -> bytes | None:
    """The real Google 2019 labels, from a torchxrayvision wheel on this machine (pip's cache, or the path in
    TILESCOPE_TXV_WHEEL); None when there is none. Never downloads."""
    candidates = [os.environ.get("TILESCOPE_TXV_WHEEL", "")]
    cache = os.path.expanduser("~/.cache/pip")
    candidates += glob.glob(os.path.join(cache, "**", "torchxrayvision-*.whl"), recursive=True)
    candidates += [p for p in glob.glob(os.path.join(cache, "http*", "**", "*"), recursive=True)
                   if os.path.isfile(p) and 20e6 < os.path.getsize(p) < 60e6]
    for path in candidates:
        if path and os.path.isfile(path) and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if GOOGLE_WHEEL_MEMBER in z.namelist():
                    return z.read(GOOGLE_WHEEL_MEMBER)
    return None


def test_the_real_google_2019_file_is_recognised_as_published(tmp_path):
    data = google_2019_file()
    if data is None:
        pytest.skip("no torchxrayvision wheel in pip's cache (or TILESCOPE_TXV_WHEEL); tests never download it")
    from storage.ground_truth_files import read_ground_truth
    path = tmp_path / "google2019_nih-chest-xray-labels.csv.gz"
    path.write_bytes(data)
    table = read_ground_truth(str(path), None)
    assert table.google_2019 and table.labels == ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
    assert table.image_id.size == 4376 and len(set(table.image_id)) == 4376
    assert sorted(set(table.set_id)) == ["test", "val"] and int((table.set_id == "test").sum()) == 1962
    assert set(np.unique(table.values)) <= {0, 1}  # the published file holds YES/NO only


def test_predictions_from_elsewhere_get_the_side_by_side_and_triage_says_why_not(expert_report, tmp_path):
    run, root = expert_report["run"], expert_report["root"]
    keep = ~run.errors
    csv = str(tmp_path / "chexnet_test_predictions.csv")
    with open(csv, "w") as f:
        f.write("Image Index," + ",".join(LABELS) + "\n")
        f.writelines(f"{i}," + ",".join(f"{v:.7f}" for v in row) + "\n"
                     for i, row in zip(run.image_ids[keep], run.probs[keep], strict=True))
    out = str(tmp_path / "r")
    assert report.main(["--results", csv, "--metadata", run.metadata, "--out", out, "--bootstrap", "0",
                        "--eval-split", "all", "--ground-truth",
                        str(root / "google2019_nih-chest-xray-labels.csv.gz")]) == 0
    body = json.load(open(os.path.join(out, "report.json")))["ground_truth"][0]
    assert body["counts"]["trained"] == 0 and body["counts"]["evaluated"] == expert_report["table"]["pick"].size
    assert "predictions from elsewhere carry no model artifact" in body["triage_problem"]
    assert read_csv(os.path.join(out, "ground_truth_1_triage.csv")) == []
    html = open(os.path.join(out, "report.html")).read()
    assert "No triage figures: --fit-split val needs the patients the model never trained on" in html
    assert "The model&#x27;s training patients are not known" in html


def test_the_real_file_reproduces_the_published_nih_vs_expert_counts(tmp_path):
    """On the Google file's own test images, with NIH's labels from its `Finding Labels` column: of the 295 expert
    nodule/mass positives only 134 carry NIH's Nodule or Mass, and 97 of 195 pneumothoraces carry NIH's label."""
    data = google_2019_file()
    if data is None:
        pytest.skip("no torchxrayvision wheel in pip's cache (or TILESCOPE_TXV_WHEEL); tests never download it")
    gt = tmp_path / "google2019_nih-chest-xray-labels.csv.gz"
    gt.write_bytes(data)
    rows = pacsv.read_csv(str(gt)).to_pylist()
    archive = tmp_path / "nih"
    archive.mkdir()
    with open(archive / "Data_Entry_2017.csv", "w") as f:
        f.write("Image Index,Finding Labels,Patient ID\n")
        f.writelines(f"{r['Image Index']},{r['Finding Labels']},{r['Patient ID']}\n" for r in rows)
    (archive / "test_list.txt").write_text("".join(f"{r['Image Index']}\n" for r in rows if r["Set Id"] == "test"))
    train_val = "".join(f"{r['Image Index']}\n" for r in rows if r["Set Id"] != "test")
    (archive / "train_val_list.txt").write_text(train_val)
    rng = np.random.default_rng(0)
    with open(tmp_path / "predictions.csv", "w") as f:
        f.write("Image Index," + ",".join(LABELS) + "\n")
        f.writelines(f"{r['Image Index']}," + ",".join(f"{v:.6f}" for v in rng.random(len(LABELS))) + "\n"
                     for r in rows)
    out = str(tmp_path / "r")
    assert report.main(["--results", str(tmp_path / "predictions.csv"), "--metadata",
                        str(archive / "Data_Entry_2017.csv"), "--out", out, "--bootstrap", "0",
                        "--ground-truth", str(gt)]) == 0
    agreement = {r["label"]: r for r in read_csv(os.path.join(out, "ground_truth_1_agreement.csv"))}
    nodule, ptx = agreement["Nodule or mass"], agreement["Pneumothorax"]
    assert (nodule["both_positive"], nodule["both_positive"] + nodule["only_expert"]) == (134, 295)
    assert (ptx["both_positive"], ptx["both_positive"] + ptx["only_expert"]) == (97, 195)
    counts = json.load(open(os.path.join(out, "report.json")))["ground_truth"][0]["counts"]
    assert counts["evaluated"] == 1962 and counts["outside_eval_split"] == 2414


def test_triage_against_nih_labels_is_in_every_report_with_thresholds(expert_report):
    run, out = expert_report["run"], expert_report["out"]
    rows = read_csv(os.path.join(out, "triage.csv"))
    assert [r["label"] for r in rows] == [label for label in (*LABELS, "any finding") for _ in (0, 1)]
    ok = ~run.errors
    fit, apply = run.val & ok, run.test & ok
    y_any = run.labels.max(axis=1)
    # The any-finding score: each label's probability over its own threshold at the target on the fit split.
    target = 0.95
    ratios = []
    for j in range(len(LABELS)):
        positives = np.sort(run.probs[fit & (run.labels[:, j] == 1), j])[::-1]
        if positives.size:
            t = positives[math.ceil(target * positives.size - 1e-9) - 1]
            ratios.append(run.probs[:, j] / t)
    score = np.max(np.stack(ratios, axis=1), axis=1)
    positives = np.sort(score[fit & (y_any == 1)])[::-1]
    threshold = positives[math.ceil(target * positives.size - 1e-9) - 1]
    row = next(r for r in rows if r["label"] == "any finding" and r["target_sensitivity"] == target)
    assert row["threshold"] == pytest.approx(threshold)
    assert row["cleared_share"] == pytest.approx((score[apply] < threshold).mean())
    assert row["sensitivity"] == pytest.approx((score[apply & (y_any == 1)] >= threshold).mean())
    html = open(os.path.join(out, "report.html")).read()
    assert '<section id="triage">' in html and "Triage against NIH" in html
