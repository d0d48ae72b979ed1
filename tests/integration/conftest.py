"""Integration tier: a module-scoped local Ray (2 CPUs) beside the S3 server from tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def local_ray(s3_endpoint):
    """Started after the S3 server so that Ray's workers inherit its credentials and endpoint."""
    import os

    import ray

    os.environ["TILESCOPE_S3_ENDPOINT"] = s3_endpoint

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """A small synthetic archive and two INT8 model artifacts (different seeds) of a tiny CNN at 64 px."""
    from jobs import quantize, synth, train

    root = tmp_path_factory.mktemp("models")
    archive = str(root / "archive")
    synth.run(synth.SynthConfig(out=archive, n_images=80, size=128, shards=2, seed=3))
    models = []
    for seed in (0, 1):
        ckpt, model = str(root / f"ckpt{seed}"), str(root / f"model{seed}")
        train.run(train.TrainConfig(archive=archive, out=ckpt, backbone="dwsep_cnn", input_size=64, epochs=1,
                                    batch_size=16, seed=seed))
        quantize.run(quantize.QuantizeConfig(checkpoint=ckpt, archive=archive, out=model, calibration_size=24,
                                             eval_size=16, seed=seed, recipe="histogram-fast",
                                             allow_over_budget=True))
        models.append(model)
    return {"archive": archive, "models": models}
