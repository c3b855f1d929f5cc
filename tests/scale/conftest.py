"""One local Ray (2 CPUs, no dashboard) for the Ray tests of this package."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package")
def local_ray() -> Iterator[None]:
    """A local Ray for the package's tests (started here unless one is running; then left as
    it was), shut down after the last of them."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    yield
    if started:
        ray.shutdown()
