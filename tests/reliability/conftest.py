"""Reliability tier: the integration fixtures (a module-scoped local Ray, the moto S3 server, tiny INT8
models) reused for fault and bad-input cases. Every test here is marked `reliability` by path."""

from __future__ import annotations

from tests.integration.conftest import local_ray, tiny_models  # noqa: F401  (fixtures)
