"""The Ray Data path gives the local path's rows: same answers, errors, notes, hashes and order.

One local Ray (2 CPUs, no dashboard) and one tiny ``baseline`` model serve the whole module.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app
from genprint.results import RESULT_COLUMNS, Attribution, write_results
from genprint.scale import ModelMismatchError, attribution_dataset, iter_attributions
from tests.conftest import make_png_header_only, textured, write_toy_sources

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

runner = CliRunner()

FLOATS = ("score", "threshold", "tile_agreement")
"""Fields compared within :data:`TOLERANCE`: the actors run torch with their own threads."""
TOLERANCE = 1e-6

EXPECTED_ERRORS = {
    "zero.png": "empty", "text.png": "not_an_image", "trunc.png": "truncated",
    "crc.png": "corrupt", "bomb.png": "too_many_pixels", "small.png": "too_small",
    "flat.png": "no_content", "missing.png": "not_found", "notes.txt": "not_an_image",
}


@dataclass(frozen=True)
class World:
    """The module's files: a trained model, its sources and a folder of awkward files."""

    model: Path
    sources: Path
    odd: Path
    inputs: list[Path]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The ``toy_sources`` images (3 sources × 24), a ``baseline`` model trained on them with
    ``genprint train``, and files the reader refuses or notes something about."""
    root = tmp_path_factory.mktemp("scale")
    sources = write_toy_sources(root)
    rng = np.random.default_rng(1)  # the awkward files below
    model = root / "model"
    out = runner.invoke(app, ["train", "baseline", "--data", str(sources), "--out", str(model),
                              "--json"])
    assert out.exit_code == 0, out.output
    odd = root / "odd"
    odd.mkdir()
    good = (sources / "beta" / "00.png").read_bytes()
    (odd / "zero.png").write_bytes(b"")
    (odd / "text.png").write_text("not an image")
    (odd / "trunc.png").write_bytes(good[: len(good) // 2])
    crc = bytearray(good)
    crc[-20] ^= 0xFF  # inside the image data: its chunk's CRC no longer matches
    (odd / "crc.png").write_bytes(bytes(crc))
    (odd / "bomb.png").write_bytes(make_png_header_only(100_000, 100_000))
    Image.fromarray(textured(rng, 8, 8, 2)).save(odd / "small.png")
    Image.new("RGB", (40, 40), (9, 9, 9)).save(odd / "flat.png")
    rgba = np.dstack([textured(rng, 36, 40, 3), np.full((36, 40), 255, np.uint8)])
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(odd / "rgba.png")
    grey = textured(rng, 36, 40, 5)[:, :, 0].astype(np.uint16) * 257
    Image.fromarray(grey).save(odd / "grey16.png")
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), np.uint8)).save(odd / "big.png")
    (root / "notes.txt").write_text("an explicitly named file is read whatever its extension")
    inputs = [sources, odd, root / "missing.png", root / "notes.txt"]
    return World(model, sources, odd, inputs)


def assert_same_rows(got: list[Attribution], want: list[Attribution]) -> None:
    """Equal rows, in the same order; floating-point values within :data:`TOLERANCE`."""
    assert [r.path for r in got] == [r.path for r in want]
    for g, w in zip(got, want, strict=True):
        gd, wd = g.to_dict(), w.to_dict()
        for name in FLOATS:
            a, b = gd.pop(name), wd.pop(name)
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= TOLERANCE), name
        gs, ws = gd.pop("scores"), wd.pop("scores")
        assert gs.keys() == ws.keys()
        assert all(abs(gs[k] - ws[k]) <= TOLERANCE for k in gs)
        assert gd == wd


def test_rows_equal_the_local_rows_in_input_order(local_ray: None, world: World) -> None:
    attributor = genprint.load(world.model)
    attributor.max_tiles = 4  # type: ignore[attr-defined]
    local = attributor.attribute(world.inputs)
    arrived: list[int] = []
    rows = list(iter_attributions(world.model, world.inputs, actors=2, batch_size=8,
                                  max_tiles=4, on_progress=arrived.append))
    assert len(rows) == len(local) == 72 + 12 and sum(arrived) == len(rows)
    assert_same_rows(rows, local)
    codes = {Path(r.path).name: r.error_code for r in rows if not r.ok}
    assert codes == EXPECTED_ERRORS
    by_name = {Path(r.path).name: r for r in rows}
    assert by_name["rgba.png"].ok and "alpha channel dropped" in by_name["rgba.png"].notes
    assert by_name["grey16.png"].ok and "16-bit grey" in by_name["grey16.png"].notes
    assert by_name["trunc.png"].sha256 and by_name["missing.png"].sha256 is None
    assert by_name["big.png"].n_tiles == 4  # max_tiles reached the actors
    assert {r.model_sha256 for r in rows} == {genprint.load(world.model).model_sha256_}


def test_the_dataset_has_the_columns_and_types_of_a_results_file(
        local_ray: None, world: World, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs = [world.sources / "alpha", world.odd]
    local = genprint.load(world.model).attribute(inputs)
    write_results(local, tmp_path / "local.parquet")
    want = pq.read_table(tmp_path / "local.parquet")
    dataset = attribution_dataset(world.model, inputs, batch_size=8)
    got = pa.concat_tables(list(dataset.iter_batches(batch_size=None, batch_format="pyarrow")))
    assert got.schema.names == list(RESULT_COLUMNS)
    assert got.schema.equals(want.schema, check_metadata=False)
    for g, w in zip(got.to_pylist(), want.to_pylist(), strict=True):
        for name in FLOATS:
            a, b = g.pop(name), w.pop(name)
            assert (a is None) == (b is None) and (a is None or math.isclose(a, b,
                                                                            abs_tol=TOLERANCE))
        gs, ws = json.loads(g.pop("scores")), json.loads(w.pop("scores"))
        assert gs.keys() == ws.keys() and all(abs(gs[k] - ws[k]) <= TOLERANCE for k in gs)
        assert g == w


def test_a_worker_that_sees_another_model_stops_the_run(
        local_ray: None, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genprint.scale import ray_data

    image = world.sources / "alpha" / "00.png"
    # the driver expects a hash the model does not have: refused before Ray runs anything
    with pytest.raises(ModelMismatchError, match="not the expected"):
        next(iter_attributions(world.model, [image], expected_model_sha256="0" * 64))
    # the driver reads one model, the workers load another at that path (patched here on the
    # driver only: the actors run in their own processes)
    other = genprint.load(world.model)
    other.thresholds_ = other.thresholds_ * 0.5
    other.save(tmp_path / "other")
    seen_by_driver = ray_data.model_identity(tmp_path / "other")
    monkeypatch.setattr(ray_data, "model_identity", lambda model: seen_by_driver)
    with pytest.raises(ModelMismatchError, match="a Ray worker on .* loaded another model .* "
                                                 "every node must see the same model"):
        list(iter_attributions(world.model, [image]))


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_same_flat_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Equal CSV / JSON rows in the same order; floating-point values within tolerance."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g, w = dict(g), dict(w)
        for name in FLOATS:
            a, b = g.pop(name), w.pop(name)
            assert (a in ("", None)) == (b in ("", None)), name
            if a not in ("", None):
                assert abs(float(a) - float(b)) <= TOLERANCE, name
        gs, ws = g.pop("scores"), w.pop("scores")
        gs, ws = (json.loads(s) if isinstance(s, str) else s for s in (gs, ws))
        assert gs.keys() == ws.keys() and all(abs(gs[k] - ws[k]) <= TOLERANCE for k in gs)
        assert g == w


def test_the_command_line_with_ray_gives_the_local_outputs(local_ray: None, world: World,
                                                           tmp_path: Path) -> None:
    model = str(world.model)
    inputs = [str(p) for p in world.inputs]
    outs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        out = runner.invoke(app, ["attribute", model, *inputs, "--json", "--out",
                                  str(tmp_path / f"{name}.csv"), *extra],
                            env={"COLUMNS": "400"})
        assert out.exit_code == 0, out.output
        outs[name] = json.loads(out.stdout)
    assert_same_flat_rows(outs["ray"], outs["local"])
    assert_same_flat_rows(_csv_rows(tmp_path / "ray.csv"), _csv_rows(tmp_path / "local.csv"))
    # the console table and the exit code (--strict, a failed file), as the local path's
    few = [str(world.sources / "alpha" / "00.png"), str(world.odd / "zero.png")]
    local = runner.invoke(app, ["attribute", model, *few, "--strict"])
    on_ray = runner.invoke(app, ["attribute", model, *few, "--strict", "--ray",
                                 "--ray-actors", "1"])
    assert local.exit_code == on_ray.exit_code == 1
    assert on_ray.stdout == local.stdout and "zero.png" in on_ray.stdout


def assert_same_metrics(got: Any, want: Any, where: str = "metrics") -> None:
    """Equal JSON values, floating-point ones within :data:`TOLERANCE` (NaN equal to NaN)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            assert_same_metrics(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_metrics(g, w, f"{where}[{k}]")
    elif isinstance(want, float):
        assert isinstance(got, float | int), where
        assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= TOLERANCE, where
    else:
        assert got == want, where


def test_eval_with_ray_gives_the_local_figures(local_ray: None, world: World,
                                               tmp_path: Path) -> None:
    """``genprint eval --data D --ray`` reads and attributes on Ray, and gives the figures,
    the files left out, the pictures seen in training and the per-image answers of the local
    evaluation."""
    data = tmp_path / "data"
    rng = np.random.default_rng(7)
    for name, period in (("alpha", 2), ("beta", 3), ("delta", 7)):  # delta: an unknown source
        (data / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(textured(rng, 36, 40, period)).save(data / name / f"new{i}.png")
    for name in ("00.png", "01.png"):  # pictures the model was fitted on
        (data / "alpha" / name).write_bytes((world.sources / "alpha" / name).read_bytes())
    for name in ("zero.png", "trunc.png", "flat.png"):  # files left out, with their reasons
        (data / "beta" / name).write_bytes((world.odd / name).read_bytes())
    figures = {}
    for name, extra in (("local", []), ("ray", ["--ray", "--ray-actors", "2"])):
        out = runner.invoke(app, ["eval", str(world.model), "--data", str(data), "--json",
                                  str(tmp_path / f"{name}.json"), "--results",
                                  str(tmp_path / f"{name}.csv"), *extra],
                            env={"COLUMNS": "400"})
        assert out.exit_code == 0, out.output
        assert "3 test file(s) could not be used" in out.output
        assert "2 of the 20 test images are pictures the model was fitted on" in out.output
        figures[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert_same_metrics(figures["ray"], figures["local"])
    assert figures["ray"]["n_unknown_test"] == 6 and figures["ray"]["n_known_test"] == 14
    assert figures["ray"]["n_test_seen_in_training"] == 2
    assert {u["error_code"] for u in figures["ray"]["unreadable_test"]} == {
        "empty", "truncated", "no_content"}
    local_rows, ray_rows = _csv_rows(tmp_path / "local.csv"), _csv_rows(tmp_path / "ray.csv")
    assert len(ray_rows) == 23
    assert_same_flat_rows(ray_rows, local_rows)
    # a manifest whose row names a folder: one unusable file on both paths (not its contents)
    with open(data / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        fh.write("path,source\nalpha/new0.png,alpha\nbeta/new1.png,beta\ndelta,delta\n"
                 "delta/new2.png,delta\n")
    figures = {}
    for name, extra in (("local", []), ("ray", ["--ray", "--ray-actors", "1"])):
        out = runner.invoke(app, ["eval", str(world.model), "--data", str(data), "--json", "-",
                                  *extra])
        assert out.exit_code == 0, out.output
        figures[name] = json.loads(out.stdout)
    assert_same_metrics(figures["ray"], figures["local"])
    assert [Path(u["path"]).name for u in figures["ray"]["unreadable_test"]] == ["delta"]


def test_eval_with_ray_refuses_what_it_cannot_do(world: World) -> None:
    data = str(world.sources)
    out = runner.invoke(app, ["eval", str(world.model), "--data", data, "--ray", "--perturb",
                              "jpeg75"])
    assert out.exit_code == 2 and "--perturb" in out.output
    out = runner.invoke(app, ["eval", str(world.model), "--data", data, "--ray-actors", "2"])
    assert out.exit_code == 2 and "--ray" in out.output


def test_command_line_ray_errors(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    image = str(world.sources / "alpha" / "00.png")
    out = runner.invoke(app, ["attribute", str(world.model), image, "--ray-actors", "2"])
    assert out.exit_code == 2 and "--ray" in out.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    out = runner.invoke(app, ["attribute", str(world.model), image, "--ray"],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 2 and 'pip install "genprint[ray]"' in out.output


def test_own_ray_keeps_the_signal_handlers_and_shuts_down(world: World, tmp_path: Path) -> None:
    """Ray started by genprint (not by the caller): the caller's SIGTERM / SIGINT handlers are
    still in force afterwards (ray.init installs its own, which would skip the CLI's clean-up),
    and Ray is shut down when the iteration ends."""
    import subprocess

    script = tmp_path / "run.py"
    script.write_text(
        "import signal, sys, ray\n"
        "from genprint.scale import iter_attributions\n"
        "def mine(signum, frame): pass\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "before_int = signal.getsignal(signal.SIGINT)\n"
        "rows = list(iter_attributions(sys.argv[1], [sys.argv[2]], actors=1))\n"
        "assert signal.getsignal(signal.SIGTERM) is mine, signal.getsignal(signal.SIGTERM)\n"
        "assert signal.getsignal(signal.SIGINT) is before_int\n"
        "assert not ray.is_initialized()\n"
        "print(len(rows), sum(r.ok for r in rows))\n")
    done = subprocess.run([sys.executable, str(script), str(world.model),
                           str(world.sources / "alpha")], capture_output=True, text=True, check=False,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["24", "24"]


def test_ray_address_variable_is_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """With RAY_ADDRESS set (as under `ray job submit`) and no address given, genprint joins
    that cluster instead of asking Ray for a local one (which Ray refuses then)."""
    from genprint.scale import ScaleError
    from genprint.scale.ray_session import connect

    class NoRay:
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs: Any) -> None:  # pragma: no cover - must not be reached
            raise AssertionError(f"ray.init called with {kwargs}")

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(ScaleError, match=r"Ray cluster at 127\.0\.0\.1:1"):
        connect(NoRay(), address=None, num_cpus=2, quiet=True)
