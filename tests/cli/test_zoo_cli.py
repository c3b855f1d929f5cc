"""`genprint zoo train`: never writes into the installed package unless told where."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from genprint.cli.app import app
from genprint.world.zoo.store import package_weights_dir


def test_zoo_train_needs_a_destination(monkeypatch) -> None:
    monkeypatch.delenv("GENPRINT_ZOO_DIR", raising=False)
    before = sorted(p.name for p in package_weights_dir().glob("*"))
    out = CliRunner().invoke(app, ["zoo", "train", "gan-tconv-s0"], env={"COLUMNS": "200"})
    assert out.exit_code == 2
    assert "--out DIR" in out.output and "GENPRINT_ZOO_DIR" in out.output
    assert sorted(p.name for p in package_weights_dir().glob("*")) == before



def test_zoo_sample_json_lists_the_files_it_wrote(tmp_path) -> None:
    import json

    from genprint.world import zoo

    names = [c["name"] for c in zoo.list_generators(trained_only=True)]
    if not names:
        import pytest

        pytest.skip("no trained zoo generators in this checkout")
    out = CliRunner().invoke(app, ["zoo", "sample", names[0], "--out", str(tmp_path / "s"),
                                   "--n", "2", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["n"] == 2 and len(summary["files"]) == 2
    assert all(Path(f).is_file() and Path(f).parent == tmp_path / "s" for f in summary["files"])
    (tmp_path / "file").write_text("x")
    bad = CliRunner().invoke(app, ["zoo", "sample", names[0], "--out", str(tmp_path / "file")])
    assert bad.exit_code == 2 and "is a file" in bad.output


def test_zoo_commands_refuse_bad_counts_files_and_broken_cards(tmp_path, monkeypatch) -> None:
    """Each of these was a traceback: a negative --n, --threads 0, a file as --out, a zoo card
    that is not JSON or whose weights are missing."""
    runner = CliRunner()
    (tmp_path / "file").write_text("x")
    for args in (["zoo", "sample", "gan-tconv-s0", "--out", str(tmp_path / "s"), "--n", "-3"],
                 ["zoo", "sheet", "--out", str(tmp_path / "sh"), "--n", "-4"],
                 ["zoo", "sheet", "--out", str(tmp_path / "file")],
                 ["zoo", "train", "gan-tconv-s0", "--out", str(tmp_path / "z"), "--threads", "0"],
                 ["zoo", "train", "gan-tconv-s0", "--out", str(tmp_path / "file")]):
        out = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert out.exit_code == 2, (args, out.output)  # (an uncaught exception gives 1)
    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    (zoo_dir / "gan-tconv-s0.json").write_text("{not json")
    monkeypatch.setenv("GENPRINT_ZOO_DIR", str(zoo_dir))
    out = runner.invoke(app, ["zoo", "list"], env={"COLUMNS": "200"})
    assert out.exit_code == 2 and "gan-tconv-s0.json" in out.output.replace("\n", "")
