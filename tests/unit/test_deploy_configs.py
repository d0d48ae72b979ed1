"""cluster.yaml (validated by Ray's own cluster-config schema) and the KubeRay RayJob manifests in deploy/kuberay."""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from jobs.submit import job_fields, submittable_jobs, unknown_flags

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
MANIFESTS = sorted((REPO / "deploy" / "kuberay").glob("rayjob-*.yaml"))
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
WHEEL = f"tilescope-{VERSION}-py3-none-any.whl"
# Physical cores (vCPUs / 2) of the AMX instance types the configs name.
PHYSICAL_CORES = {"m7i.xlarge": 2, "m7i.8xlarge": 16, "c7i.8xlarge": 16}
AWS_KEY_PATTERNS = (r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"(?i)aws_access_key", r"(?i)aws_secret",
                    r"(?i)secret_access_key", r"(?i)aws_session_token")
CLOSED_PORTS = (6379, 8265, 10001)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def commands(cluster: dict, key: str) -> list[str]:
    return [" ".join(line.split()) for line in cluster[key]]


# ---- cluster.yaml ------------------------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_own_schema_validator(cluster):
    # `ray up` runs prepare_config (merge the AWS defaults) then validate_config (ray-schema.json plus checks);
    # neither touches the network or the cloud.
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_the_validator_is_real_it_rejects_a_broken_copy(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["score_worker"]["resources"]["CPU"] = "16"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'integer'"):
        validate_config(prepare_config(broken))
    broken = copy.deepcopy(cluster)
    broken["provider"]["security_group"]["OpenPorts"] = [8265]
    with pytest.raises(jsonschema.ValidationError, match="OpenPorts"):
        validate_config(prepare_config(broken))


def test_head_schedules_nothing(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    starts = [c for c in commands(cluster, "head_start_ray_commands") if " start " in c]
    assert len(starts) == 1 and "--head" in starts[0].split()
    assert "--num-cpus=0" in starts[0].split()


def test_one_worker_type_for_scoring_one_for_training_with_cpu_as_physical_cores(cluster):
    workers = {name: t for name, t in cluster["available_node_types"].items() if name != cluster["head_node_type"]}
    assert set(workers) == {"score_worker", "train_worker"}
    for name, node_type in workers.items():
        instance = node_type["node_config"]["InstanceType"]
        assert re.fullmatch(r"[cm]7i\.\w+", instance), f"{name}: {instance} is not a Sapphire Rapids (AMX) type"
        assert node_type["resources"]["CPU"] == PHYSICAL_CORES[instance]
        assert node_type["max_workers"] >= 1
    assert workers["score_worker"]["resources"]["score"] == 1
    assert workers["train_worker"]["resources"]["train"] == 1


def test_token_auth_on_every_node_and_no_token_value_in_the_file(cluster):
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for c in commands(cluster, key) if " start " in c]
    assert len(starts) == 2
    for start in starts:
        assert "RAY_AUTH_MODE=token" in start.split()
        assert "RAY_AUTH_TOKEN_PATH=$HOME/.ray/auth_token" in start.split()
    # The token travels as a file from the launching machine; its value is never written here.
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "RAY_AUTH_TOKEN=" not in CLUSTER_YAML.read_text()


def test_dashboard_listens_on_loopback_and_no_port_is_opened(cluster):
    head_start = next(c for c in commands(cluster, "head_start_ray_commands") if " start " in c)
    assert "--dashboard-host=127.0.0.1" in head_start.split()
    every_command = " ".join(commands(cluster, "head_start_ray_commands") + commands(cluster, "setup_commands")
                             + commands(cluster, "worker_start_ray_commands"))
    assert "0.0.0.0" not in every_command
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    for rule in rules:
        opened = range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1)
        assert not any(port in opened for port in CLOSED_PORTS), rule
        assert all(r.get("CidrIp") != "0.0.0.0/0" for r in rule.get("IpRanges", [])), rule
    assert rules == []


