"""The `metric` method's enrolment separators: fitting, the decision rule, storage."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import genprint
from genprint.methods import metric_refs as refs
from genprint.methods.metric import MetricAttributor
from genprint.storage.model_dir import CARD_NAME, ModelFormatError, sha256_file
from tests.conftest import rewrite_card, textured
from tests.methods.test_metric import TINY, toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> MetricAttributor:
    torch.set_num_threads(1)
    return MetricAttributor(**TINY, epochs=4, refs_per_class=1).fit(*toy(20, 0), *toy(8, 1))


def cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    return refs.normalise(centre[None, :] + rng.normal(0, spread, (n, len(centre))))


def test_separator_claims_the_new_source_and_not_the_others() -> None:
    rng = np.random.default_rng(0)
    a, b, new = np.eye(8)[0], np.eye(8)[1], refs.normalise(np.eye(8)[0] + np.eye(8)[2])
    others = np.concatenate([cluster(rng, a, 200, 0.2), cluster(rng, b, 200, 0.2)])
    sep = refs.fit_separator(others, cluster(rng, new, 10, 0.2))
    assert sep.shape == (9,)
    seps = np.stack([np.full(9, np.nan), sep])  # source 0 has no separator
    fresh_new = refs.separator_margins(cluster(rng, new, 100, 0.2), seps)
    fresh_a = refs.separator_margins(cluster(rng, a, 100, 0.2), seps)
    assert np.all(fresh_new[:, 0] == -np.inf)
    assert np.mean(fresh_new[:, 1] > 0) > 0.9
    assert np.mean(fresh_a[:, 1] > 0) < 0.1
    with pytest.raises(ValueError, match="needs images"):
        refs.fit_separator(others, others[:0])


def test_a_claim_only_recovers_unknown_images() -> None:
    # trained 0 and 1 (thresholds 1.0), enrolled 2 and 3 (threshold 0.5)
    d = np.array([[0.5, 2.0, 0.9, 2.0],   # trained 0 accepts; enrolled 2 claims → still 0
                  [1.5, 2.0, 0.9, 2.0],   # nothing accepts; enrolled 2 claims → 2
                  [1.5, 2.0, 0.9, 2.0],   # nothing accepts; no claim → unknown
                  [1.5, 2.0, 0.7, 0.6],   # 2 and 3 claim → 3 (0.6/0.5 < 0.7/0.5)
                  [1.5, 2.0, 0.3, 0.9]])  # 2 accepts by distance, 3 claims → 2
    t = np.array([1.0, 1.0, 0.5, 0.5])
    enrolled = np.array([False, False, True, True])
    ninf = -np.inf
    m = np.array([[ninf, ninf, 1.0, -1.0], [ninf, ninf, 0.5, -1.0], [ninf, ninf, -1.0, -1.0],
                  [ninf, ninf, 1.0, 1.0], [ninf, ninf, -1.0, 1.0]])
    assert refs.decide_sources(d, t, enrolled).tolist() == [0, -1, -1, -1, 2]
    assert refs.decide_sources(d, t, enrolled, m).tolist() == [0, 2, -1, 3, 2]
    # a zero threshold (enrolled from identical images) still picks a claiming source
    zero = refs.decide_sources(np.array([[1.5, 2.0, 0.9, 0.8]]), np.array([1.0, 1.0, 0.0, 0.0]),
                               enrolled, np.array([[ninf, ninf, 1.0, -1.0]]))
    assert zero.tolist() == [2]
    # a margin on a trained source is ignored
    m_trained = np.full_like(m, ninf)
    m_trained[:, 1] = 5.0
    assert refs.decide_sources(d, t, enrolled, m_trained).tolist() == [0, -1, -1, -1, 2]


def test_samples_are_kept_per_source_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refs, "SAMPLES_PER_SOURCE", 5)
    m = MetricAttributor(**TINY, epochs=1, refs_per_class=1).fit(*toy(4, 0), *toy(3, 1))
    # 4 training + 3 validation images per source, at most 5 kept of each
    assert np.bincount(m.sample_sources_).tolist() == [5, 5, 5]
    dim = m.references_.shape[1]  # the embedding joined to the residual statistics
    assert m.samples_.shape == (15, dim) and dim == TINY["embedding_dim"] + 60
    assert np.isnan(m.separators_).all() and m.separators_.shape == (3, dim + 1)
    assert refs.sample_subset(np.array([0, 0, 1]), 5, 0).tolist() == [0, 1, 2]


def test_enrolment_fits_a_separator_and_leaves_the_others(model: MetricAttributor) -> None:
    m = copy.deepcopy(model)
    rng = np.random.default_rng(3)
    n_samples = len(m.samples_)
    first = m.enroll([textured(rng, 32, 32, 5) for _ in range(6)], "p5", separator=True)
    assert first["separator"].startswith("logistic regression")
    assert np.isnan(m.separators_[:3]).all() and np.isfinite(m.separators_[3]).all()
    assert len(m.samples_) == n_samples + 6 and np.sum(m.sample_sources_ == 3) == 6
    sep_p5 = m.separators_[3].copy()
    m.enroll([textured(rng, 32, 32, 7) for _ in range(6)], "p7", separator=True)
    np.testing.assert_array_equal(m.separators_[3], sep_p5)
    # the new images are claimed by their separator
    fresh = m.embed([textured(rng, 32, 32, 7) for _ in range(8)])
    assert np.mean(refs.separator_margins(fresh, m.separators_)[:, 4] > 0) >= 0.75


def test_the_separator_is_opt_in(model: MetricAttributor) -> None:
    m = copy.deepcopy(model)
    record = m.enroll([textured(np.random.default_rng([1, k]), 32, 32, 5) for k in range(4)], "p5")
    assert record["separator"] == "none (off by default)"
    assert np.isnan(m.separators_).all() and np.sum(m.sample_sources_ == 3) == 4
    assert all(p.margins is None for p in m.predict_arrays(toy(1, 2)[0]))


def test_attributions_say_which_rule_accepted(model: MetricAttributor) -> None:
    m = copy.deepcopy(model)
    rng = np.random.default_rng(4)
    images = toy(2, 6)[0]
    m.thresholds_[0] = -1e-9  # the first source accepts nothing: its images become unknown
    before = m.attribute_arrays(images)
    assert {r.accepted_by for r in before if not r.is_unknown} == {"threshold"}
    assert all(r.accepted_by is None for r in before if r.is_unknown)
    m.enroll([textured(rng, 32, 32, 5) for _ in range(4)], "p5", separator=True)
    m.thresholds_[-1] = -1e-9  # the distance rule takes nothing
    m.separators_[-1] = np.r_[np.zeros(m.references_.shape[1]), 1.0]  # claims everything
    after = m.attribute_arrays(images)
    for b, a in zip(before, after, strict=True):  # only the unknown images change
        if b.is_unknown:
            assert a.label == "p5" and a.accepted_by == "separator" and a.score < a.threshold
        else:
            assert (a.label, a.accepted_by) == (b.label, "threshold")
    assert any(b.is_unknown for b in before)


def test_the_attribute_table_marks_separator_labels(model: MetricAttributor,
                                                   tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genprint.cli.app import app

    m = copy.deepcopy(model)
    m.enroll([textured(np.random.default_rng([4, k]), 32, 32, 5) for k in range(4)], "p5",
             separator=True)
    m.thresholds_[:] = -1e-9  # nothing is accepted by distance ...
    m.separators_[-1] = np.r_[np.zeros(m.references_.shape[1]), 1.0]  # ... p5 claims it all
    m.save(tmp_path / "m")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(toy(1, 5)[0][0]).save(image)
    out = CliRunner().invoke(app, ["attribute", str(tmp_path / "m"), str(image)],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "p5 (separator)" in out.output
    rows = CliRunner().invoke(app, ["attribute", str(tmp_path / "m"), str(image), "--json"])
    assert json.loads(rows.stdout)[0]["accepted_by"] == "separator"


def test_separators_round_trip_and_are_checked_on_load(model: MetricAttributor,
                                                       tmp_path: Path) -> None:
    m = copy.deepcopy(model)
    m.enroll([textured(np.random.default_rng([8, k]), 32, 32, 5) for k in range(5)], "p5",
             separator=True)
    m.save(tmp_path / "model")
    loaded = genprint.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.separators_, m.separators_)
    np.testing.assert_array_equal(loaded.samples_, m.samples_)
    np.testing.assert_array_equal(loaded.sample_sources_, m.sample_sources_)
    imgs = toy(3, 9, size=48)[0]
    assert ([r.to_dict() for r in m.attribute_arrays(imgs)]
            == [r.to_dict() for r in loaded.attribute_arrays(imgs)])

    def broken(name: str, edit) -> Path:
        bad = tmp_path / name
        shutil.copytree(tmp_path / "model", bad)
        edit(bad)
        _refresh_checksums(bad)
        return bad

    def on_trained(folder: Path) -> None:
        seps = np.load(folder / "separators.npy")
        seps[0] = 1.0
        np.save(folder / "separators.npy", seps)

    def rows(folder: Path) -> None:
        np.save(folder / "separators.npy", np.load(folder / "separators.npy")[:-1])

    def out_of_range(folder: Path) -> None:
        src = np.load(folder / "sample_sources.npy")
        src[0] = 99
        np.save(folder / "sample_sources.npy", src)

    cases = {"on-trained": (on_trained, "belongs to a trained source"),
             "rows": (rows, "do not fit the model"),
             "range": (out_of_range, "do not fit the model"),
             "missing": (lambda f: (f / "samples.npy").unlink(), "only some of")}
    for name, (edit, message) in cases.items():
        with pytest.raises(ModelFormatError, match=message):
            genprint.load(broken(name, edit))


def test_a_model_without_samples_enrols_without_a_separator(model: MetricAttributor,
                                                            tmp_path: Path) -> None:
    model.save(tmp_path / "old")
    for name in ("samples", "sample_sources", "separators", "sample_validation"):
        (tmp_path / "old" / f"{name}.npy").unlink()
    _refresh_checksums(tmp_path / "old")
    old = genprint.load(tmp_path / "old")
    assert old.samples_ is None
    record = old.enroll([textured(np.random.default_rng([2, k]), 32, 32, 5) for k in range(4)],
                        "p5",
                        separator=True)
    assert record["separator"].startswith("none: the model keeps no sample")
    assert old.samples_ is None and old.separators_ is None
    old.save(tmp_path / "old-enrolled")  # still saved, and loads, without samples
    assert genprint.load(tmp_path / "old-enrolled").samples_ is None
    assert all(r.accepted_by in (None, "threshold")
               for r in old.attribute_arrays(toy(2, 3)[0]))


def _refresh_checksums(folder: Path) -> None:
    """Rewrite the card's file list after a test edited the model directory's files."""
    card = json.loads((folder / CARD_NAME).read_text())
    card["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
                     if p.name != CARD_NAME}
    rewrite_card(folder / CARD_NAME, card)
