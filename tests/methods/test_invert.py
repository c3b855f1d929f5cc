"""The `invert` attributor: classes are calibrated generators, scores are p-values, save/load."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import genprint
from genprint.methods.base import METHODS, method_names

FACTORY = textwrap.dedent('''
    import dataclasses
    import torch
    from genprint.world import zoo

    def _tiny(seed):
        spec = dataclasses.replace(zoo.spec("gan-tconv-s0"), width=16, latent_dim=8)
        torch.manual_seed(seed)
        return zoo.ZooGenerator(spec)

    def a():
        return _tiny(0)

    def b():
        return _tiny(1)
''')


@pytest.fixture
def gens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "inv_gens.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield "inv_gens"
    torch.set_num_threads(before)
    sys.modules.pop("inv_gens", None)


def test_invert_attributor(gens: str, tmp_path: Path) -> None:
    from genprint.verify.generators import resolve_one

    assert "invert" in method_names()
    cls = METHODS.get("invert")
    assert cls.demo_test_cap(quick=True) < cls.demo_test_cap(quick=False)
    params = {"calibration_n": 12, "alpha": 0.1,
              "settings": {"steps": 30, "restarts": 2, "check_every": 10, "prune_at": 10},
              "generators": {"a": f"{gens}:a", "b": f"{gens}:b"}}
    model = cls(**params)
    model.fit([], ["a", "b", "real"], [], [])
    assert model.classes_ == ["a", "b"] and list(model.thresholds_) == [0.1, 0.1]
    assert model.training_info_["not_generators"] == ["real"]
    # these tiny untrained generators often draw one solid colour, which inversion refuses to
    # judge (any generator reconstructs it); members with some texture are tested
    from genprint.verify.verifier import is_uniform

    members = [x for x in resolve_one(f"{gens}:b").sample(12, seed=3) if not is_uniform(x)][:2]
    assert len(members) == 2
    rand = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    images = [*members, *rand]
    res = model.attribute_arrays(images)
    assert [r.candidate for r in res[:2]] == ["b", "b"]
    assert res[2].label == "unknown" and res[2].score < 0.1
    model.save(tmp_path / "m")
    again = genprint.load(tmp_path / "m")
    res2 = again.attribute_arrays(images)
    assert [r.scores for r in res2] == [r.scores for r in res]
    with pytest.raises(ValueError, match="at least one known source"):
        cls().fit([], ["real"], [], [])


def test_a_generator_named_in_decomposed_unicode_saves_and_loads(gens: str,
                                                                tmp_path: Path) -> None:
    """Its card keys calibrations by the name as given; the load composes the name (NFC)
    only after the method has read them."""
    import unicodedata

    nfd = unicodedata.normalize("NFD", "\u00fcber")
    model = METHODS.get("invert")(
        calibration_n=12, alpha=0.1, generators={nfd: f"{gens}:a", "b": f"{gens}:b"},
        settings={"steps": 30, "restarts": 2, "check_every": 10, "prune_at": 10})
    model.fit([], [nfd, "b"], [], [])
    model.save(tmp_path / "m")
    assert sorted(genprint.load(tmp_path / "m").classes_) == ["b", "\u00fcber"]


def test_an_image_whose_tested_crop_is_uniform_gets_an_error_row(gens: str) -> None:
    """The whole image has content, the centre crop each generator tests has none: no p-value
    was computed, so the row is an error, not `unknown` with p = 0 for every generator."""
    assert "invert" in method_names()  # fills the registry when this test runs alone
    model = METHODS.get("invert")(
        calibration_n=12, alpha=0.1, generators={"a": f"{gens}:a", "b": f"{gens}:b"},
        settings={"steps": 30, "restarts": 2, "check_every": 10, "prune_at": 10})
    model.fit([], ["a", "b"], [], [])
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    image[32:64, 32:64] = 77
    noisy = np.random.default_rng(2).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    row, other = model.attribute_arrays([image, noisy])
    assert row.error_code == "no_content" and row.label is None and row.scores == {}
    assert "centre 32×32 crop tested by a, b is uniform" in row.error
    assert "whether they made it" in row.error and "could test it" not in row.error
    assert other.error is None and other.label == "unknown" and 0 < other.score < 0.1


def test_an_image_only_some_generators_can_test_is_refused_saying_which() -> None:
    """Generators of different sizes: a 64×64 crop has content where the centre 32×32 has
    none (or the image is below 64×64). The row names who could not test it and who could."""
    from types import SimpleNamespace

    assert "invert" in method_names()
    model = METHODS.get("invert")()
    model.classes_ = ["small", "large"]
    model.verifiers_ = [SimpleNamespace(name="small", generator=SimpleNamespace(resolution=32)),
                        SimpleNamespace(name="large", generator=SimpleNamespace(resolution=64))]
    image = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    image[32:64, 32:64] = 9
    flat = model._untested(image, ["small"])
    assert flat.error_code == "no_content" and np.isnan(flat.scores).all()
    assert "crop tested by small is uniform" in flat.error and "whether it made it" in flat.error
    assert "large could test it" in flat.error and "`genprint verify`" in flat.error
    small = model._untested(image[:48, :48], ["large"])
    assert small.error_code == "too_small"
    assert "smaller than the 64×64 crop of large" in small.error