def test_s3_through_the_instance_profile_and_no_keys_anywhere(cluster):
    profiles = {name: t["node_config"]["IamInstanceProfile"]["Name"] for name, t in
                cluster["available_node_types"].items()}
    assert profiles == {"head": "tilescope-ray-head", "score_worker": "tilescope-s3-access",
                        "train_worker": "tilescope-s3-access"}
    text = CLUSTER_YAML.read_text()
    for pattern in AWS_KEY_PATTERNS:
        assert not re.search(pattern, text), pattern


def test_installs_the_project_at_the_pinned_version(cluster):
    mounted = {remote: local for remote, local in cluster["file_mounts"].items() if remote.endswith(".whl")}
    assert mounted == {f"~/tilescope-dist/{WHEEL}": f"./dist/{WHEEL}"}
    setup = " ".join(commands(cluster, "setup_commands"))
    assert f'"ray[data,default]=={ray.__version__}"' in setup  # nodes run the client's exact Ray
    assert f"--force-reinstall ~/tilescope-dist/{WHEEL}" in setup
    assert "git clone" not in setup and "example.invalid" not in CLUSTER_YAML.read_text()
    # The head runs job drivers with `python` from the venv the wheel went into.
    head_start = next(c for c in commands(cluster, "head_start_ray_commands") if " start " in c)
    assert "PATH=$HOME/tilescope-venv/bin:$PATH" in head_start.split()


# ---- KubeRay -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_rayjob_manifest_runs_a_real_job_with_token_auth(path):
    manifest = yaml.safe_load(path.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "-m"]
    jobs = submittable_jobs()
    assert argv[2] in jobs.values(), f"{argv[2]} is not a job module"
    assert unknown_flags(tuple(argv[3:]), job_fields(argv[2])) == []
    job = next(name for name, module in jobs.items() if module == argv[2])
    assert spec["metadata"]["job"] == job and spec["metadata"]["run_id"] == spec["jobId"]
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert "serviceType" not in cluster["headGroupSpec"]  # ClusterIP: the dashboard stays inside Kubernetes


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_rayjob_manifest_sets_resources_image_and_no_keys(path):
    text = path.read_text()
    cluster = yaml.safe_load(text)["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == "tilescope-s3"  # S3 through IRSA / Pod Identity
        for container in pod["containers"]:
            assert container["image"] == f"tilescope:{VERSION}"
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, container["name"]
            assert not any(e["name"].startswith(("AWS_", "RAY_AUTH")) for e in container.get("env", []))
    for group in cluster["workerGroupSpecs"]:
        instance = group["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]
        assert int(group["rayStartParams"]["num-cpus"]) == PHYSICAL_CORES[instance]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for pattern in AWS_KEY_PATTERNS:
        assert not re.search(pattern, text), pattern


def test_manifests_cover_scoring_and_tile_training():
    modules = {shlex.split(yaml.safe_load(p.read_text())["spec"]["entrypoint"])[2] for p in MANIFESTS}
    assert modules == {"jobs.score", "jobs.train_tiles"}


def test_image_pins_ray_and_the_wheel_version():
    dockerfile = (REPO / "deploy" / "kuberay" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-cpu" in dockerfile
    assert f"COPY dist/{WHEEL} " in dockerfile and f"pip install --no-cache-dir /tmp/{WHEEL}" in dockerfile


def test_scoring_nodes_keep_idle_workers_for_reads_and_writes(cluster):
    # Same rule as a local start (jobs/cli.local_system_config): ~3 idle workers per CPU, not Ray's 1.
    from jobs.cli import local_system_config

    start = [c for c in commands(cluster, "worker_start_ray_commands") if "ray start" in c]
    assert start and all("RAY_num_workers_soft_limit=$((3 * $(nproc) / 2 + 2))" in c for c in start)
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay" / "rayjob-score.yaml").read_text())
    for group in manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        env = {e["name"]: e["value"] for c in group["template"]["spec"]["containers"] for e in c.get("env", [])}
        cpus = int(group["rayStartParams"]["num-cpus"])
        assert int(env["RAY_num_workers_soft_limit"]) == local_system_config(cpus)["num_workers_soft_limit"]
