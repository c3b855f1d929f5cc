"""``genprint calibrate MODEL --bench DIR --perturb none --perturb jpeg75 --out NEW``: set a
model's thresholds again from its validation images under the conditions it will meet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genprint.cli.app import app
from genprint.cli.output import check_out_dir, console, esc, print_json
from genprint.cli.train import (
    BenchOption,
    DataOption,
    JsonOption,
    OverwriteOption,
    ValFractionOption,
    report_bad_files,
    skipped_rows,
    training_items,
)

CLEAN = "none"
"""The name of the unprocessed condition in ``--perturb``."""


@app.command("calibrate")
def calibrate_cmd(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory (metric, "
                                               "baseline or probe).")],
    perturb: Annotated[list[str], typer.Option(
        "--perturb", help="A condition the thresholds must hold under (repeatable; pooled): "
                          "'none' for the images as they are, or a perturbation of `genprint "
                          "eval --perturb` (jpeg95, jpeg75, jpeg50, resize0.5, blur0.5, blur1, "
                          "crop, noise; 'all' for every one).")],
    out: Annotated[Path, typer.Option(help="Directory of the recalibrated model (MODEL is left "
                                           "as it was).")],
    data: DataOption = None,
    bench: BenchOption = None,
    protocol: Annotated[str | None, typer.Option(
        help="Protocol of --bench whose validation images are used (default: the one the "
             "model was trained for, else all).")] = None,
    val_fraction: ValFractionOption = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split of --data "
                                           "without one (as at training).")] = 0,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Set a model's thresholds again from its validation images under given conditions (e.g.
    clean and JPEG 75), by the training rule: each source accepts 95% of them. The network,
    reference points and decision rule are unchanged; a wider threshold also accepts more
    images of unseen generators, which `genprint eval --perturb` on the new model measures."""
    import genprint
    from genprint.evaluation.evaluate import image_seed
    from genprint.evaluation.perturb import expand_perturbations, perturbation
    from genprint.io.batches import load_items
    from genprint.io.fingerprint import dataset_digest
    from genprint.methods.recalibrate import (
        check_recalibratable,
        own_scores,
        recalibrate_from_scores,
    )
    from genprint.registry import RegistryError
    from genprint.storage.model_dir import ModelFormatError

    try:
        names = [CLEAN] if perturb == [CLEAN] else [
            *([CLEAN] if CLEAN in perturb else []),
            *expand_perturbations([p for p in perturb if p != CLEAN])]
    except RegistryError as exc:
        raise typer.BadParameter(str(exc), param_hint="--perturb") from None
    if protocol is not None and bench is None:
        raise typer.BadParameter("--protocol goes with --bench", param_hint="--protocol")
    target = check_out_dir(out, overwrite)
    try:
        attributor = genprint.load(model)
        check_recalibratable(attributor)
    except (ModelFormatError, ValueError) as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    info = getattr(attributor, "training_info_", {}) or {}
    protocol = protocol or str(info.get("protocol") or "all")
    train, val = training_items(data, bench, protocol, val_fraction, seed, None)
    val = [i for i in val if i.source in attributor.classes_]
    if not val:
        raise typer.BadParameter("no validation images of the model's sources "
                                 f"({', '.join(attributor.classes_)}) in the data")
    recorded = info.get("data_digest")
    same = recorded is not None and dataset_digest(
        [i for i in train if i.source in attributor.classes_] + val,
        min_size=attributor.min_size) == recorded
    if same:
        console.print(f"calibrating on the model's own {len(val)} validation images")
    else:
        console.print(f"[yellow]warning:[/yellow] these training and validation images are not "
                      "the ones the model was fitted on (their digest differs from the card's "
                      "data_digest): the thresholds are only as good as these "
                      f"{len(val)} validation images are new to the model and apart from the "
                      "test images")
    images, kept, errors = load_items([i.path for i in val], min_size=attributor.min_size)
    report_bad_files(errors)
    items = [val[k] for k in kept]
    root = bench if bench is not None else data
    seeds = [image_seed(i, root) for i in items]
    labels = [str(i.source) for i in items]
    pooled: dict[str, list[float]] = {c: [] for c in attributor.classes_}
    for name in names:
        if name == CLEAN:
            shown = images
        else:
            fn = perturbation(name, min_size=attributor.min_size)
            shown = [fn(img, s) for img, s in zip(images, seeds, strict=True)]
        for source, values in own_scores(attributor, shown, labels).items():
            pooled[source].extend(values)
    try:
        record = recalibrate_from_scores(attributor, pooled, names)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    record["validation_images_are_the_models"] = same
    attributor.save(target, overwrite=overwrite)
    summary: dict[str, Any] = {"model": str(model), "out": str(target), **record,
                               "skipped": skipped_rows(errors)}
    if json_out:
        print_json(summary)
        return
    _print_table(record)
    if record.get("unseen_origin_rule_replaced_for"):
        console.print("note: the unseen-origin threshold of "
                      f"{esc(', '.join(record['unseen_origin_rule_replaced_for']))} now follows "
                      "the plain rule")
    console.print(f"[green]saved[/green] {esc(str(target))}; measure it with `genprint eval "
                  f"{esc(str(target))} ... --perturb ...`")


def _print_table(record: dict[str, Any]) -> None:
    """Per source: images used, threshold before and after."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="thresholds recalibrated under "
                        + ", ".join(record["conditions"])
                        + f" (each accepts {record['target_accept']:.0%} of its images)")
    table.add_column("source")
    table.add_column("images", justify="right")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name, s in record["sources"].items():
        table.add_row(esc(name), str(s["n_images"]), f"{s['before']:.4f}",
                      f"{s['after']:.4f}" if s["recalibrated"] else "unchanged")
    Console(emoji=False).print(table)
