"""`tilescope report` screening you can trust, on hand-built runs (no Ray): thresholds fit on the patients the model
never trained on hold on test; fitting on training images is refused; predictions from elsewhere are reported
and compared with a run; flag agreement between two models at their own thresholds."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import roc_auc_score

from jobs import report
from tests.integration.results_tables import make_run
from xray.metadata.labels import LABELS


def read_csv(path: str) -> list[dict]:
    return pacsv.read_csv(path).to_pylist()


def threshold_for(y: np.ndarray, s: np.ndarray, target: float = 0.9) -> float:
    """Independent of xray.evaluation.screening: the k-th highest positive score, k = ceil(target * positives)."""
    positives = np.sort(s[y == 1])[::-1]
    return float(positives[max(1, math.ceil(target * positives.size - 1e-9)) - 1]) if positives.size else math.nan


@pytest.fixture(scope="module")
def memorising(tmp_path_factory) -> dict:
    """60k images, 3 per patient; test_list = 5% of patients; the model's artifact holds 30% of the other patients
    out for validation; on the images it trained on it learnt the answers (positives' logits +4)."""
    root = tmp_path_factory.mktemp("memorising")
    run = make_run(str(root), 60_000, seed=11, val_fraction=0.3, test_every=20, memorised=4.0, error_rows=0)
    return {"run": run, "root": root}


def test_thresholds_fit_on_held_out_patients_reach_the_target_on_test(memorising):
    run, root = memorising["run"], memorising["root"]
    out = str(root / "val")
    report.run(report.ReportConfig(results=(run.run_dir,), metadata=run.metadata, out=out, bootstrap=0))
    rows = read_csv(os.path.join(out, "thresholds.csv"))
    assert [r["label"] for r in rows] == list(LABELS)
    covered = []
    for j, r in enumerate(rows):
        assert r["fit_images"] == int(run.val.sum()) and r["apply_images"] == int(run.test.sum())
        assert r["threshold"] == pytest.approx(threshold_for(run.labels[run.val, j], run.probs[run.val, j]))
        flagged = run.probs[run.test, j] >= np.float32(r["threshold"])
        positives = run.labels[run.test, j] == 1
        assert r["apply_true_positives"] == int((flagged & positives).sum())
        assert r["apply_sensitivity"] == pytest.approx(flagged[positives].mean())
        assert r["apply_specificity"] == pytest.approx(1 - flagged[~positives].mean())
        assert r["apply_ppv"] == pytest.approx(positives[flagged].mean())
        for rate in ("sensitivity", "specificity", "ppv"):
            assert r[f"apply_{rate}_low"] <= r[f"apply_{rate}"] <= r[f"apply_{rate}_high"]
        covered.append(r["apply_sensitivity_low"] <= 0.9 <= r["apply_sensitivity_high"])
    # The point of fitting on held-out patients: the target is reached on new patients, within the CI. A 95% CI
    # misses the truth 1 time in 20 by design, so of 14 labels up to 2 may miss (P(3 or more) = 3%); fit on
    # training images instead, 6 or more miss by far (next test). On average the target is met.
    assert sum(covered) >= 12, [(r["label"], r["apply_sensitivity"]) for r in rows]
    assert abs(np.mean([r["apply_sensitivity"] for r in rows]) - 0.9) < 0.03
    html = open(os.path.join(out, "report.html")).read()
    assert "fit on val (17" in html and "the model&#x27;s validation patients, never trained on" in html


def test_fitting_on_training_images_is_refused_unless_asked_and_then_misses_the_target(memorising, capsys):
    run, root = memorising["run"], memorising["root"]
    args = ["--results", run.run_dir, "--metadata", run.metadata, "--out", str(root / "tv"), "--bootstrap", "0",
            "--fit-split", "train_val"]
    assert report.main(args) == 2
    err = capsys.readouterr().err
    assert f"--fit-split train_val: {int(run.train.sum())} of its {int((run.train | run.val).sum())} images are " \
           "ones the model trained on" in err
    assert "--allow-fit-on-train" in err and "--fit-split val" in err and not os.path.exists(root / "tv")
    assert report.main([*args, "--allow-fit-on-train"]) == 0
    body = json.load(open(root / "tv" / "report.json"))
    assert any("--allow-fit-on-train" in n and "miss the target" in n for n in body["notes"])
    # Fit on images the model memorised, the thresholds sit too high: on test, far below the target.
    missed = [r for r in read_csv(str(root / "tv" / "thresholds.csv")) if r["apply_positives"] >= 100]
    assert len(missed) >= 6
    for r in missed:
        assert r["fit_sensitivity"] >= 0.9 and r["apply_sensitivity_high"] < 0.8, r


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> dict:
    """A tilescope run and a second model's predictions of its validation and test images in the form CheXNet
    reimplementations publish: NIH's `Image Index`, bare label names (NIH spellings: `Infiltrate`, a space in
    `Pleural Thickening`), no manifest."""
    root = tmp_path_factory.mktemp("elsewhere")
    run = make_run(str(root), 9_000, seed=5, error_rows=3)
    rng = np.random.default_rng(9)
    keep = ~run.errors & (run.val | run.test)
    logits = np.log(run.probs[keep] / (1 - run.probs[keep])) + rng.normal(0, 0.6, (int(keep.sum()), 14))
    other = (1 / (1 + np.exp(-logits))).astype(np.float32)
    names = [{"Infiltration": "Infiltrate", "Pleural_Thickening": "Pleural Thickening"}.get(x, x) for x in LABELS]
    csv = str(root / "chexnet_predictions.csv")
    with open(csv, "w") as f:
        f.write("Image Index," + ",".join(names) + "\n")
        f.writelines(f"{i}," + ",".join(f"{v:.7f}" for v in row) + "\n"
                     for i, row in zip(run.image_ids[keep], other, strict=True))
    val_list = str(root / "val_list.txt")
    with open(val_list, "w") as f:
        f.write("\n".join(run.image_ids[run.val]) + "\n")
    ids = run.image_ids[keep]
    return {"run": run, "csv": csv, "val_list": val_list, "root": root,
            "other": dict(zip(ids, np.arange(ids.size), strict=True)), "other_probs": np.asarray(other, np.float32)}


def test_predictions_from_elsewhere_against_a_run_give_paired_deltas_and_flag_agreement(elsewhere):
    run, root = elsewhere["run"], elsewhere["root"]
    out = str(root / "vs")
    cfg = report.ReportConfig(results=(run.run_dir, elsewhere["csv"]), metadata=run.metadata, out=out, bootstrap=100,
                              val_list=elsewhere["val_list"])
    report.run(cfg)
    rows = read_csv(os.path.join(out, "auroc.csv"))
    paired = run.test & ~run.errors
    other = elsewhere["other_probs"][[elsewhere["other"][i] for i in run.image_ids[paired]]]
    for j, r in enumerate(rows[:-1]):
        y = run.labels[paired, j]
        assert r["paired_images"] == int(paired.sum())
        assert r["baseline_auroc"] == pytest.approx(roc_auc_score(y, other[:, j]), abs=1e-6)
        assert r["delta"] == pytest.approx(roc_auc_score(y, run.probs[paired, j]) - roc_auc_score(y, other[:, j]),
                                           abs=1e-6)
        assert r["baseline_ci_low"] <= r["baseline_auroc"] <= r["baseline_ci_high"]
        # Each model at its own thresholds, both fit on the same validation patients.
        fit = run.val & ~run.errors
        t_run = threshold_for(run.labels[fit, j], run.probs[fit, j])
        fit_other = np.array([i in elsewhere["other"] for i in run.image_ids]) & run.val
        t_other = threshold_for(run.labels[fit_other, j],
                                elsewhere["other_probs"][[elsewhere["other"][i] for i in run.image_ids[fit_other]], j])
        a, b = run.probs[paired, j] >= np.float32(t_run), other[:, j] >= np.float32(t_other)
        assert (r["flag_flips"], r["flagged_run_only"], r["flagged_baseline_only"]) == \
            (int((a != b).sum()), int((a & ~b).sum()), int((b & ~a).sum()))
        assert r["flip_share"] == pytest.approx((a != b).mean())
    assert rows[-1]["label"] == "mean" and rows[-1]["agreement_images"] is None
    assert rows[-1]["flag_flips"] == sum(r["flag_flips"] for r in rows[:-1])
    body = json.load(open(os.path.join(out, "report.json")))
    assert body["runs"][1]["external"] and body["runs"][1]["model_split"] == f"--val-list {elsewhere['val_list']}"
    html = open(os.path.join(out, "report.html")).read()
    assert "chexnet_predictions.csv" in html and "flag flips (" in html


def test_predictions_from_elsewhere_alone_need_their_held_out_patients(elsewhere, capsys):
    root = elsewhere["root"]
    args = ["--results", elsewhere["csv"], "--metadata", elsewhere["run"].metadata, "--out", str(root / "alone"),
            "--bootstrap", "0"]
    # default flags: the AUROC table and plots, no thresholds, and the page and stderr say why and how (exit 0)
    assert report.main(args) == 0
    err = capsys.readouterr().err
    assert "no thresholds: --fit-split val needs the patients the model never trained on" in err
    assert "predictions from elsewhere carry no model artifact" in err and "--val-list FILE" in err
    auroc = read_csv(str(root / "alone" / "auroc.csv"))
    assert [r["label"] for r in auroc][:-1] == list(LABELS) and auroc[-1]["label"] == "mean"
    assert all(r["threshold"] is None or r["threshold"] != r["threshold"]
               for r in read_csv(str(root / "alone" / "thresholds.csv")))
    html = open(str(root / "alone" / "report.html")).read()
    assert "No screening thresholds" in html and "--val-list FILE" in html
    body = json.load(open(str(root / "alone" / "report.json")))
    assert body["evaluated_images"] > 0
    # an explicit split that holds training images is still refused
    assert report.main([*args, "--out", str(root / "alone2"), "--fit-split", "train_val"]) == 2
    assert "NIH's train_val_list.txt" in capsys.readouterr().err
    assert report.main([*args, "--val-list", elsewhere["val_list"]]) == 0
    rows = read_csv(str(root / "alone" / "thresholds.csv"))
    assert all(r["fit_images"] == int(elsewhere["run"].val.sum()) for r in rows)
    # Without a held-out list, a baseline from elsewhere still gives deltas; only the flag agreement is left out.
    out = str(root / "no_agreement")
    report.run(report.ReportConfig(results=(elsewhere["run"].run_dir, elsewhere["csv"]),
                                   metadata=elsewhere["run"].metadata, out=out, bootstrap=0))
    rows = read_csv(os.path.join(out, "auroc.csv"))
    assert "delta" in rows[0] and "flag_flips" not in rows[0]
    body = json.load(open(os.path.join(out, "report.json")))
    assert body["flag_flip_share"] is None and any(n.startswith("No flag agreement") for n in body["notes"])


def test_a_scored_model_imported_without_its_split_needs_the_held_out_list_for_thresholds(tmp_path, capsys):
    run = make_run(str(tmp_path), 3_000, seed=8, imported=True)
    args = ["--results", run.run_dir, "--metadata", run.metadata, "--out", str(tmp_path / "r"), "--bootstrap", "0"]
    assert report.main(args) == 0  # AUROC and plots; thresholds left out, saying why and how
    err = capsys.readouterr().err
    assert f"its model artifact {run.artifact} (synthetic) was brought in by `tilescope import`" in err
    assert "--val-list FILE" in err
    assert all(r["fit_images"] == 0 for r in read_csv(str(tmp_path / "r" / "thresholds.csv")))
    val_list = tmp_path / "held_out.txt"
    val_list.write_text("\n".join(run.image_ids[run.val]) + "\n")
    assert report.main([*args, "--val-list", str(val_list)]) == 0
    assert {r["fit_images"] for r in read_csv(str(tmp_path / "r" / "thresholds.csv"))} == \
        {int((run.val & ~run.errors).sum())}
    body = json.load(open(tmp_path / "r" / "report.json"))
    assert body["runs"][0]["model_split"] == f"--val-list {val_list}" and body["runs"][0]["external"] is False


def test_own_labels_with_only_image_index_and_finding_labels_reach_a_report(tmp_path, capsys):
    run = make_run(str(tmp_path), 1_500, seed=3)
    rows = list(pacsv.read_csv(run.metadata).to_pylist())
    own = tmp_path / "archive" / "own_labels.csv"  # beside the NIH split lists, as a user's table would be
    own.write_text("Image Index,Finding Labels\n" + "".join(f"{r['Image Index']},{r['Finding Labels']}\n"
                                                           for r in rows))
    out = tmp_path / "own"
    assert report.main(["--results", run.run_dir, "--metadata", str(own), "--out", str(out), "--bootstrap", "0"]) == 0
    err = capsys.readouterr().err
    assert "the metadata has no Patient ID column" in err and "--val-list FILE" in err  # no thresholds, and why
    auroc = read_csv(str(out / "auroc.csv"))
    # the same images and labels as NIH's file, on the same test list: the same AUROC per label
    nih_out = tmp_path / "nih"
    assert report.main(["--results", run.run_dir, "--metadata", run.metadata, "--out", str(nih_out),
                        "--bootstrap", "0"]) == 0
    nih = read_csv(str(nih_out / "auroc.csv"))
    assert [r["auroc"] for r in auroc] == pytest.approx([r["auroc"] for r in nih], nan_ok=True)
    html = (out / "report.html").read_text()
    assert "has no Patient ID column: every image counts as its own patient" in html
    # a table missing a required column is refused naming it
    bad = tmp_path / "archive" / "bad.csv"
    bad.write_text("Image Index,Labels\nx.png,Mass\n")
    assert report.main(["--results", run.run_dir, "--metadata", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "no 'Finding Labels' column (the header has 'Image Index', 'Labels')" in capsys.readouterr().err
