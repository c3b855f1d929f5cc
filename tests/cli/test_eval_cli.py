"""`genprint eval` with perturbations and a report, `evaluate_conditions`, `genprint compare`.

Everything runs on a tiny benchmark written by the test itself (no world, no zoo).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from genprint.cli.app import app
from genprint.evaluation.evaluate import evaluate, evaluate_conditions
from genprint.evaluation.perturb import perturbation_names
from tests.conftest import textured

runner = CliRunner()

SOURCES = {"real": 2, "gan-a": 3, "gan-b": 5, "gan-u": 7}  # source -> period of its trace
SPLITS = ["train"] * 8 + ["val"] * 4 + ["test"] * 4
PROTOCOLS = {
    "all": {"known": ["real", "gan-a", "gan-b"], "unknown": ["gan-u"]},
    "pair": {"known": ["real", "gan-a", "gan-u"], "unknown": ["gan-b"]},
}
METRIC_KEYS = {"method", "protocol", "closed_set_accuracy", "macro_f1", "auroc", "ap",
               "tnr_at_tpr95", "oscr", "real_vs_generated_auroc", "per_unknown_auroc",
               "n_known_test", "n_unknown_test"}


def _make_bench(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for source, period in SOURCES.items():
        (root / source).mkdir(parents=True)
        for k, split in enumerate(SPLITS):
            rel = f"{source}/{k:02d}.png"
            Image.fromarray(textured(rng, 36, 40, period)).save(root / rel)
            kind = "real" if source == "real" else "generated"
            rows.append({"path": rel, "source": source, "split": split, "kind": kind,
                         "origin": "cam-1" if source == "real" else source})
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "source", "split", "kind", "origin"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "protocols.json").write_text(json.dumps(PROTOCOLS), encoding="utf-8")
    return root


def _train(bench: Path, protocol: str, out: Path) -> Path:
    from genprint.methods.baseline import BaselineAttributor
    from genprint.methods.fitting import fit_on_items
    from genprint.world.protocols import protocol_view

    view = protocol_view(bench, protocol)
    model = BaselineAttributor()
    model.training_info_ = {"bench": str(bench), "protocol": protocol}
    fit_on_items(model, view.train, view.val)
    model.save(out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evalcli")
    bench = _make_bench(root / "bench")
    return {"bench": bench, "all": _train(bench, "all", root / "model-all"),
            "pair": _train(bench, "pair", root / "model-pair"), "root": root}


def test_eval_json_perturbation_and_report(world: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(world["bench"]),
                              "--protocol", "all", "--perturb", "jpeg75", "--json", "-",
                              "--report", str(report)])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert METRIC_KEYS | {"perturbations"} <= set(metrics)
    assert metrics["method"] == "baseline" and metrics["protocol"] == "all"
    assert metrics["n_known_test"] == 12 and metrics["n_unknown_test"] == 4
    assert set(metrics["per_unknown_auroc"]) == {"gan-u"}
    assert metrics["closed_set_accuracy"] > 0.5
    assert list(metrics["perturbations"]) == ["jpeg75"]
    assert METRIC_KEYS <= set(metrics["perturbations"]["jpeg75"])
    assert metrics["perturbations"]["jpeg75"]["n_known_test"] == 12
    assert metrics["perturbations"]["jpeg75"]["perturbed_share"] == 1.0
    page = report.read_text(encoding="utf-8")
    ids = set(re.findall(r'<img id="(plot-[a-z]+)" alt="[^"]+" src="data:image/png;base64,', page))
    assert ids == {"plot-confusion", "plot-roc", "plot-oscr", "plot-histogram", "plot-embedding",
                   "plot-perturbations"}
    assert 'id="table-perturbations"' in page and "<th>jpeg75</th>" in page


def test_eval_table_output_and_json_file(world: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(world["bench"]),
                              "--json", str(path)])
    assert out.exit_code == 0, out.output
    assert "OSCR" in out.stdout and "perturbations" not in json.loads(path.read_text())


def test_eval_refuses_bad_perturbation_and_wrong_protocol(world: dict[str, Path]) -> None:
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(world["bench"]),
                              "--perturb", "jpeg10"])
    assert out.exit_code == 2 and "jpeg75" in out.output
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(world["bench"]),
                              "--protocol", "pair"])
    assert out.exit_code == 2 and "another protocol" in out.output


def test_evaluate_conditions_all_is_deterministic(world: dict[str, Path]) -> None:
    import genprint

    model = genprint.load(world["all"])
    run, conditions = evaluate_conditions(model, world["bench"], "all", ["all"])
    assert list(conditions) == perturbation_names()
    assert run.embeddings is None  # the baseline has no embed()
    for name, m in conditions.items():
        assert set(run.metrics) | {"perturbed_share"} == set(m), name
        assert 0.0 <= m["perturbed_share"] <= 1.0, name
        assert m["n_known_test"] + m["n_unknown_test"] == 16, name  # crop keeps >= min_size
    again = evaluate(model, world["bench"], "all", perturb="noise")
    assert again.metrics["perturbation"] == "noise"
    assert again.metrics["auroc"] == conditions["noise"]["auroc"]
    assert [r.score for r in again.results] != [r.score for r in run.results]


def test_a_test_set_too_large_to_keep_is_read_again_with_the_same_figures(
        world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genprint
    from genprint.evaluation import evaluate as ev

    bench = tmp_path / "bench"
    shutil.copytree(world["bench"], bench)
    (bench / "gan-a" / f"{SPLITS.index('test'):02d}.png").write_bytes(b"broken")
    model = genprint.load(world["all"])
    with pytest.warns(UserWarning, match="1 test file"):
        kept, kept_conditions = evaluate_conditions(model, bench, "all", ["jpeg75", "crop"])
    monkeypatch.setattr(ev, "KEEP_PIXELS", 1)  # nothing fits: each pass reads the files again
    reads = []
    real_iter = ev.iter_images
    monkeypatch.setattr(ev, "iter_images", lambda paths, **kw: (reads.append(len(paths))
                                                                or real_iter(paths, **kw)))
    with pytest.warns(UserWarning, match="1 test file"):
        again, again_conditions = evaluate_conditions(model, bench, "all", ["jpeg75", "crop"])
    assert reads == [16, 15, 15]  # the clean pass reads all; the others only the usable ones
    with pytest.warns(UserWarning, match="1 test file"):
        evaluate_conditions(model, bench, "all", [])  # nothing follows: nothing kept
    monkeypatch.setattr(ev, "KEEP_PIXELS", 10**9)
    reads.clear()
    with pytest.warns(UserWarning, match="1 test file"):
        evaluate_conditions(model, bench, "all", ["jpeg75", "crop"])
    assert reads == [16]  # kept: the perturbed runs reuse the clean run's pixels
    same = json.dumps([again.metrics, again_conditions], sort_keys=True, default=str)
    assert same == json.dumps([kept.metrics, kept_conditions], sort_keys=True, default=str)
    assert [r.score for r in again.results] == [r.score for r in kept.results]
    assert again.metrics["n_unreadable_test"] == 1


def test_evaluate_keeps_embeddings_when_the_method_has_embed(world: dict[str, Path]) -> None:
    import genprint

    model = genprint.load(world["all"])
    model.embed = model.features  # type: ignore[attr-defined]
    run = evaluate(model, world["bench"], "all")
    assert run.embeddings is not None and run.embeddings.shape[0] == len(run.items) == 16


def test_compare_table_json_and_markdown(world: dict[str, Path], tmp_path: Path) -> None:
    md = tmp_path / "table.md"
    out = runner.invoke(app, ["compare", str(world["all"]), str(world["pair"]), "--bench",
                              str(world["bench"]), "--json", "-", "--markdown", str(md)])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(Path(r["model"]).name, r["protocol"]) for r in rows] == [
        ("model-all", "all"), ("model-pair", "pair")]
    assert all(METRIC_KEYS <= set(r) for r in rows)
    lines = md.read_text().splitlines()
    assert lines[0] == "| method | all | pair |"
    assert lines[2].startswith("| baseline (model-all) | ") and lines[2].endswith(" | — |")
    assert lines[3].startswith("| baseline (model-pair) | — | ")
    out = runner.invoke(app, ["compare", str(world["all"]), "--bench", str(world["bench"]),
                              "--protocol", "all"])
    assert out.exit_code == 0, out.output
    assert "baseline" in out.stdout and "all" in out.stdout
    out = runner.invoke(app, ["compare", str(world["all"]), "--bench", str(world["bench"]),
                              "--protocol", "pair"])
    assert out.exit_code == 2


def test_compare_skips_a_model_that_knows_none_of_the_bench_sources(
        world: dict[str, Path], tmp_path: Path) -> None:
    """Every source renamed: compare used to print a row of n/a and exit 0."""
    import shutil

    bench = tmp_path / "other"
    shutil.copytree(world["bench"], bench)
    with open(bench / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["source"] = "x-" + row["source"]
    with open(bench / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    protocols = {"all": {k: ["x-" + s for s in v] for k, v in PROTOCOLS["all"].items()}}
    (bench / "protocols.json").write_text(json.dumps(protocols), encoding="utf-8")
    out = runner.invoke(app, ["compare", str(world["all"]), "--bench", str(bench)])
    assert out.exit_code == 2 and "none of the test images" in _flat(out.output)


def test_a_perturbation_that_changes_nothing_is_reported(world: dict[str, Path]) -> None:
    import genprint

    model = genprint.load(world["all"])
    same = evaluate(model, world["bench"], "all", perturb=lambda img, seed: img)
    assert same.metrics["perturbed_share"] == 0.0
    half = evaluate(model, world["bench"], "all",
                    perturb=lambda img, seed: img if seed % 2 else 255 - img)
    assert 0.0 < half.metrics["perturbed_share"] < 1.0
    assert "perturbed_share" not in evaluate(model, world["bench"], "all").metrics


def test_unreadable_test_files_are_counted_and_named(world: dict[str, Path],
                                                     tmp_path: Path) -> None:
    import shutil

    bench = tmp_path / "bench"
    shutil.copytree(world["bench"], bench)
    broken = bench / "gan-a" / f"{SPLITS.index('test'):02d}.png"  # a test image
    broken.write_bytes(broken.read_bytes()[:40])
    report = tmp_path / "r.html"
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench), "--json", "-",
                              "--report", str(report)])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert metrics["n_unreadable_test"] == 1 and metrics["n_known_test"] == 11
    [row] = metrics["unreadable_test"]
    assert row["path"].endswith(f"gan-a/{broken.name}") and row["error_code"] == "truncated"
    page = report.read_text(encoding="utf-8")
    assert "test files that could not be used (left out)" in page and broken.name in page
    gone = bench / "gan-b" / f"{SPLITS.index('test'):02d}.png"  # a missing test file is
    gone.unlink()  # counted apart from the unreadable one, not lumped in with it
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench)])
    assert out.exit_code == 0, out.output
    assert ("1 test file(s) could not be used (unreadable, too small for this model, or of one "
            "colour) and are left out, besides 1 missing file(s)") in _flat(out.output)
    # every answer behind the figures, row by row, with the files left out
    per_image = tmp_path / "answers.csv"
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench), "--json", "-",
                              "--results", str(per_image)])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    with open(per_image, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and sum(r["error_code"] != "" for r in rows) == 2
    scored = [r for r in rows if not r["error_code"]]
    known = [r for r in scored if r["true_source"] in ("real", "gan-a", "gan-b")]
    assert len(known) == metrics["n_known_test"]
    accuracy = np.mean([r["candidate"] == r["true_source"] for r in known])
    assert accuracy == pytest.approx(metrics["closed_set_accuracy"])
    assert all(len(r["sha256"]) == 64 for r in scored)
    assert {r["true_origin"] for r in scored if r["true_source"] == "real"} == {"cam-1"}
    assert {r["true_source"] for r in rows if r["error_code"]} == {"gan-a", "gan-b"}
    assert all(json.loads(r["scores"]) == {} for r in rows if r["error_code"])
    bad = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench), "--results",
                              str(tmp_path / "answers.txt")])
    assert bad.exit_code == 2 and "--results" in bad.output


# --- `genprint eval MODEL --data PATH`: labelled images of one's own ---------------------------


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _make_folder(root: Path, sources: dict[str, int], n: int = 4) -> Path:
    """A folder with one sub-folder of ``n`` images per source (no split)."""
    rng = np.random.default_rng(1)
    for source, period in sources.items():
        (root / source).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(textured(rng, 36, 40, period)).save(root / source / f"{k}.png")
    return root


def test_eval_data_folder_counts_sources_the_model_does_not_know_as_unknown(
        world: dict[str, Path], tmp_path: Path) -> None:
    data = _make_folder(tmp_path / "mine", SOURCES)  # gan-u: a source the model never saw
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data), "--json", "-"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n_known_test"] == 12 and metrics["n_unknown_test"] == 4
    assert isinstance(metrics["auroc"], float) and 0.0 <= metrics["auroc"] <= 1.0
    assert set(metrics["per_unknown_auroc"]) == {"gan-u"}
    assert metrics["eval_split"] == "all" and metrics["data"] == str(data)
    assert "every image (the data has no split)" in _flat(out.output)
    (data / "gan-u").rename(data / "unknown")  # the same images in an `unknown/` folder
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data), "--json", "-"])
    assert out.exit_code == 0, out.output
    again = json.loads(out.stdout)
    assert again["n_unknown_test"] == 4 and set(again["per_unknown_auroc"]) == {"unknown"}
    assert again["auroc"] == metrics["auroc"]
    assert "unknown: images labelled 'unknown'" in _flat(out.output)


def test_eval_data_manifest_uses_the_test_split_and_the_unknown_label(
        world: dict[str, Path], tmp_path: Path) -> None:
    with open(world["bench"] / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # gan-u's test rows labelled `unknown`, paths relative to the new manifest
        row["path"] = str(Path("..") / "bench" / row["path"])
        if row["source"] == "gan-u" and row["split"] == "test":
            row["source"] = "unknown"
    (tmp_path / "mine").mkdir()
    manifest = tmp_path / "mine" / "labels.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import shutil

    shutil.copytree(world["bench"], tmp_path / "bench", ignore=shutil.ignore_patterns("*.json"))
    report = tmp_path / "r.html"
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(manifest), "--json", "-",
                              "--perturb", "jpeg75", "--report", str(report)])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    # only the 4 test rows of each source: 12 known, 4 `unknown`
    assert metrics["n_known_test"] == 12 and metrics["n_unknown_test"] == 4
    assert set(metrics["per_unknown_auroc"]) == {"unknown"}
    assert isinstance(metrics["auroc"], float)
    assert metrics["eval_split"] == "test" and "the test split" in _flat(out.output)
    assert metrics["perturbations"]["jpeg75"]["n_unknown_test"] == 4
    assert report.is_file()
    table = runner.invoke(app, ["eval", str(world["all"]), "--data", str(manifest)])
    assert table.exit_code == 0, table.output
    assert "AUROC vs unknown" in table.stdout and "12 / 4" in table.stdout


def test_eval_needs_exactly_one_of_data_and_bench(world: dict[str, Path]) -> None:
    both = runner.invoke(app, ["eval", str(world["all"]), "--data", str(world["bench"]),
                               "--bench", str(world["bench"])])
    neither = runner.invoke(app, ["eval", str(world["all"])])
    for out in (both, neither):
        assert out.exit_code == 2
        assert "exactly one of --data or --bench" in _flat(out.output)
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(world["bench"]),
                              "--protocol", "all"])
    assert out.exit_code == 2 and "--bench only" in _flat(out.output)


def test_eval_data_of_only_unseen_sources_reports_how_many_are_called_unknown(
        world: dict[str, Path], tmp_path: Path) -> None:
    data = _make_folder(tmp_path / "other", {"gan-x": 3, "gan-y": 5})
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data), "--json", "-"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert metrics["n_known_test"] == 0 and metrics["n_unknown_test"] == 8
    assert 0.0 <= metrics["unknown_rejected"] <= 1.0 and metrics["auroc"] is None
    assert "holds only sources the model does not know" in _flat(out.output)


def test_eval_data_notes_model_sources_missing_from_the_data(world: dict[str, Path],
                                                              tmp_path: Path) -> None:
    data = _make_folder(tmp_path / "part", {"real": 2, "gan-a": 3, "gan-u": 7})
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data), "--json", "-"])
    assert out.exit_code == 0, out.output
    assert "gan-b are not among the known sources" in _flat(out.output)
    assert json.loads(out.stdout)["n_known_test"] == 8


def test_eval_data_refuses_unlabelled_images(world: dict[str, Path], tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(3):
        Image.fromarray(textured(np.random.default_rng(k), 36, 40, 3)).save(flat / f"{k}.png")
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(flat)])
    assert out.exit_code == 2 and "no source label" in _flat(out.output)


def test_eval_bench_notes_test_rows_outside_the_protocol(world: dict[str, Path],
                                                         tmp_path: Path) -> None:
    import shutil

    bench = tmp_path / "bench"
    shutil.copytree(world["bench"], bench)
    with open(bench / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if row["source"] == "gan-u" and row["split"] == "test":
            row["source"] = "unknown"
    with open(bench / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench), "--json", "-"])
    assert out.exit_code == 0, out.output
    assert "4 test image(s) left out" in _flat(out.output) and "unknown: 4" in _flat(out.output)
    assert json.loads(out.stdout)["n_unknown_test"] == 0
    protocols = {"all": {"known": ["real", "gan-a", "gan-b"], "unknown": ["gan-u", "unknown"]}}
    (bench / "protocols.json").write_text(json.dumps(protocols), encoding="utf-8")
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench), "--json", "-"])
    assert out.exit_code == 0, out.output
    assert "left out" not in out.output and json.loads(out.stdout)["n_unknown_test"] == 4


def test_eval_takes_the_protocol_the_model_was_trained_for_and_refuses_another(
        world: dict[str, Path], tmp_path: Path) -> None:
    """A model trained for protocol P is evaluated on P when --protocol is left out, and
    refused under another protocol's name (its figures would be P's, labelled otherwise)."""
    out = runner.invoke(app, ["eval", str(world["pair"]), "--bench", str(world["bench"]),
                              "--json", "-"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["protocol"] == "pair"
    out = runner.invoke(app, ["eval", str(world["pair"]), "--bench", str(world["bench"]),
                              "--protocol", "all"])
    assert out.exit_code == 2 and "trained for protocol 'pair'" in _flat(out.output)


def test_eval_bench_refuses_a_model_trained_for_other_sources(world: dict[str, Path],
                                                              tmp_path: Path) -> None:
    import shutil

    bench = tmp_path / "bench"
    shutil.copytree(world["bench"], bench)
    protocols = {"u": {"known": ["gan-u"], "unknown": []}}
    (bench / "protocols.json").write_text(json.dumps(protocols), encoding="utf-8")
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(bench), "--protocol",
                              "u"])
    assert out.exit_code == 2 and "trained for other sources" in _flat(out.output)


def test_eval_data_warns_when_it_is_the_unsplit_training_data(tmp_path: Path) -> None:
    data = _make_folder(tmp_path / "mine", {"a": 2, "b": 3}, n=8)
    model = tmp_path / "m"
    out = runner.invoke(app, ["train", "baseline", "--data", str(data), "--out", str(model)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["eval", str(model), "--data", str(data)],
                        env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "the model was trained on this data" in _flat(out.output)
    other = _make_folder(tmp_path / "other", {"a": 2, "b": 3}, n=4)
    out = runner.invoke(app, ["eval", str(model), "--data", str(other)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "trained on this data" not in _flat(out.output)


def test_output_files_are_checked_before_evaluating(world: dict[str, Path],
                                                    tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for option in ("--json", "--report"):
        out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(world["bench"]),
                                  option, str(tmp_path / "f" / "out")], env={"COLUMNS": "300"})
        assert out.exit_code == 2 and "not a folder" in out.output, option
    out = runner.invoke(app, ["compare", str(world["all"]), "--bench", str(world["bench"]),
                              "--markdown", str(tmp_path)], env={"COLUMNS": "300"})
    assert out.exit_code == 2 and "is a folder" in out.output
    nested = tmp_path / "new" / "m.json"  # parents are created, as for --report
    out = runner.invoke(app, ["eval", str(world["all"]), "--bench", str(world["bench"]),
                              "--json", str(nested)])
    assert out.exit_code == 0 and json.loads(nested.read_text())["method"] == "baseline"


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
def test_report_of_a_model_with_a_non_utf8_name(world: dict[str, Path], tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff"))
    shutil.copytree(world["all"], odd)
    report = tmp_path / "r.html"
    out = runner.invoke(app, ["eval", str(odd), "--bench", str(world["bench"]),
                              "--report", str(report)])
    assert out.exit_code == 0, out.output
    assert "m\\xff" in report.read_text(encoding="utf-8")


def test_eval_with_no_usable_test_image_says_why(world: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    for source in ("real", "gan-a"):
        (data / source).mkdir(parents=True)
        (data / source / "x.png").write_text("not an image")
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data)],
                        env={"COLUMNS": "300"})
    assert out.exit_code == 2
    assert "none of the 2 test image(s) could be used (2 × not an image" in out.output


def test_a_uniform_test_image_is_counted_as_left_out_in_every_condition(
        world: dict[str, Path], tmp_path: Path) -> None:
    import genprint

    bench = tmp_path / "bench"
    shutil.copytree(world["bench"], bench)
    flat = bench / "gan-u" / f"{SPLITS.index('test'):02d}.png"
    Image.fromarray(np.full((36, 40, 3), 90, np.uint8)).save(flat)
    model = genprint.load(world["all"])
    progress: list[int] = []
    with pytest.warns(UserWarning, match="of one colour"):
        run, conditions = evaluate_conditions(model, bench, "all", ["jpeg75"],
                                              on_progress=progress.append)
    assert sum(progress) == 2 * 16  # every test file of both passes, left-out ones included
    [row] = run.metrics["unreadable_test"]
    assert row["error_code"] == "no_content" and row["path"].endswith(flat.name)
    assert run.metrics["n_unknown_test"] == 3
    assert conditions["jpeg75"]["n_unknown_test"] == 3  # the same images in every condition


def test_images_a_perturbation_leaves_without_content_are_warned_about(
        world: dict[str, Path]) -> None:
    """evaluate_conditions silenced every warning of the perturbed runs, this one too: the
    condition's figures were computed on fewer images without a word."""
    import genprint
    from genprint.evaluation import perturb

    def flat_half(image: np.ndarray, seed: int, min_size: int) -> np.ndarray:
        return np.zeros_like(image) if seed % 2 else image.copy()

    perturb.PERTURBATIONS.add("flat-half", flat_half, description="half made one colour")
    request_cleanup = perturb.PERTURBATIONS.remove
    model = genprint.load(world["all"])
    try:
        with pytest.warns(UserWarning, match=r"flat-half: \d+ test image\(s\) could not be "
                                             r"attributed once perturbed") as caught:
            _, conditions = evaluate_conditions(model, world["bench"], "all", ["flat-half"])
    finally:
        request_cleanup("flat-half")
    lost = conditions["flat-half"]["n_left_out_by_perturbation"]
    assert lost > 0 and any(f"{lost} test image" in str(w.message) for w in caught)


