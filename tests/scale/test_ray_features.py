"""``train probe --ray`` gives the model of a local fit: same images used, same layer,
hyperparameter and warnings, the same training record, thresholds and scores within float
rounding; files that cannot be used are reported the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app
from genprint.io.sources import Item
from tests.backbones.user_checkpoints import save_open_clip_checkpoint
from tests.conftest import textured, write_toy_sources

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("faiss")

runner = CliRunner()
TOLERANCE = 1e-4
"""Thresholds and scores: the actors' features are the local ones up to float rounding (the
backbone runs on other batches, with its own threads)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny open_clip checkpoint and the toy sources, with an empty and a truncated file and
    one image too small for the crop the others fit (left out, with a warning)."""
    root = tmp_path_factory.mktemp("ray-probe")
    sources = write_toy_sources(root)
    ckpt = save_open_clip_checkpoint(root / "clip.pt")
    (sources / "alpha" / "empty.png").write_bytes(b"")
    good = (sources / "beta" / "00.png").read_bytes()
    (sources / "beta" / "trunc.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(textured(np.random.default_rng(3), 20, 20, 5)).save(
        sources / "gamma" / "small.png")
    return sources, ckpt


def train(sources: Path, ckpt: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["train", "probe", "--data", str(sources), "--backbone",
                                 str(ckpt), "--out", str(out), "--no-cache", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_ray_fit_is_the_local_fit(local_ray: None, data: tuple[Path, Path],
                                      tmp_path: Path) -> None:
    sources, ckpt = data
    local = train(sources, ckpt, tmp_path / "local")
    on_ray = train(sources, ckpt, tmp_path / "ray", "--ray", "--ray-actors", "2")
    for key in ("classes", "input_size", "layer", "hp", "n_train", "n_val", "n_skipped",
                "n_train_used", "warnings"):
        assert on_ray[key] == local[key], key
    assert local["n_skipped"] == 2 and local["input_size"] == 32
    assert any("1 image(s) with a side under 32 px" in w for w in local["warnings"])
    for c in local["classes"]:
        assert on_ray["thresholds"][c] == pytest.approx(local["thresholds"][c], abs=TOLERANCE)
    for a, b in zip(on_ray["layers"], local["layers"], strict=True):
        assert a["val_accuracy"] == b["val_accuracy"] and a["chosen"] == b["chosen"]

    m_local, m_ray = genprint.load(tmp_path / "local"), genprint.load(tmp_path / "ray")
    assert m_ray.training_info_["data_digest"] == m_local.training_info_["data_digest"]
    assert np.array_equal(m_ray.training_fingerprints_, m_local.training_fingerprints_)
    images = sorted((sources / "gamma").glob("0*.png"))[:6]
    for a, b in zip(m_ray.attribute(images), m_local.attribute(images), strict=True):
        assert a.label == b.label and a.score == pytest.approx(b.score, abs=TOLERANCE)
        assert a.seen_in_training and b.seen_in_training


def test_the_python_api_reports_the_files_it_could_not_use(
        local_ray: None, data: tuple[Path, Path]) -> None:
    from genprint.methods.fitting import fit_on_items
    from genprint.methods.probe import ProbeAttributor
    from genprint.scale import fit_probe_on_ray

    sources, ckpt = data
    files = sorted(sources.rglob("*.png"))
    train = [Item(p, p.parent.name, "train") for k, p in enumerate(files) if k % 4]
    val = [Item(p, p.parent.name, "val") for k, p in enumerate(files) if not k % 4]
    read, featurised = [], []
    on_ray = ProbeAttributor(backbone=str(ckpt), grid=[1.0], cache=False)
    errors = fit_probe_on_ray(on_ray, train, val, actors=2, on_read=read.append,
                              on_progress=featurised.append)
    local = ProbeAttributor(backbone=str(ckpt), grid=[1.0], cache=False)
    local_errors = fit_on_items(local, train, val)
    assert [(p, e.code) for p, e in errors] == [(p, e.code) for p, e in local_errors]
    assert {e.code for _, e in errors} == {"empty", "truncated"}
    assert all(e.sha256 for p, e in errors if p.name == "trunc.png")
    assert sum(read) == len(files) and sum(featurised) == len(files) - 3
    assert on_ray.fit_used_ == local.fit_used_
    assert np.allclose(on_ray.thresholds_, local.thresholds_, atol=TOLERANCE)


def test_ray_options_need_ray(data: tuple[Path, Path], tmp_path: Path) -> None:
    sources, ckpt = data
    result = runner.invoke(app, ["train", "probe", "--data", str(sources), "--backbone",
                                 str(ckpt), "--out", str(tmp_path / "m"), "--ray-actors", "2"])
    assert result.exit_code == 2 and "go with --ray" in result.output
