import dataclasses
import json

import numpy as np
import pytest
import torch

from genprint.world import zoo
from genprint.world.zoo.store import package_weights_dir, sha256_file
from genprint.world.zoo.train import train_generator

from .conftest import tiny_spec


def test_catalogue_has_twelve_generators_in_four_families_with_seed_pairs():
    specs = [zoo.spec(n) for n in zoo.ZOO.names()]
    assert len(specs) >= 12
    assert {s.family for s in specs} >= {"gan", "vae", "ddim", "ldm"}
    assert {s.upsampling for s in specs if s.family == "gan"} == {
        "tconv", "nearest", "bilinear", "pshuffle"}
    pairs = 0
    for a in specs:
        for b in specs:
            if a.name < b.name and dataclasses.replace(a, name="", seed=0) == dataclasses.replace(
                    b, name="", seed=0):
                pairs += 1
    assert pairs >= 2


@pytest.mark.parametrize("name", zoo.ZOO.names())
def test_decode_is_differentiable_and_in_unit_range(name):
    torch.manual_seed(0)
    gen = zoo.ZooGenerator(tiny_spec(name)).freeze()
    z = gen.sample_latent(3, seed=1).requires_grad_(True)
    x = gen.decode(z)
    assert x.shape == (3, 3, 32, 32)
    assert float(x.detach().min()) >= 0.0 and float(x.detach().max()) <= 1.0
    x.square().mean().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert all(p.grad is None for p in gen.parameters())
    assert torch.equal(gen.sample_latent(3, seed=1), z.detach())
    if gen.has_encoder:
        assert gen.encode(x.detach()).shape == (3, *gen.latent_shape)
    else:
        with pytest.raises(NotImplementedError):
            gen.encode(x.detach())


def test_sample_is_uint8_and_deterministic():
    gen = zoo.ZooGenerator(tiny_spec("vae-tconv-s0")).freeze()
    a, b = gen.sample(5, seed=2), gen.sample(5, seed=2)
    assert a.dtype == np.uint8 and a.shape == (5, 32, 32, 3)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["gan-nearest-s0", "ldm-tconv-s0"])
def test_training_is_deterministic_and_resumes_exactly(tmp_path, name):
    spec = dataclasses.replace(tiny_spec(name), steps=4)
    data = torch.rand(8, 3, 32, 32)
    straight = train_generator(spec, tmp_path / "a", tmp_path / "wa", data=data, ckpt_every=2)

    class Stop(Exception):
        pass

    def stop_at_3(done, total, loss):
        if done == spec.ae_steps + 3:
            raise Stop

    with pytest.raises(Stop):
        train_generator(spec, tmp_path / "b", tmp_path / "wb", data=data, ckpt_every=2,
                        on_progress=stop_at_3)
    resumed = train_generator(spec, tmp_path / "b", tmp_path / "wb", data=data, ckpt_every=2)
    assert straight["sha256"] == resumed["sha256"]
    assert straight["training_steps"] == spec.steps + spec.ae_steps
    # the card says what a rebuild must match: the training pixels, the command, the libraries
    import hashlib

    assert straight["training_data_sha256"] == hashlib.sha256(data.numpy().tobytes()).hexdigest()
    assert straight["command"] == f"genprint zoo train {name} --threads 1"
    assert {"genprint_version", "torch", "numpy"} <= set(straight["created"])


def test_tampered_weights_are_refused(tiny_zoo):
    path = tiny_zoo / "gan-tconv-s0.safetensors"
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-8] + b"\0" * 8)
        with pytest.raises(ValueError, match="sha256"):
            zoo.load("gan-tconv-s0")
    finally:
        path.write_bytes(original)


def test_untrained_generator_gives_a_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPRINT_ZOO_DIR", str(tmp_path))
    zoo.load.cache_clear()
    if (package_weights_dir() / "gan-nearest-s0.json").exists():
        pytest.skip("shipped weights present")
    with pytest.raises(FileNotFoundError, match="genprint zoo train"):
        zoo.load("gan-nearest-s0")


def test_shipped_weights_match_their_cards_and_sample():
    cards = sorted(package_weights_dir().glob("*.json"))
    cards = [c for c in cards if not c.name.endswith(".calibration.json")]
    if not cards:
        pytest.skip("no shipped zoo weights in this checkout")
    for path in cards:
        card = json.loads(path.read_text())
        assert sha256_file(path.parent / card["file"]) == card["sha256"], path.name
    total = sum((package_weights_dir() / json.loads(p.read_text())["file"]).stat().st_size
                for p in cards)
    assert total < 40 * 2**20
    zoo.load.cache_clear()
    gen = zoo.load(json.loads(cards[0].read_text())["name"])
    imgs = gen.sample(4, seed=0)
    assert imgs.shape == (4, gen.resolution, gen.resolution, 3)
    assert imgs.std() > 5  # not a constant image
