"""cluster.yaml (validated by Ray's own cluster-config schema), the KubeRay RayJob manifests and the image's
Dockerfile in deploy/kuberay: what each node role installs, checked against pyproject.toml.

The PyTorch CPU wheel index (download.pytorch.org/whl/cpu) cannot be reached from this environment, so the train
role's install is checked as text here: the index, the exact pins of pyproject.toml's [train] extra, and torch
installed from it before anything could pull the CUDA build from the package index."""

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

from cli.node_roles import NODE_ROLES_ENV, TRAIN_RESOURCE
from jobs.submit import job_fields, submittable_jobs, unknown_flags

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
DOCKERFILE = REPO / "deploy" / "kuberay" / "Dockerfile"
MANIFESTS = sorted((REPO / "deploy" / "kuberay").glob("rayjob-*.yaml"))
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
WHEEL = f"tilescope-{VERSION}-py3-none-any.whl"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
# The exact pins of the [train] extra, e.g. ("torch==2.14.1", "torchvision==0.29.1").
TORCH_PINS = tuple(r for r in PROJECT["optional-dependencies"]["train"] if r.startswith(("torch==", "torchvision==")))
TORCH_CPU = f"{CPU_INDEX} {' '.join(TORCH_PINS)}"
TRAIN_STACK = ("torch", "torchvision", "nncf", "download.pytorch.org", "[train]")
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


def setup_of(cluster: dict, node_type: str) -> list[str]:
    """The setup commands a node of `node_type` runs, as `ray up` / the autoscaler resolve them: the head runs
    setup_commands + head_setup_commands; a worker type's own worker_setup_commands replace setup_commands +
    worker_setup_commands (ray.autoscaler: _get_node_type_specific_fields, get_worker_setup_commands)."""
    prepared = prepare_config(copy.deepcopy(cluster))
    if node_type == cluster["head_node_type"]:
        lines = prepared["head_setup_commands"]
    else:
        lines = prepared["available_node_types"][node_type].get("worker_setup_commands",
                                                                 prepared["worker_setup_commands"])
    return [" ".join(line.split()) for line in lines]


def pip_installs(lines: list[str]) -> list[str]:
    return [line for line in lines if "/bin/pip install" in line and "--upgrade pip" not in line]


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


def test_every_node_installs_the_project_at_the_pinned_version(cluster):
    mounted = {remote: local for remote, local in cluster["file_mounts"].items() if remote.endswith(".whl")}
    assert mounted == {f"~/tilescope-dist/{WHEEL}": f"./dist/{WHEEL}"}
    assert set(cluster["available_node_types"]) == {"head", "score_worker", "train_worker"}
    for node_type in cluster["available_node_types"]:
        setup = setup_of(cluster, node_type)
        joined = " ".join(setup)
        assert "python3.11 -m venv ~/tilescope-venv" in joined and "chmod 600 ~/.ray/auth_token" in setup, node_type
        assert f'"ray[data,default]=={ray.__version__}"' in joined, node_type  # the client's exact Ray
        # Last, the wheel itself forced in place: a rebuilt wheel of the same version replaces the installed one.
        assert pip_installs(setup)[-1] == (f"~/tilescope-venv/bin/pip install -q --no-deps --force-reinstall "
                                           f"~/tilescope-dist/{WHEEL}"), node_type
        assert "git clone" not in joined
    assert "example.invalid" not in CLUSTER_YAML.read_text()
    # The head runs job drivers with `python` from the venv the wheel went into.
    head_start = next(c for c in commands(cluster, "head_start_ray_commands") if " start " in c)
    assert "PATH=$HOME/tilescope-venv/bin:$PATH" in head_start.split()


def test_score_workers_install_the_base_package_only(cluster):
    installs = pip_installs(setup_of(cluster, "score_worker"))
    assert installs[0] == f'~/tilescope-venv/bin/pip install -q "ray[data,default]=={ray.__version__}" ' \
                          f"~/tilescope-dist/{WHEEL}"
    for line in installs:
        assert not any(word in line for word in TRAIN_STACK), line


