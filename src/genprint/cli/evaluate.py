"""``genprint eval MODEL --bench DIR --protocol P`` or ``genprint eval MODEL --data PATH``: open-set
metrics on a benchmark protocol, or on labelled images of one's own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from genprint.cli.app import app
from genprint.cli.output import (
    check_out_file,
    console,
    esc,
    format_metric,
    print_json,
    progress_bar,
    to_json,
    warnings_as_notes,
)
from genprint.cli.ray_options import (
    DEFAULT_RAY_ACTORS,
    RayActorsOption,
    RayAddressOption,
    check_ray_options,
    ray_rows,
)
from genprint.evaluation.report import SUMMARY_ROWS
from genprint.storage.atomic import write_text_atomic

METRIC_ROWS = SUMMARY_ROWS  # the same labels as the HTML report's summary table


@app.command("eval")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory.")],
    bench: Annotated[Path | None, typer.Option(
        help="Benchmark folder from `genprint bench build` (use with --protocol).")] = None,
    data: Annotated[Path | None, typer.Option(
        help="Labelled images of your own: a manifest (.csv/.parquet), a folder with a "
             "manifest, or a folder with one sub-folder per source. Its test split is used "
             "when it has splits, else every image; sources the model was not trained on "
             "(and the label 'unknown') count as unknown.")] = None,
    protocol: Annotated[str | None, typer.Option(
        help="Protocol of --bench to evaluate (seed, architecture, family, all; default: the "
             "one the model was trained for, else all). A model trained for another protocol "
             "is refused.")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write metrics as JSON to this "
                                                                 "file ('-' for stdout).")] = None,
    perturb: Annotated[list[str] | None, typer.Option(
        "--perturb", help="Also evaluate under this perturbation (repeatable; 'all' for every "
                          "one: jpeg95, jpeg75, jpeg50, resize0.5, blur0.5, blur1, crop, "
                          "noise).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report "
                                                     "(plots and tables) to this file.")] = None,
    results: Annotated[Path | None, typer.Option(
        "--results", help="Write the answer for every test image (clean run) to a .csv, "
                          ".parquet or .json file: attribute's columns plus true_source, and "
                          "a row with the reason for each file left out.")] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Read and attribute the test images on Ray Data (pip install "
                      "'genprint\\[ray]'): a pool of actors, each holding the model, on a local "
                      "Ray or a cluster (--ray-address; every node must see the files and the "
                      "model at the same paths). Same figures as without; not with --perturb.")
    ] = False,
    ray_address: RayAddressOption = None,
    ray_actors: RayActorsOption = None,
) -> None:
    """Evaluate a model on a protocol's test split, or on labelled data of your own
    (thresholds were fixed on validation data)."""
    import genprint
    from genprint.evaluation.evaluate import (
        bench_view,
        evaluate_answers,
        evaluate_conditions,
        load_eval_data,
    )
    from genprint.evaluation.perturb import expand_perturbations
    from genprint.io.sources import ManifestError
    from genprint.registry import RegistryError
    from genprint.scale import ScaleError
    from genprint.storage.model_dir import ModelFormatError
    from genprint.world.protocols import ProtocolView

    if (data is None) == (bench is None):
        raise typer.BadParameter("give exactly one of --data or --bench",
                                 param_hint="--data / --bench")
    if data is not None and protocol is not None:
        raise typer.BadParameter("--protocol applies to --bench only; with --data, known "
                                 "sources are the model's", param_hint="--protocol")
    check_ray_options(ray, ray_address, ray_actors)
    if ray and perturb:
        raise typer.BadParameter("--perturb runs in this process (it transforms the decoded "
                                 "pixels); evaluate perturbations without --ray",
                                 param_hint="--perturb")
    check_out_file(json_path, "--json")
    check_out_file(report, "--report")
    if results is not None:
        from genprint.results import check_results_path

        try:
            check_results_path(results)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--results") from None
    try:
        conditions = expand_perturbations(perturb or [])
    except RegistryError as exc:
        raise typer.BadParameter(str(exc), param_hint="--perturb") from None
    try:
        attributor = genprint.load(model)
    except ModelFormatError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    trained_for = getattr(attributor, "training_info_", {}).get("protocol")
    if (bench is not None and isinstance(trained_for, str) and trained_for
            and trained_for in _bench_protocols(bench)):
        if protocol is None:
            protocol = trained_for  # the protocol it was trained for, not always 'all'
        elif protocol != trained_for:
            console.print(f"[red]error:[/red] {esc(str(model))} was trained for protocol "
                          f"{esc(repr(trained_for))}: its known and unknown sources are that "
                          f"protocol's, so figures under the name {esc(repr(protocol))} would "
                          f"be another protocol's. Evaluate it with --protocol "
                          f"{esc(trained_for)} (or leave --protocol out), or train a model on "
                          f"protocol {esc(repr(protocol))}")
            raise typer.Exit(2)
    target: Any = bench
    root: Path | None = None
    subject = f"protocol {protocol or 'all'}"
    extra: dict[str, Any] = {}
    if data is not None:
        try:
            own = load_eval_data(data, attributor.classes_)
        except ManifestError as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
        for problem in own.problems:
            console.print(f"[yellow]note:[/yellow] {esc(problem)}")
        trained_on = getattr(attributor, "training_info_", {}).get("data")
        same = bool(trained_on) and os.path.realpath(trained_on) == os.path.realpath(data)
        if own.split is None and same:
            console.print("[yellow]warning:[/yellow] the model was trained on this data, which "
                          "has no split: every image, training and validation ones included, is "
                          "evaluated, so the figures are optimistic. Evaluate on other images, "
                          "or give the data a split column and train on its train/val rows")
        target, root, protocol = own.view, own.root, own.view.protocol.name
        which = ("the test split" if own.split == "test"
                 else "every image (the data has no split)")
        console.print(f"evaluating on {which} of {esc(str(data))}: {len(own.view.test)} "
                      f"image(s); known: {esc(', '.join(own.view.protocol.known)) or 'none'}; "
                      f"unknown: {esc(_unknown_sources(own.view.protocol.unknown))}")
        subject = f"{data.name} ({'test split' if own.split else 'all images'})"
        extra = {"data": str(data), "eval_split": own.split or "all"}
    protocol = protocol or "all"
    with progress_bar(disable=json_path == "-" or not console.is_terminal) as bar:
        label = "evaluating" + (f" (clean + {len(conditions)} perturbations)" if conditions
                                else "")
        task = bar.add_task(label, total=None)
        try:
            with warnings_as_notes():
                if not isinstance(target, ProtocolView):  # read once: its size sets the total
                    target, root = bench_view(target, protocol), target
                bar.update(task, total=len(target.test) * (1 + len(conditions)))
                progress = lambda n: bar.advance(task, n)
                if ray:
                    run, perturbed = evaluate_answers(
                        attributor, target, protocol,
                        lambda paths, done: ray_rows(
                            model, paths, attributor, address=ray_address,
                            actors=ray_actors or DEFAULT_RAY_ACTORS, on_progress=done),
                        on_progress=progress, root=root, require_overlap=True), {}
                else:
                    run, perturbed = evaluate_conditions(
                        attributor, target, protocol, conditions, root=root,
                        require_overlap=True, on_progress=progress, embed=report is not None)
        except (ManifestError, ValueError) as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
        except (ModelFormatError, ScaleError, RuntimeError) as exc:  # --ray: Ray missing or
            # unreachable, a worker that cannot load the model or loads another one; a test
            # file that changed between two passes
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
    metrics = {**run.metrics, **extra}
    if conditions:
        metrics["perturbations"] = perturbed
    # the files that hold the figures first: a report that cannot be drawn loses nothing else
    if results is not None:
        _write_per_image(run, metrics, results)
    if json_path == "-":
        print_json(metrics)
    else:
        print_metrics_table(metrics, title=f"{metrics.get('method')} on {subject}")
        if conditions:
            print_perturbation_table(metrics, perturbed)
        if json_path:
            write_text_atomic(json_path, to_json(metrics) + "\n")
            console.print(f"metrics written to {esc(str(json_path))}")
    if report is not None:
        from genprint.evaluation.report import write_report

        try:
            write_report(run, report, perturbations=perturbed or None,
                         title=f"{attributor.method} on {subject} ({model.name})")
        except Exception as exc:  # noqa: BLE001 - a plotting failure; the figures are kept
            kept = [str(p) for p in (results, json_path) if p and str(p) != "-"]
            console.print(f"[red]error:[/red] the report could not be written: "
                          f"{esc(type(exc).__name__)}: {esc(str(exc))}"
                          + (f" (the figures were written: {esc(', '.join(kept))})"
                             if kept else ""))
            raise typer.Exit(1) from None
        console.print(f"report written to {esc(str(report))}")


def _bench_protocols(bench: Path) -> list[str]:
    """The protocols a benchmark folder defines ([] if it cannot be read: the evaluation then
    says why)."""
    from genprint.io.sources import ManifestError
    from genprint.world.protocols import read_protocols

    try:
        return list(read_protocols(bench))
    except (ManifestError, OSError, ValueError):
        return []


def _write_per_image(run: Any, metrics: dict[str, Any], path: Path) -> None:
    """Every test image's answer beside its true source, then the files left out."""
    from genprint.results import Attribution, write_labelled_results

    rows = list(run.results)
    sources = [i.source for i in run.items]
    origins = [i.origin for i in run.items]
    model_id = next((r.model_sha256 for r in rows if r.model_sha256), None)
    for bad in metrics.get("unreadable_test") or []:
        rows.append(Attribution(bad["path"], error=bad["reason"], error_code=bad["error_code"],
                                sha256=bad.get("sha256"), model_sha256=model_id))
        sources.append(bad.get("source"))
        origins.append(bad.get("origin"))
    write_labelled_results(rows, sources, path, origins)
    console.print(f"per-image answers written to {esc(str(path))}")


