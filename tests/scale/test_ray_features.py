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


def items(sources: Path) -> tuple[list[Item], list[Item]]:
    files = sorted(sources.rglob("*.png"))
    train = [Item(p, p.parent.name, "train") for k, p in enumerate(files) if k % 4]
    val = [Item(p, p.parent.name, "val") for k, p in enumerate(files) if not k % 4]
    return train, val


@pytest.mark.parametrize("options", [{}, {"pad": "reflect", "input_size": 48, "per_class": 12}])
def test_the_python_api_reports_the_files_it_could_not_use(
        local_ray: None, data: tuple[Path, Path], options: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from genprint.methods.fitting import fit_on_items
    from genprint.methods.probe import ProbeAttributor
    from genprint.scale import fit_probe_on_ray

    sources, ckpt = data
    train, val = items(sources)
    local = ProbeAttributor(backbone=str(ckpt), grid=[1.0], cache=False, **options)
    local_errors = fit_on_items(local, train, val)

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were extracted on the driver, not by the Ray actors")

    monkeypatch.setattr(ProbeAttributor, "extract", not_here)
    read, featurised = [], []
    on_ray = ProbeAttributor(backbone=str(ckpt), grid=[1.0], cache=False, **options)
    errors = fit_probe_on_ray(on_ray, train, val, actors=2, on_read=read.append,
                              on_progress=featurised.append)
    assert [(p, e.code) for p, e in errors] == [(p, e.code) for p, e in local_errors]
    assert {e.code for _, e in errors} == {"empty", "truncated"}
    assert all(e.sha256 for p, e in errors if p.name == "trunc.png")
    assert sum(read) == len(train) + len(val)
    assert sum(featurised) == len(on_ray.fit_used_[0]) + len(on_ray.fit_used_[1])
    assert on_ray.fit_used_ == local.fit_used_
    assert on_ray.backbone_spec_ == local.backbone_spec_
    assert on_ray.training_info_ == local.training_info_
    assert np.allclose(on_ray.thresholds_, local.thresholds_, atol=TOLERANCE)


PLUGIN = """
import os
from pathlib import Path
import torch
from genprint.backbones.base import BACKBONES
from genprint.backbones.forensic_cnn import ForensicCNN, ForensicCNNConfig

HOW = Path({how!r})

class Failing(ForensicCNN):
    def forward_features(self, x):
        if os.getpid() != {driver}:  # in the Ray workers only; how: HOW's text
            if HOW.read_text() == "die":
                os._exit(1)
            raise RuntimeError("the forward pass failed")
        return super().forward_features(x)

@BACKBONES.register("failing-cnn")
def failing(input_size=32):
    torch.manual_seed(0)
    return Failing(ForensicCNNConfig(16, input_size, 4, 1, 3, 5)).eval()
"""


@pytest.fixture(scope="module")
def failing_plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plugin registering ``failing-cnn``, whose forward pass fails in Ray workers, and the
    file that says how (``die`` or ``raise``); imported once by the driver."""
    import os

    from genprint.plugins import load_plugin

    folder = tmp_path_factory.mktemp("plugin")
    plugin, how = folder / "failing_cnn.py", folder / "how.txt"
    plugin.write_text(PLUGIN.format(how=str(how), driver=os.getpid()))
    load_plugin(str(plugin))
    return plugin, how


@pytest.mark.parametrize(("how", "message"), [
    ("raise", "failed extracting features: RuntimeError: the forward pass failed"),
    ("die", "a Ray worker died")])
def test_a_worker_that_fails_or_dies_stops_the_fit_with_a_clear_error(
        local_ray: None, data: tuple[Path, Path], failing_plugin: tuple[Path, Path], how: str,
        message: str) -> None:
    """Never a hang (Ray would restart a dead worker and retry its batch without end), never
    Ray's traceback."""
    from genprint.methods.probe import ProbeAttributor
    from genprint.scale import ScaleError, fit_probe_on_ray

    plugin, how_file = failing_plugin
    how_file.write_text(how)
    train, val = items(data[0])
    with pytest.raises(ScaleError, match=message):
        fit_probe_on_ray(ProbeAttributor(backbone="failing-cnn", cache=False), train, val,
                         actors=1, plugins=[str(plugin)])


def test_a_file_changed_between_the_passes_stops_the_ray_fit(
        local_ray: None, data: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from genprint.methods.probe import ProbeAttributor
    from genprint.scale import ScaleError, fit_probe_on_ray

    sources = tmp_path / "copy"
    shutil.copytree(data[0], sources)
    train, val = items(sources)
    victim = train[5].path
    read: list[int] = []

    def change_after_the_reading_pass(n: int) -> None:
        read.append(n)
        if sum(read) == len(train) + len(val):
            Image.fromarray(textured(np.random.default_rng(7), 36, 40, 2)).save(victim)

    with pytest.raises(ScaleError, match=f"{victim.name} has other pixels in the second pass"):
        fit_probe_on_ray(ProbeAttributor(backbone=str(data[1]), cache=False), train, val,
                         actors=2, on_read=change_after_the_reading_pass)


def test_a_node_that_reads_a_file_otherwise_stops_the_fit(data: tuple[Path, Path]) -> None:
    """A file a worker could not find (a node without the mount) but this machine reads is a
    problem of the cluster, not a bad file to leave out."""
    from genprint.scale import ScaleError
    from genprint.scale.ray_features import _file_reads, _ReadSettings

    path = data[0] / "alpha" / "00.png"
    settings = _ReadSettings(min_size=1, max_pixels=10**8, cpus=1, plugins=(), versions={})
    row = {"error_code": "not_found", "error_reason": "no such file", "sha256": None,
           "worker": "a Ray worker on node-7 (pid 1)", "shape": None, "fingerprint": None}
    with pytest.raises(ScaleError,
                       match=r"node-7 \(pid 1\) could not use .* but this machine reads it"):
        _file_reads([row], [path], settings)
    # the same error for a file this machine cannot find either is a skipped file
    missing = data[0] / "alpha" / "gone.png"
    [read] = _file_reads([row], [missing], settings)
    assert read.error is not None and read.error.code == "not_found"


def test_rows_are_placed_by_their_index_whatever_order_they_arrive_in() -> None:
    import pyarrow as pa

    from genprint.scale import ScaleError
    from genprint.scale.ray_features import _feature_arrays, _read_rows

    def batch(indices: list[int]) -> pa.Table:
        feats = np.array([[i, -i] for i in indices], np.float32)
        return pa.table({"index": indices, "layer_000": pa.FixedSizeListArray.from_arrays(
            pa.array(feats.reshape(-1)), 2)})

    [layer] = _feature_arrays(iter([batch([3, 1]), batch([0]), batch([2])]), 4, None)
    assert layer[:, 0].tolist() == [0, 1, 2, 3] and layer[:, 1].tolist() == [0, -1, -2, -3]
    with pytest.raises(ScaleError, match="twice"):
        _feature_arrays(iter([batch([1, 0]), batch([1])]), 3, None)
    with pytest.raises(ScaleError, match="for 2 of 3 files"):
        _feature_arrays(iter([batch([1, 0])]), 3, None)
    rows = _read_rows(iter([pa.table({"index": [1, 0], "x": ["b", "a"]})]), 2, None)
    assert [r["x"] for r in rows] == ["a", "b"]


def test_ray_options_need_ray(data: tuple[Path, Path], tmp_path: Path) -> None:
    sources, ckpt = data
    result = runner.invoke(app, ["train", "probe", "--data", str(sources), "--backbone",
                                 str(ckpt), "--out", str(tmp_path / "m"), "--ray-actors", "2"])
    assert result.exit_code == 2 and "go with --ray" in result.output
