"""`genprint train invert`: an invert model from one's own generator, usable by attribute."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genprint.cli.app import app
from tests.verify.test_generators import FACTORY  # `make`: a tiny zoo GAN

runner = CliRunner()


@pytest.fixture
def gens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "tiny_gens.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tiny_gens"
    sys.modules.pop("tiny_gens", None)


def test_train_invert_from_a_factory_and_attribute(gens: str, tmp_path: Path,
                                                   one_torch_thread: None) -> None:
    model = tmp_path / "inv"
    out = runner.invoke(app, ["train", "invert", "--generator", f"mine={gens}:make",
                              "--calibration-n", "20", "--out", str(model), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["classes"] == ["mine"] and summary["calibrations_reused"] == []
    card = json.loads((model / "card.json").read_text())
    assert card["method"] == "invert" and card["generator_specs"] == {"mine": f"{gens}:make"}
    assert card["calibrations"]["mine"]["sha256"]  # tied to the generator's weights

    from tiny_gens import make  # an image the generator made, and one it did not
    own = make().sample(1, seed=5)[0]  # (an own image passes with probability 1 - alpha)
    noise = np.random.default_rng(0).integers(0, 256, own.shape, dtype=np.uint8)
    Image.fromarray(own).save(tmp_path / "own.png")
    Image.fromarray(noise).save(tmp_path / "noise.png")
    out = runner.invoke(app, ["attribute", str(model), str(tmp_path / "own.png"),
                              str(tmp_path / "noise.png"), "--json"])
    assert out.exit_code == 0, out.output
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)}
    assert rows["own.png"]["label"] == "mine" and rows["noise.png"]["label"] == "unknown"


def test_train_invert_refuses_an_alpha_its_calibration_cannot_test(
        gens: str, tmp_path: Path, one_torch_thread: None) -> None:
    out = runner.invoke(app, ["train", "invert", "--generator", f"mine={gens}:make",
                              "--calibration-n", "10", "--out", str(tmp_path / "m")],
                        env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "cannot be tested" in out.output
    assert "--calibration-n 20 or more" in out.output
    assert not (tmp_path / "m").exists()
    for alpha in ("0", "1.5"):
        out = runner.invoke(app, ["train", "invert", "--generator", f"mine={gens}:make",
                                  "--alpha", alpha, "--out", str(tmp_path / "m")],
                            env={"COLUMNS": "300"})
        assert out.exit_code == 2 and "between 0 and 1" in out.output


def test_train_invert_needs_generators(tmp_path: Path) -> None:
    out = runner.invoke(app, ["train", "invert", "--out", str(tmp_path / "m")],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "--generator" in out.output
    out = runner.invoke(app, ["train", "invert", "--generator", "my_pkg:make",
                              "--out", str(tmp_path / "m")], env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "NAME=SPEC" in out.output
    out = runner.invoke(app, ["train", "invert", "--generator", "a=my_pkg:make", "--generator",
                              "b=my_pkg:make", "--out", str(tmp_path / "m")],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "name the same generator" in out.output


def test_train_invert_from_a_benchmark_protocol_reuses_shipped_calibrations(
        tmp_path: Path) -> None:
    from genprint.world.zoo.store import package_weights_dir

    if not (package_weights_dir() / "gan-tconv-s0.calibration.json").is_file():
        pytest.skip("no shipped zoo calibration in this checkout")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "protocols.json").write_text(json.dumps(
        {"all": {"known": ["real", "gan-tconv-s0"], "unknown": ["vae-tconv-s0"]}}))
    out = runner.invoke(app, ["train", "invert", "--bench", str(bench), "--out",
                              str(tmp_path / "m"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["classes"] == ["gan-tconv-s0"] and summary["not_generators"] == ["real"]
    assert summary["calibrations_reused"] == ["gan-tconv-s0"]
