"""Resolving generator specs: zoo names, user factories, lists, and clear errors."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from genprint.verify import generators as G
from genprint.verify.generators import GeneratorSpecError, resolve, resolve_one

FACTORY = textwrap.dedent('''
    import dataclasses
    import functools
    import torch
    from genprint.world import zoo

    def make():
        spec = dataclasses.replace(zoo.spec("gan-tconv-s0"), width=16, latent_dim=8)
        torch.manual_seed(0)
        return zoo.ZooGenerator(spec)

    class Plain:
        """Not a zoo model: only the interface, no resolution or name attribute."""
        latent_shape = (4,)
        def sample_latent(self, n, seed):
            return torch.randn((n, 4), generator=torch.Generator().manual_seed(seed))
        def decode(self, z):
            return torch.sigmoid(z.sum(1)).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)

    def plain():
        return Plain()

    def no_decode():
        return object()

    def broken():
        raise RuntimeError("weights missing")

    not_callable = 3

    class Bad(Plain):
        def __init__(self, kind, seed=0):
            self.kind = kind
            torch.manual_seed(seed)
            self.net = torch.nn.Linear(4, 4)
        def sample_latent(self, n, seed):
            z = super().sample_latent(n, seed)
            return z.numpy() if self.kind == "numpy" else z
        def decode(self, z):
            x = torch.sigmoid(self.net(z).sum(1)).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
            if self.kind == "tanh":  # a common GAN output range, [-1, 1]
                return torch.tanh(4 * self.net(z)).repeat(1, 12)[:, :48].view(-1, 3, 4, 4)
            if self.kind == "hwc":
                return x.permute(0, 2, 3, 1)
            if self.kind == "gray":
                return x[:, :1]
            if self.kind == "nograd":
                return x.detach()
            if self.kind == "batch1":  # ignores the batch
                return x[:1]
            if self.kind == "f64":
                return x.double()
            return x

    bad_tanh, bad_hwc, bad_gray, bad_nograd, bad_numpy, bad_batch1, bad_f64 = (
        functools.partial(Bad, kind) for kind in
        ("tanh", "hwc", "gray", "nograd", "numpy", "batch1", "f64"))
    good = functools.partial(Bad, "good")
    good_other_weights = functools.partial(Bad, "good", seed=1)

    def bad_bf16():  # weights in bfloat16 (numpy has no such type): hashed all the same
        gen = Bad("good")
        gen.extra = torch.nn.Linear(2, 2).to(torch.bfloat16)
        return gen

''')


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "my_gens.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_gens"
    sys.modules.pop("my_gens", None)


def test_user_factory(user_module: str, tmp_path: Path) -> None:
    h = resolve_one(f"{user_module}:make")
    assert h.name == "gan-tconv-s0" and h.resolution == 32 and h.latent_shape == (8,)
    assert not any(p.requires_grad for p in h.obj.parameters())  # frozen
    assert h.calibration_path == tmp_path / "my_gens.make.calibration.json"
    p = resolve_one(f"{user_module}:plain")
    assert p.name == f"{user_module}:plain" and p.resolution == 8 and not p.has_encoder
    assert not p.is_diffusion and p.sample(2, 0).shape == (2, 8, 8, 3)
    both = resolve(f"{user_module}:make, {user_module}:plain")
    assert [h.spec for h in both] == [f"{user_module}:make", f"{user_module}:plain"]


@pytest.mark.parametrize(("spec", "message"), [
    ("zoo:nope", "unknown zoo generator 'nope'; known: "),
    ("nomodule:f", "cannot import module 'nomodule'"),
    ("os:path", "'path' is a module, not a factory"),
    ("os:nothing_here", "has no attribute 'nothing_here'"),
    ("just-a-name", "bad generator spec"),
    ("", "empty generator spec"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(GeneratorSpecError, match=message):
        resolve(spec)


@pytest.mark.parametrize(("attr", "message"), [
    ("no_decode", "has no latent_shape, sample_latent, decode"),
    ("broken", r"calling broken\(\) failed: RuntimeError: weights missing"),
    ("not_callable", r"is not callable \(it is an object of type int\)"),
])
def test_bad_factories(user_module: str, attr: str, message: str) -> None:
    with pytest.raises(GeneratorSpecError, match=message):
        resolve_one(f"{user_module}:{attr}")


@pytest.mark.parametrize(("attr", "message"), [
    ("bad_tanh", r"values in \[-.*images must be in \[0, 1\]"),
    ("bad_hwc", r"expected 2×3×H×W \(one image per latent, channels first"),
    ("bad_gray", "expected 2×3×H×W"),
    ("bad_nograd", "gradients do not flow"),
    ("bad_numpy", "must return a torch tensor, got ndarray"),
    ("bad_batch1", "one image per latent"),
    ("bad_f64", "float64"),
])
def test_generators_that_break_the_contract_are_refused(user_module: str, attr: str,
                                                        message: str) -> None:
    with pytest.raises(GeneratorSpecError, match=message):
        resolve_one(f"{user_module}:{attr}")


def test_a_calibration_is_tied_to_its_generators_weights(user_module: str,
                                                         tmp_path: Path) -> None:
    from genprint.verify.calibration import CalibrationError, calibrate
    from genprint.verify.inversion import InversionSettings

    assert resolve_one(f"{user_module}:bad_bf16").sha256  # bfloat16 weights are hashed too
    good = resolve_one(f"{user_module}:good")
    assert good.sha256 is not None and good.sha256 == resolve_one(f"{user_module}:good").sha256
    other = resolve_one(f"{user_module}:good_other_weights")
    assert other.sha256 != good.sha256
    settings = InversionSettings(steps=2, restarts=1)
    cal = calibrate(good, 4, settings)
    cal.check(good, settings)
    with pytest.raises(CalibrationError, match="other weights"):
        cal.check(other, settings)
    cal.sha256 = None  # a calibration without a checksum (older genprint): trusted, with a
    with pytest.warns(UserWarning, match="records no weights checksum"):  # warning
        cal.check(good, settings)
    # ... and the generator's name must match
    with pytest.raises(CalibrationError, match="made for the generator"):
        cal.check(resolve_one(f"{user_module}:plain"), settings)


def test_zoo_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    from genprint.world.zoo import store

    monkeypatch.setattr(store, "find_card", lambda name: None)
    with pytest.raises(GeneratorSpecError, match="no trained weights yet"):
        resolve_one("zoo:vae-tconv-s0")
    monkeypatch.setattr(G, "trained_zoo_names", lambda: ["gan-tconv-s0", "vae-tconv-s0"])
    assert G.split_specs("zoo:*,zoo:gan-tconv-s0,x:y") == [
        "zoo:gan-tconv-s0", "zoo:vae-tconv-s0", "x:y"]
    monkeypatch.setattr(G, "trained_zoo_names", list)
    with pytest.raises(GeneratorSpecError, match="no trained weights"):
        G.split_specs("zoo:*")
