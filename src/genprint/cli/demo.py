"""``genprint demo``: the one-command tour on the built-in world.

Builds a benchmark from the shipped zoo and simulated cameras, trains every available method on
protocol ``all`` (thresholds from validation data), evaluates each on the test split, and prints
one comparison table. Everything lands in ``--out`` (benchmark, models, ``results.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from genprint.cli.app import app
from genprint.cli.output import console, esc, format_metric, print_json, to_json, warnings_as_notes
from genprint.storage.atomic import write_text_atomic

DEMO_PROTOCOL = "all"


def _make_attributor(method: str, quick: bool) -> Any:
    from genprint.methods.base import METHODS

    cls = METHODS.get(method)
    return cls(**cls.demo_params(quick))


def _bench(out: Path, per_class: int, seed: int) -> Path:
    from genprint.world.bench import BenchSettings, build_bench

    bench = out / "bench"
    settings = BenchSettings(per_class=per_class, seed=seed)
    info = bench / "bench.json"
    if info.is_file():
        from genprint.io.sources import ManifestError, check_built_bench

        try:
            stored = json.loads(info.read_text())
            check_built_bench(bench)
        except (ManifestError, ValueError, OSError) as exc:
            console.print(f"note: not reusing the benchmark in {esc(str(bench))}: "
                          f"{esc(str(exc))}; building it again")
            stored = {}
        if stored.get("per_class") == per_class and stored.get("seed") == seed:
            console.print(f"reusing the benchmark in {esc(str(bench))}")
            return bench
    with console.status(f"building the benchmark ({per_class} images per source)"):
        summary = build_bench(bench, settings, overwrite=True)
    console.print(f"benchmark: {summary['n_images']} images in {esc(str(bench))}")
    return bench


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the benchmark, models and results.")] = Path(
        "genprint-demo"),
    quick: Annotated[bool, typer.Option(help="Small sizes (a few minutes on 2 CPU cores).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the benchmark.")] = 0,
    per_class: Annotated[int | None, typer.Option(help="Images per source (default 300, "
                                                       "--quick 60).")] = None,
    methods: Annotated[list[str] | None, typer.Option("--method", help="Only these methods "
                                                      "(repeatable); default: every method.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Build a benchmark from the built-in world, train and evaluate every available method on
    protocol `all`, and print one comparison table."""
    from genprint.evaluation.evaluate import evaluate
    from genprint.evaluation.report import write_report
    from genprint.methods.base import method_names
    from genprint.methods.fitting import fit_on_items
    from genprint.world.protocols import protocol_view

    per_class = per_class or (60 if quick else 300)
    chosen = methods or method_names()
    unknown_methods = sorted(set(chosen) - set(method_names()))
    if unknown_methods:
        raise typer.BadParameter(f"unknown method(s) {', '.join(unknown_methods)}; available: "
                                 f"{', '.join(method_names())}", param_hint="--method")
    out.mkdir(parents=True, exist_ok=True)
    bench = _bench(out, per_class, seed)
    view = protocol_view(bench, DEMO_PROTOCOL)
    rows: list[dict[str, Any]] = []
    for method in chosen:
        t0 = time.perf_counter()
        with console.status(f"training {method} on protocol {DEMO_PROTOCOL}"):
            model = _make_attributor(method, quick)
            model.training_info_ = {"bench": str(bench), "protocol": DEMO_PROTOCOL}
            fit_on_items(model, view.train, view.val)
            model.save(out / "models" / method, overwrite=True)
        train_s = time.perf_counter() - t0
        cap = type(model).demo_test_cap(quick)
        if cap is not None:
            console.print(f"{method}: evaluated on the first {cap} test images of each source "
                          "(its per-image cost does not fit the demo's budget; `genprint eval` "
                          "uses them all)")
        t0 = time.perf_counter()
        with warnings_as_notes(), console.status(f"evaluating {method}"):
            run = evaluate(model, bench, DEMO_PROTOCOL, max_per_source=cap)
        eval_s = time.perf_counter() - t0
        report = write_report(run, out / f"report-{method}.html",
                              title=f"genprint demo: {method} on protocol {DEMO_PROTOCOL}")
        console.print(f"report: {esc(str(report))}")
        metrics = {**run.metrics, "train_seconds": round(train_s, 1),
                   "eval_seconds": round(eval_s, 1), "test_cap_per_source": cap}
        rows.append(metrics)
    write_text_atomic(out / "results.json", to_json(rows) + "\n")
    for stale in sorted(set(method_names()) - set(chosen)):  # from an earlier run in this folder
        old = out / f"report-{stale}.html"
        if old.is_file():
            old.unlink()
            console.print(f"removed {esc(str(old))}: {stale} was not run this time, and the "
                          "report would not match results.json")
        if (out / "models" / stale).is_dir():
            console.print(f"note: {esc(str(out / 'models' / stale))} is left from an earlier "
                          "run in this folder (not in results.json; it may have been trained "
                          "on an earlier benchmark)")
    if json_out:
        print_json(rows)
    else:
        print_comparison(rows)
        console.print(f"models, benchmark and results.json are in {esc(str(out))}")


METRIC_COLUMNS = [("closed_set_accuracy", "closed\nacc"), ("macro_f1", "macro-F1"),
                  ("auroc", "AUROC"), ("tnr_at_tpr95", "TNR@95"), ("oscr", "OSCR"),
                  ("real_vs_generated_auroc", "real/gen\nAUROC"),
                  ("held_out_camera_real_accuracy", "held-out\ncams real")]
"""Headers broken by hand so that the table fits an 80-column terminal without cutting words."""
OPERATING_COLUMNS = [("known_correct", "known images given their source"),
                     ("known_called_unknown", "known images called unknown"),
                     ("unknown_rejected", "unknown images called unknown")]
COST_COLUMNS = [("n_known_test", "known test images"), ("n_unknown_test", "unknown test images"),
                ("train_seconds", "train s"), ("eval_seconds", "eval s")]


def _cell(row: dict[str, Any], key: str) -> str:
    """A table cell: seconds as whole numbers, metrics with 3 decimals or n/a."""
    value = row.get(key)
    if key.endswith("_seconds") and isinstance(value, int | float):
        return f"{value:.0f}"
    return format_metric(value)


def print_comparison(rows: list[dict[str, Any]]) -> None:
    """Three tables with a row per method: the headline metrics, the answers at each model's
    own thresholds, then what each run cost (test images used, training and evaluation
    seconds). Narrow tables fit an 80-column terminal; one wide one would be cut."""
    from rich.console import Console
    from rich.table import Table

    console_out = Console(emoji=False)
    titles = (f"protocol {DEMO_PROTOCOL}: test split, thresholds from validation",
              "the answers a user gets (each model's own thresholds)",
              "what each method used")
    for title, columns in zip(titles, (METRIC_COLUMNS, OPERATING_COLUMNS, COST_COLUMNS),
                              strict=True):
        table = Table(title=title)
        table.add_column("method")
        for _, label in columns:
            table.add_column(label, justify="right", overflow="fold")
        for r in rows:
            table.add_row(r["method"], *[_cell(r, k) for k, _ in columns])
        console_out.print(table)