def print_perturbation_table(clean: dict[str, Any], perturbed: dict[str, dict[str, Any]]) -> None:
    """Print the headline metrics per robustness condition on stdout."""
    from rich.console import Console
    from rich.table import Table

    from genprint.evaluation.report import thresholds_phrase

    columns = [("closed_set_accuracy", "closed acc"), ("auroc", "AUROC"),
               ("tnr_at_tpr95", "TNR@95"), ("oscr", "OSCR"),
               ("real_vs_generated_auroc", "real/gen AUROC"),
               ("known_correct", "known given source"),
               ("unknown_rejected", "unknown called unknown")]
    table = Table(title=f"robustness ({thresholds_phrase(clean)})")
    table.add_column("condition")
    for _, label in columns:
        table.add_column(label, justify="right")
    table.add_column("images changed", justify="right")
    for name, m in {"none": clean, **perturbed}.items():
        share = m.get("perturbed_share")
        table.add_row(name, *[format_metric(m.get(k)) for k, _ in columns],
                      "" if name == "none" or share is None else f"{share:.0%}")
    Console(emoji=False).print(table)
    for name, m in perturbed.items():
        if m.get("perturbed_share") == 0:
            console.print(f"[yellow]note:[/yellow] {esc(name)} changed no test image (e.g. a "
                          "crop keeps images no larger than the method's input whole), so its "
                          "row repeats the clean one")


