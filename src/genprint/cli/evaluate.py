"""``genprint eval MODEL --bench DIR --protocol P``: open-set metrics on a benchmark protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genprint.cli.app import app
from genprint.cli.output import console, print_json, progress_bar, to_json

METRIC_ROWS = (
    ("closed_set_accuracy", "closed-set accuracy (known test)"),
    ("macro_f1", "macro-F1 (known test)"),
    ("auroc", "AUROC known vs unknown"),
    ("ap", "AP known vs unknown"),
    ("tnr_at_tpr95", "TNR at TPR 95%"),
    ("oscr", "OSCR"),
    ("real_vs_generated_auroc", "real vs generated AUROC"),
    ("held_out_camera_real_accuracy", "held-out cameras called real"),
)


def format_metric(value: Any) -> str:
    """A metric for a table: 3 decimals, or 'n/a' when undefined."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command("eval")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory.")],
    bench: Annotated[Path, typer.Option(help="Benchmark folder from `genprint bench build`.")],
    protocol: Annotated[str, typer.Option(help="Protocol to evaluate (seed, architecture, "
                                               "family, all).")] = "all",
    json_path: Annotated[str | None, typer.Option("--json", help="Write metrics as JSON to this "
                                                                 "file ('-' for stdout).")] = None,
) -> None:
    """Evaluate a model on a protocol's test split (thresholds were fixed on validation data)."""
    import genprint
    from genprint.evaluation.evaluate import evaluate
    from genprint.io.sources import ManifestError
    from genprint.storage.model_dir import ModelFormatError

    try:
        attributor = genprint.load(model)
    except ModelFormatError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    with progress_bar(disable=json_path == "-" or not console.is_terminal) as bar:
        task = bar.add_task("evaluating", total=None)
        try:
            run = evaluate(attributor, bench, protocol, on_progress=lambda n: bar.advance(task, n))
        except (ManifestError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    if json_path == "-":
        print_json(run.metrics)
    else:
        print_metrics_table(run.metrics)
        if json_path:
            Path(json_path).write_text(to_json(run.metrics) + "\n", encoding="utf-8")
            console.print(f"metrics written to {json_path}")


def print_metrics_table(metrics: dict[str, Any]) -> None:
    """Print one model's metrics as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics.get('method')} on protocol {metrics.get('protocol')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in METRIC_ROWS:
        table.add_row(label, format_metric(metrics.get(key)))
    for name, value in sorted((metrics.get("per_unknown_auroc") or {}).items()):
        table.add_row(f"AUROC vs {name}", format_metric(value))
    table.add_row("known / unknown test images",
                  f"{metrics.get('n_known_test')} / {metrics.get('n_unknown_test')}")
    Console().print(table)
