"""`genprint demo --quick` end to end on the shipped zoo, with CI-sized data.

This is the one-command tour a newcomer runs first: it builds a benchmark from the shipped zoo
and simulated cameras, trains each method, evaluates it on protocol `all` and writes one HTML
report per method. The test uses fewer images per source than `--quick` does, and checks the
results file, the comparison table and that every report holds every plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genprint.cli.app import app
from tests.evaluation.test_report import PLOTS, _assert_png, _parse

pytest.importorskip("colour_demosaicing")

METHODS = ["baseline", "invert", "metric", "probe"]
HEADLINE = ("closed_set_accuracy", "macro_f1", "auroc", "ap", "tnr_at_tpr95", "oscr",
            "real_vs_generated_auroc", "per_unknown_auroc", "n_known_test", "n_unknown_test")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--per-class", "20"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_writes_results_for_every_method(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == METHODS  # every method, by default
    for r in rows:
        assert r["protocol"] == "all"
        for key in HEADLINE:
            assert key in r, key
        assert r["n_unknown_test"] > 0 and r["n_known_test"] > 0
        assert 0.0 <= r["closed_set_accuracy"] <= 1.0
        assert 0.0 <= r["auroc"] <= 1.0
        # the six unknown generators of protocol `all` each get their own AUROC (invert also
        # counts real images as unknown: it has no model of cameras)
        expected = 7 if r["method"] == "invert" else 6
        assert len(r["per_unknown_auroc"]) == expected, r["per_unknown_auroc"]
    by_method = {r["method"]: r for r in rows}
    # invert is evaluated on a stated subset: 3 test images per source in quick mode; it knows
    # only the six known generators (real has no generator to invert)
    assert by_method["invert"]["test_cap_per_source"] == 3
    assert by_method["invert"]["n_known_test"] == 6 * 3
    assert by_method["baseline"]["test_cap_per_source"] is None
    # the comparison tables are printed, one row per method
    assert "protocol all" in output and "what each method used" in output
    for method in METHODS:
        assert method in output


def test_demo_reports_hold_every_plot(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    for method in METHODS:
        page = _parse(out / f"report-{method}.html")
        assert {f"plot-{p}" for p in PLOTS} <= set(page.images), method
        for img in page.images.values():
            _assert_png(img)
        assert {"table-summary", "table-confusion"} <= set(page.tables)
        header = page.tables["table-confusion"][0]
        assert header[-1] == "unknown"


def test_demo_models_load_and_attribute(demo_run: tuple[Path, str]) -> None:
    import genprint

    out, _ = demo_run
    images = sorted((out / "bench" / "images" / "real").glob("*.png"))[:3]
    for method in METHODS:
        model = genprint.load(out / "models" / method)
        results = model.attribute(images)
        assert [r.error for r in results] == [None] * 3
        assert all(r.label in [*model.classes_, "unknown"] for r in results)


def test_demo_refuses_an_unknown_method(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path),
                                      "--method", "nope"])
    assert result.exit_code != 0
    assert "nope" in result.output


def test_a_rerun_with_fewer_methods_leaves_no_stale_report(demo_run: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "again"
    shutil.copytree(demo_run[0], out)
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--per-class", "20",
                                      "--method", "baseline"])
    assert result.exit_code == 0, result.output
    assert [r["method"] for r in json.loads((out / "results.json").read_text())] == ["baseline"]
    assert sorted(p.name for p in out.glob("report-*.html")) == ["report-baseline.html"]
    assert (out / "models" / "metric").is_dir()  # trained models are kept, and said to be old
    said = "".join(result.output.split())  # (a long path may be wrapped anywhere)
    assert "models/metricisleftfromanearlierrun" in said, result.output


def test_a_benchmark_changed_since_its_build_is_built_again_not_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo reused a benchmark of the same size and seed, then stopped with a traceback
    when the protocol read found its manifest changed."""
    from genprint.cli import demo
    from genprint.world import bench as bench_module

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "manifest.csv").write_text("path,source,split,kind,origin\n")
    (bench / "protocols.json").write_text("{}")
    (bench / "bench.json").write_text(json.dumps({"per_class": 5, "seed": 0,
                                                  "manifest_sha256": "0" * 64}))
    built = []
    monkeypatch.setattr(bench_module, "build_bench",
                        lambda out, settings, overwrite: built.append(out) or {"n_images": 0})
    assert demo._bench(tmp_path, 5, 0) == bench and built == [bench]
    (bench / "bench.json").write_text(json.dumps({"per_class": 5, "seed": 0}))
    assert demo._bench(tmp_path, 5, 0) == bench and built == [bench]  # as built: reused
