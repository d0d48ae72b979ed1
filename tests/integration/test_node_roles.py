"""Node roles on a multi-node Ray (cli/node_roles.py, cluster.yaml): with TILESCOPE_NODE_ROLES=1 in the driver,
as the head sets it for job drivers, the tile trainers run on the worker advertising `train` only, never on the
score worker (which, on a real cluster, has no torch), and the pool is sized by the train worker's CPUs."""

from __future__ import annotations

import pytest

from cli.node_roles import NODE_ROLES_ENV, TRAIN_RESOURCE
from jobs import synth, train_tiles
from storage.artifacts import open_artifact


@pytest.fixture(scope="module")
def role_cluster():
    import ray
    from ray.cluster_utils import Cluster

    # A head with no CPUs, a score worker and a train worker, as cluster.yaml's node types advertise them.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    score = c.add_node(num_cpus=1, resources={"score": 1})
    train = c.add_node(num_cpus=1, resources={TRAIN_RESOURCE: 1})
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield score, train
    ray.shutdown()
    c.shutdown()


def test_with_node_roles_tile_trainers_run_on_train_workers_only(role_cluster, tmp_path, monkeypatch):
    score, train = role_cluster
    monkeypatch.setenv(NODE_ROLES_ENV, "1")
    archive, out = str(tmp_path / "archive"), str(tmp_path / "ensemble")
    synth.run(synth.SynthConfig(out=archive, n_images=48, size=64, shards=2, seed=5))
    summary = train_tiles.run(train_tiles.TrainTilesConfig(
        archive=archive, out=out, image_size=64, tile_size=32, stride=32, backbone="dwsep_cnn", epochs=1,
        batch_size=8, actor_cpus=1.0, calibration_size=8, combiner="mean"))
    assert len(summary.positions) == 4
    # One trainer (the train worker's one CPU, not the cluster's two), and every position trained there.
    trained_on = {node for p in open_artifact(out).manifest["positions"] for node in p["nodes"]}
    assert trained_on == {train.node_id} and score.node_id not in trained_on
