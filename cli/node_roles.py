"""Node roles of a cluster of CPU nodes: what may run where when not every node has the training stack.

cluster.yaml has two worker types: score workers carry the base install (Ray, OpenVINO, pyarrow: no torch),
train workers the [train] extra (torch, torchvision, nncf), and only train workers advertise the custom
resource `train`. The head starts Ray with TILESCOPE_NODE_ROLES=1, which every job driver inherits; the jobs
then ask for a sliver of `train` for whatever imports torch on a worker (the tile trainers), so the autoscaler
starts a train worker for it and Ray never places it on a score worker, where its import would fail. Scoring
asks for nothing: the base install is on every node. A local Ray, or a KubeRay cluster whose nodes share one
image, leaves the variable unset and nothing changes.
"""

from __future__ import annotations

import os

NODE_ROLES_ENV = "TILESCOPE_NODE_ROLES"
TRAIN_RESOURCE = "train"
"""Advertised by train workers only (cluster.yaml); one unit per node."""
TRAIN_SLIVER = 0.001
"""What one torch actor asks of it: CPUs, not this, limit how many run on a node."""


def roles_enabled() -> bool:
    return os.environ.get(NODE_ROLES_ENV) == "1"


def train_resources() -> dict[str, float]:
    """Custom resources (Ray `resources=`) of an actor that imports torch: the `train` sliver on a cluster with
    node roles, else none."""
    return {TRAIN_RESOURCE: TRAIN_SLIVER} if roles_enabled() else {}


def train_cpus(nodes: list[dict], cluster_cpus: float) -> float:
    """CPUs the torch actors may use, to size their pool: the cluster's (`cluster_cpus`), or with node roles only
    those of the live train workers among `nodes` (ray.nodes()). An autoscaling cluster with no train worker up
    yet counts 0, so the pool starts at one actor: pass the job's --actors to size it for the workers to come."""
    if not roles_enabled():
        return cluster_cpus
    return sum(node["Resources"].get("CPU", 0.0) for node in nodes
               if node.get("Alive") and TRAIN_RESOURCE in node.get("Resources", {}))
