"""storage.prediction_files: predictions from elsewhere (one Parquet/CSV file or a directory of them) read as a
scored run for `tilescope report`, and `--results` telling them from a tilescope run (no Ray)."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.fs import StorageError
from storage.prediction_files import open_predictions, open_scored
from xray.metadata.labels import LABELS


def chexnet_csv(path: str, rows: list[tuple], header: str = "Image Index,Atelectasis,Infiltrate,Pleural Thickening"):
    with open(path, "w") as f:
        f.write(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_a_chexnet_style_csv_reads_as_a_run_with_bare_label_names(tmp_path):
    path = chexnet_csv(str(tmp_path / "chexnet.csv"), [
        ("images/00000002_000.png", 0.2, 0.7, 0.1), ("00000001_000.png", 0.9, 0.3, 0.4),
        ("00000003_000.png", 0.5, "", 0.2)])
    run = open_scored(path)
    assert run.external and run.manifest is None and run.heatmap_shape is None and run.tile_max is None
    assert run.labels == ("Atelectasis", "Infiltration", "Pleural_Thickening")  # LABELS order, NIH's spellings
    assert run.image_id.tolist() == ["00000001_000.png", "00000002_000.png", "00000003_000.png"]  # sorted, dirs gone
    assert run.status.tolist() == ["ok", "ok", "error"] and run.error.tolist()[2] == "no probability for Infiltration"
    np.testing.assert_allclose(run.probs[:2], [[0.9, 0.3, 0.4], [0.2, 0.7, 0.1]], rtol=1e-6)
    assert run.probs.dtype == np.float32 and run.source.tolist()[0] == "chexnet.csv:000000001"


def test_prob_columns_win_over_bare_label_columns_holding_the_truth(tmp_path):
    table = pa.table({"image_id": ["a.png", "b.png"], "Effusion": [1, 0], "prob_Effusion": [0.8, 0.3],
                      "prob_Mass": [0.1, 0.6], "Mass": [0, 1]})
    pq.write_table(table, tmp_path / "preds.parquet")
    run = open_predictions(str(tmp_path / "preds.parquet"))
    assert run.labels == ("Effusion", "Mass")
    np.testing.assert_allclose(run.probs, [[0.8, 0.1], [0.3, 0.6]], rtol=1e-6)


def test_a_directory_of_files_is_one_run_and_a_tilescope_run_is_still_a_run(tmp_path):
    pred = tmp_path / "preds"
    pred.mkdir()
    for k, ids in enumerate((["a.png", "b.png"], ["c.png"])):
        pq.write_table(pa.table({"image_id": ids, **{f"prob_{label}": [0.5] * len(ids) for label in LABELS}}),
                       pred / f"chunk-{k}.parquet")
    (pred / "_SUCCESS").write_text("")
    run = open_scored(str(pred))
    assert run.external and run.image_id.tolist() == ["a.png", "b.png", "c.png"] and run.labels == LABELS
    with gzip.open(tmp_path / "preds.csv.gz", "wt") as f:
        f.write("image_id,prob_Hernia\nx.png,0.25\n")
    assert open_scored(str(tmp_path / "preds.csv.gz")).probs.tolist() == [[0.25]]
    # A directory holding a tilescope run's sidecars is read as that run, not as prediction files.
    scored = tmp_path / "scores" / "m-0123456789ab"
    scored.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["a.png"], "source": ["s:a.png"], "status": ["ok"], "error": [None],
                             "prob_Mass": pa.array([0.5], pa.float32())}), scored / "part-s-00000-last.parquet")
    (scored / "_manifest.json").write_text(json.dumps({"run_id": "r", "rows": 1, "ok": 1, "errors": 0}))
    run = open_scored(str(tmp_path / "scores"))
    assert not run.external and (run.manifest.run_id, run.manifest.rows) == ("r", 1)
    assert run.uri.endswith("m-0123456789ab")


def test_bad_prediction_files_are_refused_naming_the_cause(tmp_path):
    with pytest.raises(ValueError, match="no image id column"):
        open_predictions(chexnet_csv(str(tmp_path / "a.csv"), [("x.png", 0.1)], "name,Mass"))
    with pytest.raises(ValueError, match="no probability column"):
        open_predictions(chexnet_csv(str(tmp_path / "b.csv"), [("x.png", 0.1)], "image_id,score"))
    with pytest.raises(ValueError, match=r"'Mass' holds 1 values outside \[0, 1\] \(e.g. 2.5\).*sigmoid"):
        open_predictions(chexnet_csv(str(tmp_path / "c.csv"), [("x.png", 2.5)], "image_id,Mass"))
    with pytest.raises(ValueError, match="'Mass' and 'mass' both name Mass"):
        open_predictions(chexnet_csv(str(tmp_path / "d.csv"), [("x.png", 0.1, 0.2)], "image_id,Mass,mass"))
    with pytest.raises(ValueError, match="not numbers"):
        open_predictions(chexnet_csv(str(tmp_path / "e.csv"), [("x.png", "high")], "image_id,Mass"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="no scoring run here.*or a Parquet/CSV file"):
        open_scored(str(tmp_path / "empty"))
    with pytest.raises(StorageError, match="unreadable"):
        (tmp_path / "f.parquet").write_bytes(b"not parquet")
        open_predictions(str(tmp_path / "f.parquet"))
    assert not os.path.exists(tmp_path / "nothing.csv")
    with pytest.raises(StorageError):
        open_scored(str(tmp_path / "nothing.csv"))
