"""``genprint compare MODEL... --bench DIR``: a method × protocol table of headline metrics.

Each model is evaluated on the protocols it can be evaluated on: a model trained on a benchmark
protocol (``training.protocol`` in its card) on that protocol only; a model trained on other
data on every protocol whose unknown sources it does not know. ``--protocol`` restricts the
protocols. Each cell gives closed-set accuracy / AUROC (known vs unknown) / OSCR.
"""

from __future__ import annotations

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
    to_json,
    warnings_as_notes,
)
from genprint.storage.atomic import write_text_atomic

CELL_KEYS = ("closed_set_accuracy", "auroc", "oscr")
CELL_LEGEND = ("cells: closed-set accuracy / AUROC known vs unknown / OSCR, on the test split "
               "of each protocol (thresholds from validation data)")


def target_protocols(classes: list[str], trained_on: str | None, available: dict[str, Any],
                     wanted: list[str]) -> list[str]:
    """Protocols (among ``wanted``) a model can be evaluated on; see the module doc."""
    if trained_on:
        return [trained_on] if trained_on in wanted and trained_on in available else []
    return [p for p in wanted if not set(classes) & set(available[p].unknown)]


def cell(metrics: dict[str, Any] | None) -> str:
    """``acc / AUROC / OSCR`` for one evaluation, ``—`` when the model was not evaluated."""
    if metrics is None:
        return "—"
    return " / ".join(format_metric(metrics.get(k)) for k in CELL_KEYS)


def _row_labels(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Model path -> row label: the method name, with the model folder when methods repeat."""
    methods: dict[str, list[str]] = {}
    for r in rows:
        methods.setdefault(r["method"], [])
        if r["model"] not in methods[r["method"]]:
            methods[r["method"]].append(r["model"])
    labels = {}
    for method, paths in methods.items():
        for path, short in zip(paths, _distinct_suffixes(paths), strict=True):
            labels[path] = method if len(paths) == 1 else f"{method} ({short})"
    return labels


def _distinct_suffixes(paths: list[str]) -> list[str]:
    """The shortest trailing parts of ``paths`` that tell them apart (``run1/models/metric``
    and ``run2/models/metric`` give ``run1/models/metric`` and ``run2/models/metric``; ``a/m``
    and ``a/n`` give ``m`` and ``n``)."""
    parts = [Path(p).parts for p in paths]
    for k in range(1, max((len(p) for p in parts), default=1) + 1):
        shown = [str(Path(*p[-k:])) if p else "" for p in parts]
        if len(set(shown)) == len(shown):
            return shown
    return [str(p) for p in paths]


def comparison_grid(rows: list[dict[str, Any]],
                    protocols: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, body) of the method × protocol table from per-evaluation metric rows."""
    labels = _row_labels(rows)
    by_cell = {(r["model"], r["protocol"]): r for r in rows}
    body = [[label, *[cell(by_cell.get((model, p))) for p in protocols]]
            for model, label in labels.items()]
    return ["method", *protocols], body


def to_markdown(header: list[str], body: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table followed by the cell legend."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + f"\n\n_{CELL_LEGEND}._\n"


@app.command("compare")
def compare_cmd(
    models: Annotated[list[Path], typer.Argument(help="Saved attributor directories.")],
    bench: Annotated[Path, typer.Option(help="Benchmark folder from `genprint bench build`.")],
    protocol: Annotated[list[str] | None, typer.Option(
        "--protocol", help="Only these protocols (repeatable); default: every protocol of the "
                           "benchmark a model can be evaluated on.")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write every evaluation's "
                                                                 "metrics as JSON ('-' for "
                                                                 "stdout).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the table as Markdown.")] = None,
) -> None:
    """Evaluate several models and print a method × protocol table (accuracy, AUROC, OSCR)."""
    import genprint
    from genprint.evaluation.evaluate import evaluate
    from genprint.io.sources import ManifestError
    from genprint.storage.model_dir import ModelFormatError
    from genprint.world.protocols import read_protocols

    try:
        available = read_protocols(bench)
    except ManifestError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bench") from None
    wanted = list(dict.fromkeys(protocol)) if protocol else list(available)
    unknown = [p for p in wanted if p not in available]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: not a protocol of {bench} "
                                 f"(it has: {', '.join(available)})", param_hint="--protocol")
    check_out_file(json_path, "--json")
    check_out_file(markdown, "--markdown")
    rows: list[dict[str, Any]] = []
    for path in models:
        try:
            attributor = genprint.load(path)
        except ModelFormatError as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
        trained_on = getattr(attributor, "training_info_", {}).get("protocol")
        targets = target_protocols(attributor.classes_, trained_on, available, wanted)
        if not targets:
            console.print(f"[yellow]skipped[/yellow] {esc(str(path))}: trained for protocol "
                          f"{trained_on!r}, not among {', '.join(wanted)}" if trained_on else
                          f"[yellow]skipped[/yellow] {esc(str(path))}: it knows sources that every "
                          "requested protocol treats as unknown")
        for name in targets:
            with warnings_as_notes(), console.status(f"evaluating {path} on protocol {name}"):
                try:
                    run = evaluate(attributor, bench, name, embed=False)
                except (ManifestError, ValueError) as exc:
                    console.print(f"[red]error:[/red] {esc(str(path))} on {esc(str(name))}: "
                                  f"{esc(str(exc))}")
                    raise typer.Exit(2) from None
            if not run.metrics.get("n_known_test"):
                console.print(f"[yellow]skipped[/yellow] {esc(str(path))} on protocol "
                              f"{esc(str(name))}: none of the test images is of a source the "
                              "model knows (a model of another benchmark?)")
                continue
            rows.append({"model": str(path), **run.metrics})
    if not rows:
        console.print("[red]error:[/red] no model could be evaluated on the requested protocols")
        raise typer.Exit(2)
    shown = [p for p in wanted if any(r["protocol"] == p for r in rows)]
    header, body = comparison_grid(rows, shown)
    if markdown is not None:
        write_text_atomic(markdown, to_markdown(header, body))
        console.print(f"Markdown table written to {esc(str(markdown))}")
    if json_path == "-":
        print_json(rows)
        return
    _print_table(header, body)
    if json_path:
        write_text_atomic(json_path, to_json(rows) + "\n")
        console.print(f"metrics written to {esc(str(json_path))}")


def _print_table(header: list[str], body: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="method × protocol", caption=CELL_LEGEND)
    for k, name in enumerate(header):
        table.add_column(name, justify="left" if k == 0 else "right")
    for row in body:
        table.add_row(*row)
    Console(emoji=False).print(table)