def print_metrics_table(metrics: dict[str, Any], title: str | None = None) -> None:
    """Print one model's metrics as a table on stdout (``title``: default method and protocol)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or f"{metrics.get('method')} on protocol {metrics.get('protocol')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in METRIC_ROWS:
        table.add_row(label, format_metric(metrics.get(key)))
    for name, value in sorted((metrics.get("per_unknown_auroc") or {}).items()):
        table.add_row(f"AUROC vs {name}", format_metric(value))
    table.add_row("known / unknown test images",
                  f"{metrics.get('n_known_test')} / {metrics.get('n_unknown_test')}")
    if metrics.get("n_unreadable_test"):
        table.add_row("test files left out (could not be used)",
                      str(metrics["n_unreadable_test"]))
    for conditions in metrics.get("thresholds_recalibrated_under") or []:
        table.add_row("thresholds recalibrated under", ", ".join(conditions))
    if metrics.get("n_test_copies"):
        table.add_row("test files that copy another (counted again)",
                      str(metrics["n_test_copies"]))
    if metrics.get("n_test_seen_in_training"):
        table.add_row("test images the model was fitted on",
                      str(metrics["n_test_seen_in_training"]))
    Console(emoji=False).print(table)


def _unknown_sources(names: list[str]) -> str:
    """The unknown sources of the user's own data, in words (their label may be `unknown`)."""
    from genprint import UNKNOWN

    named = [n for n in names if n != UNKNOWN]
    words = ([f"images labelled {UNKNOWN!r}"] if UNKNOWN in names else []) + named
    return ", ".join(words) or "none"
