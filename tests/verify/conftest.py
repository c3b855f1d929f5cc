"""Tiny untrained generators for the verify tests (fast on one CPU thread)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genprint.verify.generators import GeneratorHandle
from genprint.world import zoo


def tiny(name: str = "gan-tconv-s0", seed: int = 0, **changes: object) -> GeneratorHandle:
    """A randomly initialised, frozen, small version of a zoo catalogue entry."""
    params: dict[str, object] = {"width": 16, "latent_dim": 8, **changes}
    spec = dataclasses.replace(zoo.spec(name), **params)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    gen = zoo.ZooGenerator(spec).freeze()
    return GeneratorHandle(f"tiny-{name}-{seed}", gen, f"<tiny {name}>")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every verify test runs with one torch thread (``pytestmark`` does not reach from a
    conftest)."""


@pytest.fixture
def tiny_gan() -> GeneratorHandle:
    return tiny()
