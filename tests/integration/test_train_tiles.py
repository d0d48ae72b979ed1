"""Tile-ensemble training on a several-raylet Ray cluster on this machine (ray.cluster_utils.Cluster):
positions spread over nodes, a node removed mid-training, the INT8 ensemble scored into the schema."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from cli.provenance import tilescope_versions
from jobs import score, synth, train_tiles
from storage.artifacts import open_artifact
from storage.results import HEATMAP_SHAPE_KEY
from tests.integration.run_manifests import assert_cost, read_cost
from xray.metadata.labels import LABELS, prob_column

N_WORKERS = 3


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # Head with no CPUs (as on a real cluster), three one-CPU worker raylets.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=1) for _ in range(N_WORKERS)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tiles") / "archive")
    synth.run(synth.SynthConfig(out=out, n_images=96, size=128, shards=3, seed=11))
    return out


def _config(archive: str, out: str, **kw) -> train_tiles.TrainTilesConfig:
    base = dict(archive=archive, out=out, image_size=96, tile_size=48, stride=48, backbone="dwsep_cnn",
                epochs=8, batch_size=16, actor_cpus=1.0, calibration_size=16, train_precision="fp32", combiner="mean")
    base.update(kw)
    return train_tiles.TrainTilesConfig(**base)


def _alive_trainer_nodes() -> set[str]:
    from ray.util.state import list_actors

    return {a.node_id for a in list_actors(filters=[("class_name", "=", "TileTrainer"), ("state", "=", "ALIVE")])}


def test_positions_spread_survive_node_loss_and_rerun_is_noop(cluster, archive, tmp_path):
    c, workers = cluster
    out = str(tmp_path / "ensemble")
    cfg = _config(archive, out)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=train_tiles.run(cfg)))
    thread.start()
    # Wait until some position has checkpointed an epoch, then remove a node that hosts a live trainer.
    work = train_tiles.work_uri(cfg)
    deadline = time.time() + 120
    while time.time() < deadline and not any(
            os.path.exists(os.path.join(work, f"p{p:03d}", "checkpoint.pt")) for p in range(4)):
        time.sleep(0.05)
    hosting = _alive_trainer_nodes()
    victim = next(w for w in workers if w.node_id in hosting)
    c.remove_node(victim)
    thread.join(timeout=300)
    assert not thread.is_alive(), "training did not finish after a node was removed"
    summary = result["summary"]

    # Every position trained all its epochs, on at least two distinct nodes, and the artifact is whole.
    assert summary.grid == (2, 2) and len(summary.positions) == 4
    assert list(summary.phases) == ["decode", "positions", "join"]
    assert all(v > 0 for v in summary.phases.values()) and sum(summary.phases.values()) <= summary.seconds
    for r in summary.positions:
        assert [h["epoch"] for h in r.history] == list(range(8))
    trained_on = {n for r in summary.positions for n in r.nodes}
    assert len(trained_on) >= 2
    assert all(r.tiles_per_s > 0 and r.resumed_from_epoch == 0 for r in summary.positions)
    import ray

    assert not next(n for n in ray.nodes() if n["NodeID"] == victim.node_id)["Alive"]
    art = open_artifact(out)
    m = art.manifest
    assert m["kind"] == "ensemble" and m["grid"]["shape"] == [2, 2]
    assert [p["position"] for p in m["positions"]] == [0, 1, 2, 3]
    assert {k: v for k, v in m["versions"].items() if k.startswith("tilescope")} == tilescope_versions()
    assert {n for p in m["positions"] for n in p["nodes"]} == trained_on
    for p in m["positions"]:
        assert b"FakeQuantize" in art.read(p["int8"]) or b'element_type="i8"' in art.read(p["int8"])
    ev = summary.evaluation
    assert set(ev.test_mean_auroc["fp32"]) == {"mean", "max", "stacked"}
    assert set(m["thresholds"]) == {"mean", "max", "stacked"} and len(m["thresholds"]["mean"]) == len(LABELS)
    assert len(ev.position_test_mean_auroc) == 4
    # Rerunning the finished job does nothing.
    again = train_tiles.run(cfg)
    assert again.already_complete and again.sha256 == summary.sha256 and again.positions == ()


def test_ensemble_scoring_writes_heatmaps_and_tile_max(cluster, archive, tmp_path):
    out = str(tmp_path / "ensemble")
    # 2x2 positions of 64 px every 32 px over 96 px: 32 px heatmap cells, 3x3 of them; each corner cell is
    # one position alone, the centre cell is shared by all four.
    trained = train_tiles.run(_config(archive, out, epochs=1, image_size=96, tile_size=64, stride=32))
    res = score.run(score.ScoreConfig(archive=archive, model=out, out=str(tmp_path / "scores"), chunk_size=32))
    assert res.rows == 96 and res.errors == 0
    table = pq.read_table(res.results_uri)
    assert table.num_rows == 96 and set(table.column("status").to_pylist()) == {"ok"}
    shape = json.loads(table.schema.metadata[HEATMAP_SHAPE_KEY])
    assert shape == [len(LABELS), 3, 3]
    heat = np.array(table.column("heatmap").to_pylist(), dtype=np.float32).reshape(-1, *shape)
    corners = heat[:, :, [0, 0, 2, 2], [0, 2, 0, 2]]  # (N, L, 4): the four positions' own outputs
    probs = np.stack([table.column(prob_column(label)).to_numpy() for label in LABELS], axis=1)
    # mean combiner: the image probability is the mean of the positions, which is also the centre cell
    np.testing.assert_allclose(probs, corners.mean(axis=2), atol=1e-6)
    np.testing.assert_allclose(probs, heat[:, :, 1, 1], atol=1e-6)
    np.testing.assert_allclose(table.column("tile_max").to_numpy(), corners.max(axis=(1, 2)), atol=1e-7)
    assert table.column("model").to_pylist()[0] == "tiles2x2-dwsep_cnn"
    assert trained.sha256 == table.column("artifact_sha256").to_pylist()[0]
    # The run manifest's cost: one decode at 96 px for all four 64 px position models.
    assert_cost(read_cost(res.results_uri), positions=4, decode_size=96, model_input_size=64, images=96)
