"""A tiny trained zoo for world tests: four generators, two training steps each, tiny widths.

It lives in a temporary directory pointed to by ``GENPRINT_ZOO_DIR`` so the tests never depend
on (or touch) the shipped weights.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

TINY_ZOO = ("gan-tconv-s0", "gan-tconv-s1", "gan-bilinear-s0", "ddim-pixel-s0")


def tiny_spec(name: str):
    from genprint.world import zoo

    spec = zoo.spec(name)
    width = 16
    return dataclasses.replace(spec, width=width, steps=2, ae_steps=2 if spec.ae_steps else 0,
                               latent_dim=8, batch_size=4, ddim_steps=2)


@pytest.fixture(scope="session")
def tiny_zoo_dir(tmp_path_factory):
    from genprint.world.zoo.train import train_generator

    out = tmp_path_factory.mktemp("zoo")
    data = torch.rand(8, 3, 32, 32)
    for name in TINY_ZOO:
        train_generator(tiny_spec(name), out, out / "work", data=data)
    return out


@pytest.fixture
def tiny_zoo(tiny_zoo_dir, monkeypatch):
    from genprint.world import zoo

    monkeypatch.setenv("GENPRINT_ZOO_DIR", str(tiny_zoo_dir))
    zoo.load.cache_clear()
    yield tiny_zoo_dir
    zoo.load.cache_clear()
