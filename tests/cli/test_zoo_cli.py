"""`genprint zoo train`: never writes into the installed package unless told where."""

from __future__ import annotations

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

