"""The generator zoo: small generators of four families, trained on the simulated cameras.

>>> from genprint.world import zoo
>>> [g["name"] for g in zoo.list_generators()][:2]      # doctest: +SKIP
>>> gen = zoo.load("gan-tconv-s0")                       # doctest: +SKIP
>>> images = gen.sample(16, seed=0)                      # uint8 16×32×32×3

Every generator exposes ``latent_shape``, ``sample_latent(n, seed)``, a differentiable
``decode(z)`` returning images in [0, 1], ``encode(x)`` where it has an encoder, and
``sample(n, seed)``. The catalogue is :data:`ZOO`; the shipped weights and cards live in
``genprint/zoo_weights``, and ``genprint zoo train NAME --out DIR`` writes others, found when
``$GENPRINT_ZOO_DIR`` names ``DIR`` (looked up first).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from genprint.world.zoo.catalogue import ZOO
from genprint.world.zoo.generator import FAMILIES, GeneratorSpec, ZooGenerator
from genprint.world.zoo.store import (
    find_card,
    load_generator,
    read_card,
    train_hint,
    weights_dirs,
)

__all__ = ["FAMILIES", "ZOO", "GeneratorSpec", "ZooGenerator", "list_generators", "load",
           "spec", "untrained", "weights_dirs"]


def spec(name: str) -> GeneratorSpec:
    """The catalogue entry of ``name`` (error lists the known names)."""
    return ZOO.get(name)


def list_generators(trained_only: bool = True) -> list[dict[str, Any]]:
    """Model cards of the zoo (catalogue order). Untrained entries are left out unless asked."""
    out = []
    for name in ZOO.names():
        card_path = find_card(name)
        if card_path is not None:
            out.append(read_card(card_path))
        elif not trained_only:
            out.append({"name": name, **ZOO.get(name).to_dict(), "trained": False})
    return out


@lru_cache(maxsize=32)
def load(name: str) -> ZooGenerator:
    """Load a trained zoo generator (weights checked against the sha256 of its card)."""
    ZOO.get(name)
    card_path = find_card(name)
    if card_path is None:
        raise FileNotFoundError(
            f"zoo generator {name!r} has no trained weights; {train_hint(name)}")
    return load_generator(card_path)


def untrained(name: str) -> ZooGenerator:
    """A randomly initialised generator of the catalogue entry ``name`` (for tests)."""
    return ZooGenerator(ZOO.get(name)).freeze()
