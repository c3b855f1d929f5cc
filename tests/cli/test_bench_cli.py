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


def test_options_and_outputs_that_cannot_work_are_refused_before_any_image(tmp_path):
    """These gave tracebacks (an unknown generator after the real images were rendered, a file
    above the output) or were accepted and silently clamped (JPEG quality 500)."""
    (tmp_path / "file").write_text("x")
    cases = [
        (["--generator", "nope"], "not in the zoo"),
        (["--per-class", "-5"], "--per-class"),
        (["--format", "jpeg", "--jpeg-quality", "500"], "--jpeg-quality"),
        (["--size", "0"], "--size"),
    ]
    for extra, message in cases:
        res = runner.invoke(app, ["bench", "build", str(tmp_path / "b"), *extra],
                            env={"COLUMNS": "200"})
        assert res.exit_code == 2 and message in res.output, (extra, res.output)
    for out in (tmp_path / "file", tmp_path / "file" / "b"):
        res = runner.invoke(app, ["bench", "build", str(out)], env={"COLUMNS": "200"})
        assert res.exit_code == 2 and "file" in res.output, res.output
    assert not (tmp_path / "b").exists()
