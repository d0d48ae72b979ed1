"""Node roles (cli/node_roles.py): what torch actors ask for, and which CPUs size their pool."""

from __future__ import annotations

from cli import node_roles
from cli.node_roles import NODE_ROLES_ENV, TRAIN_RESOURCE, train_cpus, train_resources

NODES = [
    {"Alive": True, "Resources": {"CPU": 16.0, "score": 1.0}},
    {"Alive": True, "Resources": {"CPU": 16.0, TRAIN_RESOURCE: 1.0}},
    {"Alive": True, "Resources": {"CPU": 8.0, TRAIN_RESOURCE: 1.0}},
    {"Alive": False, "Resources": {"CPU": 16.0, TRAIN_RESOURCE: 1.0}},  # a lost train worker
    {"Alive": True, "Resources": {"CPU": 0.0}},  # the head
]


def test_without_node_roles_nothing_is_asked_and_every_cpu_counts(monkeypatch):
    monkeypatch.delenv(NODE_ROLES_ENV, raising=False)
    assert not node_roles.roles_enabled()
    assert train_resources() == {}
    assert train_cpus(NODES, 40.0) == 40.0
    monkeypatch.setenv(NODE_ROLES_ENV, "0")
    assert train_resources() == {} and train_cpus(NODES, 40.0) == 40.0


def test_with_node_roles_torch_actors_ask_for_train_workers_and_count_only_their_cpus(monkeypatch):
    monkeypatch.setenv(NODE_ROLES_ENV, "1")
    assert train_resources() == {TRAIN_RESOURCE: node_roles.TRAIN_SLIVER}
    assert 0 < node_roles.TRAIN_SLIVER < 1  # many actors share one node's unit; CPUs limit them
    assert train_cpus(NODES, 40.0) == 24.0  # the two live train workers
    assert train_cpus(NODES[:1] + NODES[-1:], 16.0) == 0  # none up yet: the pool starts at one actor