def test_eval_data_with_links_copies_and_a_link_loop(world: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """A link that loops is one unusable file, not a crash; a link to a folder that would
    count its files under a second label is refused; copies of one file are counted and named
    when their labels differ."""
    data = _make_folder(tmp_path / "mine", SOURCES)
    os.symlink("loop.png", data / "real" / "loop.png")  # a link to itself
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data), "--json", "-"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.stdout)
    assert [u["error_code"] for u in metrics["unreadable_test"]] == ["unreadable"]
    assert metrics["n_known_test"] == 12 and metrics["n_test_copies"] == 0
    # copies of one file: counted once per copy, and named when their labels differ
    shutil.copy(data / "real" / "0.png", data / "gan-a" / "copy-of-real.png")
    shutil.copy(data / "gan-b" / "1.png", data / "gan-b" / "again.png")
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data), "--json", "-",
                              "--report", str(tmp_path / "r.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "test files that copy another (same bytes; each counted)" in page
    assert page.count("a copy under two or more labels") == 2
    metrics = json.loads(out.stdout)
    assert metrics["n_test_copies"] == 2 and metrics["n_known_test"] == 14
    assert sorted(Path(p).name for p in metrics["test_copies_with_other_labels"]) == [
        "0.png", "copy-of-real.png"]
    text = _flat(out.output)
    assert "2 test file(s) are copies (same bytes) of another test file" in text
    assert "1 of these files carry two or more labels" in text
    # a link inside a source folder back to the top: every file would be read again as `real`
    os.symlink("..", data / "real" / "up")
    out = runner.invoke(app, ["eval", str(world["all"]), "--data", str(data)])
    assert out.exit_code == 2
    assert "one file cannot have two labels" in _flat(out.output)
    assert "Traceback" not in out.output


def test_images_the_method_cannot_analyse_are_left_out_as_with_answers_from_elsewhere(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A method may refuse an image after reading it (invert: a generator's crop of one
    colour). The local evaluation leaves it out of every pass and counts it, as the figures
    from rows computed elsewhere (`eval --ray`) do."""
    import dataclasses

    import genprint
    from genprint.evaluation.evaluate import evaluate_answers

    model = genprint.load(world["all"])
    refused = world["bench"] / "gan-b" / f"{SPLITS.index('test'):02d}.png"
    marker = np.asarray(Image.open(refused).convert("RGB"))
    own = model.predict_arrays

    def predict(images):
        out = own(images)
        return [dataclasses.replace(p, error="cannot analyse", error_code="no_content")
                if np.array_equal(img, marker) else p for img, p in zip(images, out, strict=True)]

    monkeypatch.setattr(model, "predict_arrays", predict)
    with pytest.warns(UserWarning, match="1 test file"):
        run, conditions = evaluate_conditions(model, world["bench"], "all", ["jpeg75"])
    assert run.metrics["n_unreadable_test"] == 1
    assert run.metrics["unreadable_test"][0]["path"] == str(refused)
    assert run.metrics["unreadable_test"][0]["error_code"] == "no_content"
    assert len(run.results) == len(run.items) == 15 and all(r.ok for r in run.results)
    assert run.embeddings is None or len(run.embeddings) == 15
    assert conditions["jpeg75"]["n_known_test"] + conditions["jpeg75"]["n_unknown_test"] == 15

    def answers(paths, on_progress=None):
        return model.iter_attribute(paths)

    with pytest.warns(UserWarning, match="1 test file"):
        elsewhere = evaluate_answers(model, world["bench"], "all", answers)
    assert (json.dumps(elsewhere.metrics, sort_keys=True, default=str)
            == json.dumps(run.metrics, sort_keys=True, default=str))


def test_compare_rows_of_models_with_the_same_folder_name_can_be_told_apart() -> None:
    from genprint.cli.compare import comparison_grid

    rows = [{"model": m, "method": "metric", "protocol": "all"}
            for m in ("run1/models/metric", "run2/models/metric")]
    rows.append({"model": "x/baseline", "method": "baseline", "protocol": "all"})
    _, body = comparison_grid(rows, ["all"])
    assert [r[0] for r in body] == ["metric (run1/models/metric)", "metric (run2/models/metric)",
                                    "baseline"]
