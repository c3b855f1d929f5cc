"""`genprint calibrate`: a model's thresholds set again under given conditions, as a new model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app
from tests.cli.test_eval_cli import _make_bench, _train

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calibrate")
    bench = _make_bench(root / "bench")
    return {"bench": bench, "model": _train(bench, "all", root / "model")}


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_calibrate_clean_gives_the_training_thresholds_and_noise_widens_them(
        world: dict[str, Path], tmp_path: Path) -> None:
    model, bench = world["model"], world["bench"]
    before = genprint.load(model)
    out = runner.invoke(app, ["calibrate", str(model), "--bench", str(bench), "--perturb",
                              "none", "--out", str(tmp_path / "clean"), "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["validation_images_are_the_models"] is True
    assert record["conditions"] == ["none"] and record["skipped"] == []
    assert {s["n_images"] for s in record["sources"].values()} == {4}
    clean = genprint.load(tmp_path / "clean")
    np.testing.assert_allclose(clean.thresholds_, before.thresholds_, rtol=0, atol=1e-6)
    assert clean.model_sha256_ != before.model_sha256_  # a new model, with its record

    out = runner.invoke(app, ["calibrate", str(model), "--bench", str(bench), "--perturb",
                              "none", "--perturb", "noise", "--out", str(tmp_path / "noisy")],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    said = _flat(out.output)
    assert "calibrating on the model's own 12 validation images" in said
    assert "thresholds recalibrated under none, noise" in said
    noisy = genprint.load(tmp_path / "noisy")
    assert (noisy.thresholds_ <= before.thresholds_ + 1e-12).all()
    assert noisy.training_info_["recalibrated"][-1]["conditions"] == ["none", "noise"]
    assert genprint.load(model).model_sha256_ == before.model_sha256_  # MODEL left as it was
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "noisy"), "--bench", str(bench),
                                    "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["thresholds_recalibrated_under"] == [["none", "noise"]]
    for name, phrase in ((tmp_path / "noisy", ("the model's thresholds, recalibrated on "
                          "validation data under none, noise")),
                         (model, "the thresholds set on clean validation data")):
        shown = runner.invoke(app, ["eval", str(name), "--bench", str(bench), "--perturb",
                                    "noise", "--report", str(tmp_path / "r.html")],
                              env={"COLUMNS": "250"})
        assert shown.exit_code == 0, shown.output
        flat = _flat(shown.output)
        assert f"robustness ({phrase})" in flat
        assert "known given source" in flat and "unknown called unknown" in flat
        page = _flat((tmp_path / "r.html").read_text(encoding="utf-8").replace("&#x27;", "'"))
        assert f"the answers use {phrase} under every condition" in page
        assert "known given their source" in page
    from genprint.serve.app import model_summary
    from genprint.serve.limits import ServeLimits

    described = model_summary(noisy, ServeLimits())
    assert described["recalibrated_under"] == [["none", "noise"]]
    assert "recalibrated under none, noise" in described["threshold_rule"]
    assert model_summary(before, ServeLimits())["recalibrated_under"] == []


def test_calibrate_refuses_bad_uses_before_writing(world: dict[str, Path],
                                                   tmp_path: Path) -> None:
    model, bench = str(world["model"]), str(world["bench"])
    cases = [
        (["--perturb", "jpeg12"], "--perturb"),
        (["--perturb", "none", "--out", str(Path(model) / "inner")], "inside the model folder"),
        (["--perturb", "none", "--protocol", "all", "--data", bench], "--protocol"),
    ]
    for extra, message in cases:
        args = ["calibrate", model, "--bench", bench, *extra]
        if "--out" not in extra:
            args += ["--out", str(tmp_path / "x")]
        if "--data" in extra:
            args.remove("--bench")
            args.remove(bench)
        out = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert out.exit_code == 2 and message in _flat(out.output), (extra, out.output)
    assert not (tmp_path / "x").exists() and not (Path(model) / "inner").exists()
    same = runner.invoke(app, ["calibrate", model, "--bench", bench, "--perturb", "none",
                               "--out", model, "--overwrite"], env={"COLUMNS": "200"})
    assert same.exit_code == 2 and "give --out a new directory" in _flat(same.output)
    genprint.load(model)


def test_an_older_card_is_checked_by_its_whole_data_digest(world: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """A card without the validation digest (saved before it was recorded) is checked by the
    digest of every training and validation picture; other validation images are flagged."""
    import shutil

    from tests.conftest import rewrite_card

    old = tmp_path / "old"
    shutil.copytree(world["model"], old)
    card = json.loads((old / "card.json").read_text())
    del card["training"]["val_data_digest"]
    rewrite_card(old / "card.json", card)
    out = runner.invoke(app, ["calibrate", str(old), "--bench", str(world["bench"]),
                              "--perturb", "none", "--out", str(tmp_path / "a"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["validation_images_are_the_models"] is True
    out = runner.invoke(app, ["calibrate", str(world["model"]), "--bench", str(world["bench"]),
                              "--protocol", "pair", "--perturb", "none", "--out",
                              str(tmp_path / "b")], env={"COLUMNS": "200"})
    said = _flat(out.output)
    assert out.exit_code == 0 and "are not the ones the model was fitted with" in said


def test_data_split_at_training_is_found_from_the_card(tmp_path: Path,
                                                       toy_sources: Path) -> None:
    """A model trained on --data without a split drew its validation images (--val-fraction,
    --seed); calibrate draws the same ones by default, and says when other ones are drawn."""
    model = tmp_path / "m"
    out = runner.invoke(app, ["train", "baseline", "--data", str(toy_sources), "--out",
                              str(model), "--val-fraction", "0.25", "--seed", "3", "--json"])
    assert out.exit_code == 0, out.output
    trained = genprint.load(model)
    assert trained.training_info_["split_drawn"] == {"val_fraction": 0.25, "seed": 3}
    out = runner.invoke(app, ["calibrate", str(model), "--data", str(toy_sources), "--perturb",
                              "none", "--out", str(tmp_path / "c"), "--json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["validation_images_are_the_models"] is True
    assert {s["n_images"] for s in record["sources"].values()} == {6}  # a quarter of 24
    np.testing.assert_allclose(genprint.load(tmp_path / "c").thresholds_, trained.thresholds_,
                               rtol=0, atol=1e-6)
    out = runner.invoke(app, ["calibrate", str(model), "--data", str(toy_sources), "--perturb",
                              "none", "--seed", "4", "--out", str(tmp_path / "d"), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)[
        "validation_images_are_the_models"] is False