@pytest.mark.parametrize("node_type", ["train_worker", "head"])
def test_train_workers_and_the_head_install_train_with_torch_from_the_cpu_index(cluster, node_type):
    # The head too: job drivers run there, and train / quantize / train-tiles drivers import torch.
    assert len(TORCH_PINS) == 2, PROJECT["optional-dependencies"]["train"]
    installs = pip_installs(setup_of(cluster, node_type))
    # torch and torchvision at pyproject's exact pins, from the CPU index, before the wheel's [train] extra (which
    # they then satisfy); nothing else comes from that index.
    assert installs[0] == f"~/tilescope-venv/bin/pip install -q {TORCH_CPU}"
    assert installs[1] == (f'~/tilescope-venv/bin/pip install -q "ray[data,default]=={ray.__version__}" '
                           f'"$HOME/tilescope-dist/{WHEEL}[train]"')
    assert sum("download.pytorch.org" in line for line in installs) == 1


def test_torch_actors_are_placed_on_train_workers_only(cluster):
    # Only train workers advertise the resource that cli/node_roles.py asks for, and the head's job drivers
    # inherit the switch that makes them ask.
    advertised = {name: t["resources"] for name, t in cluster["available_node_types"].items()}
    assert [name for name, resources in advertised.items() if TRAIN_RESOURCE in resources] == ["train_worker"]
    head_start = next(c for c in commands(cluster, "head_start_ray_commands") if " start " in c)
    assert f"{NODE_ROLES_ENV}=1" in head_start.split()
    worker_start = next(c for c in commands(cluster, "worker_start_ray_commands") if " start " in c)
    assert NODE_ROLES_ENV not in worker_start


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
            # The score role's image (base package) for scoring; the train role's for tile training, head included.
            role = "" if "score" in path.name else "-train"
            assert container["image"] == f"tilescope:{VERSION}{role}"
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


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    for line in (" ".join(raw.split()) for raw in text.splitlines()):
        if line.startswith("FROM "):
            stages[line.split()[-1]] = []
        if line and not line.startswith("#"):
            stages[list(stages)[-1]].append(line)
    return stages


def test_one_image_per_role_pins_ray_and_the_wheel_version():
    stages = dockerfile_stages()
    assert list(stages) == ["score", "train"]
    score, train = stages["score"], stages["train"]
    assert score[0] == f"FROM rayproject/ray:{ray.__version__}-py311-cpu AS score"
    assert f"COPY dist/{WHEEL} /tmp/" in score
    assert f"RUN pip install --no-cache-dir /tmp/{WHEEL} && rm /tmp/{WHEEL}" in score
    assert not any(word in line for line in score for word in TRAIN_STACK)  # the score role: base package only
    assert train[0] == "FROM score AS train"
    runs = [line for line in train if line.startswith("RUN ")]
    assert runs == [f"RUN pip install --no-cache-dir {TORCH_CPU}",
                    f'RUN pip install --no-cache-dir "/tmp/{WHEEL}[train]" && rm /tmp/{WHEEL}']
    # Each manifest's build command in its header names the target its image is built from.
    for path in MANIFESTS:
        target = "score" if "score" in path.name else "train"
        assert f"--target {target} -t {'tilescope:' + VERSION + ('' if target == 'score' else '-train')} ." in (
            path.read_text())


def test_scoring_nodes_keep_idle_workers_for_reads_and_writes(cluster):
    # Same rule as a local start (jobs/cli.local_system_config): ~3 idle workers per CPU, not Ray's 1.
    from cli.job_main import local_system_config

    start = [c for c in commands(cluster, "worker_start_ray_commands") if "ray start" in c]
    assert start and all("RAY_num_workers_soft_limit=$((3 * $(nproc) / 2 + 2))" in c for c in start)
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay" / "rayjob-score.yaml").read_text())
    for group in manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        env = {e["name"]: e["value"] for c in group["template"]["spec"]["containers"] for e in c.get("env", [])}
        cpus = int(group["rayStartParams"]["num-cpus"])
        assert int(env["RAY_num_workers_soft_limit"]) == local_system_config(cpus)["num_workers_soft_limit"]
