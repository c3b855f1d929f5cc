"""The command line: --version, train baseline, attribute with bad files, JSON and CSV output."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import genprint
from genprint.cli.app import app

runner = CliRunner()


def test_version_and_help() -> None:
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and genprint.__version__ in out.stdout
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "attribute" in out.stdout and "train" in out.stdout


def _train(toy_sources: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    out = runner.invoke(app, ["train", "baseline", "--data", str(toy_sources), "--out", str(model),
                              "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["classes"] == ["alpha", "beta", "gamma"] and summary["n_val"] > 0
    return model


def test_attribute_mixed_folder_reports_bad_files(toy_sources: Path, tmp_path: Path) -> None:
    model = _train(toy_sources, tmp_path)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, p in enumerate(sorted((toy_sources / "alpha").glob("*.png"))[:3]):
        (mixed / f"good{i}.png").write_bytes(p.read_bytes())
    (mixed / "zero.png").write_bytes(b"")
    (mixed / "text.png").write_text("not an image")
    data = (toy_sources / "beta" / "00.png").read_bytes()
    (mixed / "trunc.png").write_bytes(data[: len(data) // 2])
    out = runner.invoke(app, ["attribute", str(model), str(mixed), "--json",
                              "--out", str(tmp_path / "r.csv")])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == 6
    assert by_name["zero.png"]["error_code"] == "empty"
    assert by_name["text.png"]["error_code"] == "not_an_image"
    assert by_name["trunc.png"]["error_code"] in ("truncated", "corrupt")
    for i in range(3):
        r = by_name[f"good{i}.png"]
        assert r["error"] is None and r["label"] in ("alpha", "beta", "gamma", "unknown")
        assert set(r["scores"]) == {"alpha", "beta", "gamma"}
    with open(tmp_path / "r.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["path"] for r in csv_rows] == [r["path"] for r in rows]
    assert csv_rows[0].keys() >= {"accepted_by", "error_code"}
    for r in rows:  # how a label was accepted: by the threshold, or not at all
        assert r["accepted_by"] == (None if r["error"] or r["is_unknown"] else "threshold")
    assert json.loads(csv_rows[0]["scores"]).keys() == {"alpha", "beta", "gamma"}
    # provenance: the hash of the bytes analysed (refused files too), and of the model's card
    card_hash = hashlib.sha256((model / "card.json").read_bytes()).hexdigest()
    for r in rows:
        name = Path(r["path"]).name
        assert r["sha256"] == hashlib.sha256((mixed / name).read_bytes()).hexdigest(), name
        assert r["model_sha256"] == card_hash
    assert csv_rows[0]["sha256"] == rows[0]["sha256"]


def test_exit_codes_all_failed_strict_and_bad_model(toy_sources: Path, tmp_path: Path) -> None:
    model = _train(toy_sources, tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert runner.invoke(app, ["attribute", str(model), str(bad)]).exit_code == 1
    good = toy_sources / "alpha" / "00.png"
    assert runner.invoke(app, ["attribute", str(model), str(good), str(bad)]).exit_code == 0
    assert runner.invoke(app, ["attribute", str(model), str(good), str(bad), "--strict"]).exit_code == 1
    out = runner.invoke(app, ["attribute", str(tmp_path), str(good)])
    assert out.exit_code == 2 and "card.json" in out.output


def test_parquet_results(toy_sources: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    model = _train(toy_sources, tmp_path)
    out = runner.invoke(app, ["attribute", str(model), str(toy_sources / "gamma"),
                              "--out", str(tmp_path / "r.parquet")])
    assert out.exit_code == 0, out.output
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert len(table) == 24 and all(r["error"] is None for r in table)
    assert all(r["accepted_by"] == (None if r["is_unknown"] else "threshold") for r in table)


def test_file_names_print_as_they_are(toy_sources: Path, tmp_path: Path) -> None:
    """Rich markup or emoji codes in a file name are printed literally, in rows and errors."""
    import shutil

    model = _train(toy_sources, tmp_path)
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(toy_sources / "alpha" / "00.png", odd / "a[red]b:smile:.png")
    (odd / "c[bold]d.png").write_bytes(b"")
    out = runner.invoke(app, ["attribute", str(model), str(odd)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    flat = out.output.replace("\n", "")
    assert "a[red]b:smile:.png" in flat and "c[bold]d.png" in flat


def test_max_pixels_option_applies_to_every_file(toy_sources: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENPRINT_MAX_PIXELS", "")  # restored (unset) after the test
    model = _train(toy_sources, tmp_path)
    img = toy_sources / "alpha" / "00.png"
    out = runner.invoke(app, ["--max-pixels", "100", "attribute", str(model), str(img),
                              "--json"])
    assert out.exit_code == 1  # every input failed
    [row] = json.loads(out.stdout)
    assert row["error_code"] == "too_many_pixels" and "--max-pixels" in row["error"]


@pytest.mark.parametrize("value", ["abc", "-5", "0"])
def test_a_bad_max_pixels_variable_is_an_error_not_a_traceback(
        value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENPRINT_MAX_PIXELS", value)
    for verb in (["attribute", str(tmp_path), str(tmp_path)],
                 ["enroll", str(tmp_path), "--source", "x", str(tmp_path)]):
        out = runner.invoke(app, verb)
        assert out.exit_code == 2 and "GENPRINT_MAX_PIXELS" in out.output
        assert out.exception is None or isinstance(out.exception, SystemExit)
    # the option wins over the variable, and help still shows
    out = runner.invoke(app, ["--max-pixels", "100", "zoo", "list", "--json"])
    assert out.exit_code == 0
    monkeypatch.setattr(sys, "argv", ["genprint", "attribute", "--help"])
    out = runner.invoke(app, ["attribute", "--help"])
    assert out.exit_code == 0 and "Usage" in out.output


def test_max_tiles_sets_how_much_of_a_large_image_is_analysed(toy_sources: Path,
                                                               tmp_path: Path) -> None:
    model = _train(toy_sources, tmp_path)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)).save(big)
    rows = {}
    for n in (None, 4, 64):
        extra = [] if n is None else ["--max-tiles", str(n)]
        out = runner.invoke(app, ["attribute", str(model), str(big), "--json", *extra])
        assert out.exit_code == 0, out.output
        rows[n] = json.loads(out.stdout)[0]
    assert (rows[None]["n_tiles"], rows[4]["n_tiles"], rows[64]["n_tiles"]) == (16, 4, 64)
    out = runner.invoke(app, ["attribute", str(model), str(big), "--max-tiles", "0"])
    assert out.exit_code == 2


def test_bad_out_is_refused_before_any_work(toy_sources: Path, tmp_path: Path) -> None:
    model = _train(toy_sources, tmp_path)
    good = str(toy_sources / "alpha" / "00.png")
    out = runner.invoke(app, ["attribute", str(model), good, "--out", str(tmp_path / "r.txt")])
    assert out.exit_code == 2 and ".csv, .parquet or .json" in out.output
    (tmp_path / "d.csv").mkdir()
    out = runner.invoke(app, ["attribute", str(model), good, "--out", str(tmp_path / "d.csv")],
                        env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "is a directory" in out.output


def test_file_names_that_are_not_utf8_are_written_escaped(toy_sources: Path,
                                                         tmp_path: Path) -> None:
    import os

    import pyarrow.parquet as pq

    model = _train(toy_sources, tmp_path)
    folder = tmp_path / "names"
    folder.mkdir()
    odd = Path(os.fsdecode(bytes(folder) + b"/bad\xff.png"))
    odd.write_bytes((toy_sources / "alpha" / "00.png").read_bytes())
    for suffix in (".csv", ".parquet", ".json"):
        out = runner.invoke(app, ["attribute", str(model), str(folder), "--out",
                                  str(tmp_path / f"r{suffix}")])
        assert out.exit_code == 0, out.output
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.DictReader(fh))["path"].endswith("bad\\xff.png")
    assert pq.read_table(tmp_path / "r.parquet").to_pylist()[0]["path"].endswith("bad\\xff.png")
    assert json.loads((tmp_path / "r.json").read_text())[0]["path"].endswith("bad\\xff.png")


def test_resume_attributes_again_files_whose_printed_names_collide(toy_sources: Path,
                                                                   tmp_path: Path) -> None:
    """``bad\\xff.png`` spelled with a byte that is not UTF-8 and spelled with a backslash print
    the same: a resumed row with that name cannot say which file it was, so neither is
    skipped (before, one of the two files was left out of --out)."""
    model = _train(toy_sources, tmp_path)
    folder = tmp_path / "names"
    folder.mkdir()
    (Path(os.fsdecode(bytes(folder) + b"/bad\xff.png"))).write_bytes(
        (toy_sources / "alpha" / "00.png").read_bytes())
    (folder / "bad\\xff.png").write_bytes((toy_sources / "beta" / "00.png").read_bytes())
    (folder / "other.png").write_bytes((toy_sources / "gamma" / "00.png").read_bytes())
    straight = tmp_path / "r.csv"
    out = runner.invoke(app, ["attribute", str(model), str(folder), "--out", str(straight)])
    assert out.exit_code == 0, out.output
    lines = straight.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4 and lines[1].split(",")[0] == lines[2].split(",")[0]  # one name
    (tmp_path / "again.partial.csv").write_text("".join(lines[:2]) + lines[3],
                                                encoding="utf-8")  # a run stopped after one
    out = runner.invoke(app, ["attribute", str(model), str(folder), "--out",
                              str(tmp_path / "again.csv"), "--resume"])
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and "both files are attributed again" in said, out.output
    with open(tmp_path / "again.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and len({r["sha256"] for r in rows}) == 3  # every file, once


def test_the_table_shows_what_differs_in_the_paths(toy_sources: Path, tmp_path: Path) -> None:
    model = _train(toy_sources, tmp_path)
    deep = tmp_path / "a-rather-long-folder-name" / "and-another-one"
    for src in ("alpha", "beta"):
        (deep / src).mkdir(parents=True)
        (deep / src / "x.png").write_bytes((toy_sources / src / "00.png").read_bytes())
    out = runner.invoke(app, ["attribute", str(model), str(deep)], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert f"paths relative to {deep}\n" in out.output
    assert "│ alpha/x.png" in out.output and "│ beta/x.png" in out.output
    assert "error" not in out.output  # no error column when every file was read
    (deep / "beta" / "bad.png").write_text("not an image")
    out = runner.invoke(app, ["attribute", str(model), str(deep)], env={"COLUMNS": "80"})
    assert "error" in out.output and "not" in out.output


def test_overwrite_never_replaces_a_folder_of_user_files(toy_sources: Path, tmp_path: Path) -> None:
    victim = tmp_path / "my-notes"
    victim.mkdir()
    (victim / "notes.txt").write_text("important")
    out = runner.invoke(app, ["train", "baseline", "--data", str(toy_sources), "--out",
                              str(victim), "--overwrite"], env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "not only a genprint model directory" in out.output
    assert (victim / "notes.txt").read_text() == "important"
    (tmp_path / "f").write_text("x")  # an impossible output is refused before training
    out = runner.invoke(app, ["train", "baseline", "--data", str(toy_sources), "--out",
                              str(tmp_path / "f" / "model")], env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "not a folder" in out.output


def test_with_out_the_console_gets_counts_and_ctrl_c_keeps_the_finished_rows(
        toy_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genprint.methods.baseline import BaselineAttributor

    model = _train(toy_sources, tmp_path)
    alpha = toy_sources / "alpha"
    (tmp_path / "bad.png").write_text("not an image")
    out = runner.invoke(app, ["attribute", str(model), str(alpha), str(tmp_path / "bad.png"),
                              "--out", str(tmp_path / "r.csv")], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    n_alpha = len(list(alpha.glob("*.png")))
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_alpha + 1
    assert f"attribution of {n_alpha + 1} file(s)" in out.output
    assert "error: not_an_image" in out.output and "00.png" not in out.output  # no per-row table

    real = BaselineAttributor.attribute_arrays
    calls = []

    def interrupted(self, images, names=None):  # the second batch is interrupted
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images, names)

    monkeypatch.setattr(BaselineAttributor, "attribute_arrays", interrupted)
    target = tmp_path / "stopped.csv"
    out = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target),
                              "--batch-size", "2"])
    assert out.exit_code == 130, out.output
    assert not target.exists()
    with open(tmp_path / "stopped.partial.csv", newline="", encoding="utf-8") as fh:
        kept = list(csv.DictReader(fh))
    assert [Path(r["path"]).name for r in kept] == [Path(r["path"]).name for r in rows[:2]]
    assert all(r["label"] for r in kept)
    assert f"interrupted after 2 of {n_alpha} file(s)" in " ".join(out.output.split())
    # --resume keeps those rows, skips their files and gives the file a straight run gives
    monkeypatch.setattr(BaselineAttributor, "attribute_arrays", real)
    calls.clear()
    out = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target),
                              "--resume"])
    assert out.exit_code == 0, out.output
    assert "resuming: 2 row(s) kept" in " ".join(out.output.split())
    with open(target, newline="", encoding="utf-8") as fh:
        resumed = list(csv.DictReader(fh))
    straight = [r for r in rows if Path(r["path"]).parent == alpha]
    assert resumed == straight and not (tmp_path / "stopped.partial.csv").exists()
    target.unlink()
    (tmp_path / "stopped.partial.csv").write_text(
        (tmp_path / "r.csv").read_text(encoding="utf-8").replace(rows[0]["model_sha256"],
                                                                  "f" * 64), encoding="utf-8")
    other = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target),
                                "--resume"])
    assert other.exit_code == 2 and "another model" in other.output
    # rows of files that are not among the inputs, or a row cut short, are not resumed
    (tmp_path / "stopped.partial.csv").write_text((tmp_path / "r.csv").read_text(
        encoding="utf-8"), encoding="utf-8")  # alpha's rows and another file's
    other = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target),
                                "--resume"])
    said = " ".join(other.output.split())
    assert other.exit_code == 0, other.output
    assert "1 row(s) of" in said and "are for files that are not among the inputs" in said
    with open(target, newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == straight  # that row left out, nothing run again
    target.unlink()
    text = (tmp_path / "r.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines(keepends=True)
             if "00.png" not in line or "alpha" not in line]
    cut = "".join(lines[:3])
    (tmp_path / "stopped.partial.csv").write_text(cut[: cut.rstrip().rfind(",") - 30],
                                                  encoding="utf-8")
    other = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target),
                                "--resume"])
    said = " ".join(other.output.split())
    assert other.exit_code == 2 and "incomplete row(s)" in said, other.output
    assert not target.exists()
    (tmp_path / "stopped.partial.csv").write_text("from an earlier run", encoding="utf-8")
    monkeypatch.setattr(BaselineAttributor, "attribute_arrays", interrupted)
    calls.clear()
    # SIGTERM (a scheduler's `kill`) is handled the same way, with its own exit code
    import signal

    from genprint.cli.app import Terminated, _terminate

    with pytest.raises(Terminated):
        _terminate(signal.SIGTERM, None)
    calls.clear()
    monkeypatch.setattr(BaselineAttributor, "attribute_arrays", lambda self, images, names=None:
                        _terminate(signal.SIGTERM, None))
    out = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target)])
    assert out.exit_code == 143 and not target.exists()
    said = " ".join(out.output.split())
    assert "interrupted after 0 of" in said and "nothing was written" in said
    assert "stopped.partial.csvisfromanearlierrun" in "".join(out.output.split())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the disk fills up while the file is completed: a clear error, no temporary file left
    from genprint.results import ResultsWriter

    monkeypatch.setattr(BaselineAttributor, "attribute_arrays", real)

    def full(self, fallback=None):
        raise OSError(28, "No space left on device")

    committing = ResultsWriter.commit
    monkeypatch.setattr(ResultsWriter, "commit", full)
    out = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target)])
    assert out.exit_code == 2 and "No space left on device" in out.output
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the finished file cannot replace --out (e.g. an immutable file): the rows are kept
    monkeypatch.setattr(ResultsWriter, "commit", committing)
    target.write_text("older results", encoding="utf-8")
    replace = os.replace

    def refused(src, dst):
        if Path(dst) == target:
            raise PermissionError(1, "Operation not permitted")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    out = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target)])
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "Operation not permitted" in said
    assert "every row is there" in said
    assert target.read_text(encoding="utf-8") == "older results"  # untouched
    with open(tmp_path / "stopped.partial.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == straight
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the fallback cannot be written either (a folder there): the rows stay in the hidden file,
    # named, rather than deleted
    (tmp_path / "stopped.partial.csv").unlink()
    (tmp_path / "stopped.partial.csv").mkdir()
    out = runner.invoke(app, ["attribute", str(model), str(alpha), "--out", str(target)])
    said = " ".join(out.output.split())
    hidden = [p for p in tmp_path.iterdir() if p.name.startswith(".stopped.csv.tmp-")]
    assert out.exit_code == 2 and len(hidden) == 1
    assert hidden[0].name in "".join(out.output.split())
    with open(hidden[0], newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == straight


def test_a_results_file_is_completed_once(tmp_path: Path) -> None:
    """Completing a Parquet file twice (an interrupt after a refused rename, then keeping the
    rows) must not start it again empty."""
    import pyarrow.parquet as pq

    from genprint.results import Attribution, ResultsWriter

    writer = ResultsWriter(tmp_path / "r.parquet")
    writer.add(Attribution("a.png", label="x", candidate="x", score=1.0, threshold=0.5,
                           is_unknown=False, scores={"x": 1.0}))
    writer._finish()  # as a refused rename leaves it
    kept = writer.keep_as(tmp_path / "r.partial.parquet")
    assert pq.read_table(kept).num_rows == 1


def test_main_turns_sigterm_into_exit_143_and_puts_the_handler_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import time

    import genprint.cli.app as cli_app

    cleaned = []

    def command() -> None:  # a command killed while it works: its clean-up still runs
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli_app, "app", command)
    with pytest.raises(SystemExit) as stop:
        cli_app.main()
    assert stop.value.code == 143 and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) == before


def test_training_leaves_out_rows_without_a_split_or_a_source(toy_sources: Path,
                                                              tmp_path: Path) -> None:
    rows = ["path,source,split"]
    for k, p in enumerate(sorted(toy_sources.rglob("*.png"))):
        split = ("train", "train", "val", "")[k % 4]  # every 4th row has no split
        source = "" if k == 1 else p.parent.name  # one training row without a source
        rows.append(f"{p},{source},{split}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = runner.invoke(app, ["train", "baseline", "--data", str(manifest), "--out",
                              str(tmp_path / "m"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["n_train"] == 35 and summary["n_val"] == 18  # 72 rows: 36 / 18 / 18 unsplit
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["split"] == "the data's own"  # --val-fraction was not used
    assert card["training"]["seed"] == 0
    flat = " ".join(out.stderr.split())
    assert "18 image(s) without a split are left out" in flat
    assert "1 training or validation image(s) have no source label" in flat
