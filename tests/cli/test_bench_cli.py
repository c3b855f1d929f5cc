"""`genprint bench build`: the camera task with random cameras, and a refused combination."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from genprint.cli.app import app

runner = CliRunner()


def test_camera_bench_with_random_cameras(tmp_path):
    out = tmp_path / "cams"
    res = runner.invoke(app, ["bench", "build", str(out), "--task", "camera", "--per-class", "3",
                              "--random-cameras", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert "rcam-001" in summary["counts"] and len(summary["counts"]) == 9
    assert summary["counts"]["rcam-001"] == {"train": 1, "val": 1, "test": 1}


def test_random_cameras_are_refused_for_the_attribution_task(tmp_path):
    res = runner.invoke(app, ["bench", "build", str(tmp_path / "b"), "--per-class", "3",
                              "--random-cameras", "2"])
    assert res.exit_code == 2
    assert "camera task" in res.output
    assert not (tmp_path / "b").exists()
