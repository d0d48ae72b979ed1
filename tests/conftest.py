"""Fixtures shared by every tier: a real S3 server (moto's server mode) on loopback, and buckets in it."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A moto S3 server on 127.0.0.1, spoken to over HTTP; AWS credentials set to throwaway values."""
    from moto.server import ThreadedMotoServer

    os.environ.update({
        "AWS_ACCESS_KEY_ID": "tilescope-test-key",
        "AWS_SECRET_ACCESS_KEY": "tilescope-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    })
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket for one test."""
    import boto3

    name = f"tilescope-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def pytest_collection_modifyitems(config, items) -> None:
    """Every test under tests/integration/ carries the `integration` mark (`-m "not integration"` runs the unit
    tier alone), and every test under tests/reliability/ `integration` and `reliability` (`-m reliability`
    runs the fault and bad-input suite alone). Marked here by path: a pytestmark in a conftest.py has no
    effect."""
    integration = os.path.join(REPO, "tests", "integration") + os.sep
    reliability = os.path.join(REPO, "tests", "reliability") + os.sep
    for item in items:
        if str(item.path).startswith(integration):
            item.add_marker(pytest.mark.integration)
        if str(item.path).startswith(reliability):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.reliability)
