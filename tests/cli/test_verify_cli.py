"""`genprint verify`: a user's factory generator end to end, multi-generator, clear errors."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genprint.cli.app import app

runner = CliRunner()
FAST = ["--steps", "30", "--restarts", "2", "--threads", "1"]

FACTORY = textwrap.dedent('''
    import dataclasses
    import torch
    from genprint.world import zoo

    def _tiny(seed, name):
        spec = dataclasses.replace(zoo.spec("gan-tconv-s0"), width=16, latent_dim=8, name=name)
        torch.manual_seed(seed)
        return zoo.ZooGenerator(spec)

    def gen_a():
        return _tiny(0, "gen-a")

    def gen_b():
        return _tiny(1, "gen-b")

    def no_decode():
        return {"latent_shape": (8,)}
''')


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def user_gens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "cli_gens.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(mod))
    yield mod
    sys.modules.pop("cli_gens", None)


def _write(folder: Path, images: np.ndarray, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{prefix}{k}.png")


def test_factory_generator_end_to_end(user_gens: Path, tmp_path: Path) -> None:
    import cli_gens

    from genprint.verify.generators import GeneratorHandle

    cal = tmp_path / "a.json"
    out = runner.invoke(app, ["verify", "calibrate", "-g", "cli_gens:gen_a", "--n", "20",
                              "--out", str(cal), "--json", *FAST])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)[0]
    assert summary["generator"] == "gen-a" and summary["n"] == 20 and cal.is_file()
    images = tmp_path / "images"
    a = GeneratorHandle("a", cli_gens.gen_a(), "x")
    _write(images, a.sample(2, seed=5), "member")
    _write(images, np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8), "rand")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(images / "small.png")
    (images / "broken.png").write_text("not an image")
    res = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                              str(images), "--json", "--threads", "1",
                              "--out", str(tmp_path / "rows.csv")])
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: r for r in json.loads(res.stdout)}
    assert len(rows) == 6 and (tmp_path / "rows.csv").is_file()
    for name in ("rand0.png", "rand1.png"):
        assert rows[name]["belongs"] is False and rows[name]["label"] == "unknown"
    assert min(rows[f"member{k}.png"]["p_value"] for k in range(2)) > rows["rand0.png"]["p_value"]
    assert rows["small.png"]["error_code"] == "too_small"
    assert rows["broken.png"]["error_code"] == "not_an_image"
    for name, row in rows.items():  # the hash of the bytes analysed, refused files too
        assert row["sha256"] == hashlib.sha256((images / name).read_bytes()).hexdigest()
    assert set(rows["member0.png"]) >= {"path", "loss", "calibrated_score", "p_value", "belongs"}
    with open(tmp_path / "rows.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["path"] for r in table] == [r["path"] for r in json.loads(res.stdout)]
    assert all(json.loads(r["per_generator"]).keys() == ({"gen-a"} if not r["error"] else set())
               for r in table)
    pq = pytest.importorskip("pyarrow.parquet")
    again = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                                str(images / "member0.png"), "--threads", "1",
                                "--out", str(tmp_path / "rows.parquet")])
    assert again.exit_code == 0, again.output
    parquet = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    assert parquet[0]["generator"] == "gen-a" and isinstance(parquet[0]["belongs"], bool)
    rgba = np.dstack([np.random.default_rng(1).integers(0, 256, (32, 32, 3), np.uint8),
                      np.full((32, 32), 255, np.uint8)])
    rgba[:8, :, 3] = 0  # a quarter transparent: its row says the alpha channel was dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    noted = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                                str(tmp_path / "alpha.png"), "--threads", "1", "--json"])
    assert noted.exit_code == 0, noted.output
    [row] = json.loads(noted.stdout)
    assert row["note"].startswith("alpha channel dropped: 25.0% of the pixels are not opaque")
    wrong = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                                str(images), "--out", str(tmp_path / "rows.xlsx")])
    assert wrong.exit_code == 2 and ".parquet" in wrong.output
    # other inversion settings than the calibration's are refused
    bad = runner.invoke(app, ["verify", "run", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                              str(images), "--steps", "31"])
    assert bad.exit_code == 2 and "steps=31" in bad.output
    # a long verification stopped by Ctrl-C keeps the rows already verified (one per batch)
    from genprint.methods import base
    from genprint.verify import verifier

    real, calls = verifier.verify_arrays, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    target = tmp_path / "stopped.json"
    original = base.BATCH_PIXELS
    base.BATCH_PIXELS, verifier.verify_arrays = 1, interrupted
    try:
        stop = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                                   str(images), "--threads", "1", "--out", str(target)])
    finally:
        base.BATCH_PIXELS, verifier.verify_arrays = original, real
    assert stop.exit_code == 130 and not target.exists()
    kept = json.loads((tmp_path / "stopped.partial.json").read_text(encoding="utf-8"))
    assert [Path(r["path"]).name for r in kept] == ["broken.png", "member0.png"]
    assert kept[1]["generator"] == "gen-a" and kept[0]["error_code"] == "not_an_image"


def test_multi_generator_attribution(user_gens: Path, tmp_path: Path) -> None:
    import cli_gens

    from genprint.verify.generators import GeneratorHandle

    spec = "cli_gens:gen_a,cli_gens:gen_b"
    out = runner.invoke(app, ["verify", "calibrate", "-g", spec, "--n", "20", *FAST])
    assert out.exit_code == 0, out.output
    assert (user_gens / "cli_gens.gen_a.calibration.json").is_file()
    assert (user_gens / "cli_gens.gen_b.calibration.json").is_file()
    # an existing calibration is never replaced by accident
    again = runner.invoke(app, ["verify", "calibrate", "-g", spec, "--n", "20", *FAST])
    assert again.exit_code == 2 and "--overwrite" in " ".join(again.output.split())
    assert "N = 20" in " ".join(again.output.split())
    # N = 19 gives p-values ≥ 1/20, and `verify run` refuses α = 0.05 with them: said at once
    few = runner.invoke(app, ["verify", "calibrate", "-g", spec, "--n", "19", "--overwrite",
                              *FAST])
    assert few.exit_code == 0 and "cannot be tested (N ≥ 20 needed" in " ".join(
        few.output.split())
    out = runner.invoke(app, ["verify", "calibrate", "-g", spec, "--n", "20", "--overwrite",
                              *FAST])
    assert out.exit_code == 0 and "cannot be tested" not in out.output, out.output
    images = tmp_path / "images"
    _write(images, GeneratorHandle("b", cli_gens.gen_b(), "x").sample(2, seed=7), "b")
    _write(images, np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), np.uint8), "rand")
    res = runner.invoke(app, ["verify", "-g", spec, str(images), "--json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    rows = {Path(r["path"]).name: r for r in json.loads(res.stdout)}
    assert rows["rand0.png"]["label"] == "unknown"
    assert set(rows["b0.png"]["per_generator"]) == {"gen-a", "gen-b"}
    assert all(rows[f"b{k}.png"]["generator"] == "gen-b" for k in range(2))


@pytest.mark.parametrize(("spec", "message"), [
    ("zoo:nope", "unknown zoo generator 'nope'"),
    ("nomodule:f", "cannot import module 'nomodule'"),
    ("os:path", "is a module, not a factory"),
    ("cli_gens:no_decode", "returned a dict, which has no latent_shape, sample_latent, decode"),
])
def test_bad_generator_specs_exit_2(user_gens: Path, tmp_path: Path, spec: str,
                                    message: str) -> None:
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    for args in (["verify", "-g", spec, str(img)], ["verify", "calibrate", "-g", spec]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split())


def test_uncalibrated_generator_exit_2(user_gens: Path, tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    res = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", str(img)])
    assert res.exit_code == 2 and "not calibrated" in " ".join(res.output.split())


def test_condition_calibration_from_the_cli(user_gens: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["verify", "calibrate", "-g", "cli_gens:gen_a", "--n", "20",
                              "--condition", "noise", "--json", *FAST])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)[0]
    cal = user_gens / "cli_gens.gen_a.noise.calibration.json"  # next to the clean one's place
    assert summary["condition"] == "noise" and summary["out"] == str(cal) and cal.is_file()
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(img)
    res = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--condition", "noise",
                              str(img), "--json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["generator"] == "gen-a"
    clean = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", str(img)])
    assert clean.exit_code == 2 and "not calibrated" in " ".join(clean.output.split())
    mismatch = runner.invoke(app, ["verify", "-g", "cli_gens:gen_a", "--calibration", str(cal),
                                   str(img)])
    assert mismatch.exit_code == 2
    assert "not for clean images" in " ".join(mismatch.output.split())
    bad = runner.invoke(app, ["verify", "calibrate", "-g", "cli_gens:gen_a", "--n", "20",
                              "--condition", "jpeg10", *FAST])
    assert bad.exit_code == 2 and "'jpeg10' is not a perturbation" in " ".join(bad.output.split())
