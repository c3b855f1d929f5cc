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
                          "crop, noise; 'all' for every perturbation, without 'none'). A crop "
                          "leaves images no larger than the method's input as they are.")],
    out: Annotated[Path, typer.Option(help="Directory of the recalibrated model, not MODEL "
                                           "(MODEL is left as it was).")],
    data: DataOption = None,
    bench: BenchOption = None,
    protocol: Annotated[str | None, typer.Option(
        help="Protocol of --bench whose validation images are used (default: the one the "
             "model was trained for, else all).")] = None,
    val_fraction: Annotated[float | None, typer.Option(
        help="For --data without a split: the share held out for validation at training "
             "(default: as the model's card records, else 0.2).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="For --data without a split: the seed of the split at training (default: as the "
             "model's card records, else 0).")] = None,
    target_accept: Annotated[float | None, typer.Option(
        min=0.5, max=1.0, help="Share of each source's pooled validation scores its threshold "
                               "accepts (default: the model's, 0.95 unless trained otherwise); "
                               "it becomes the model's.")] = None,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Set a model's thresholds again from its validation images under given conditions, such
    as clean and JPEG 75, by the training rule: each trained source accepts 95% of its images'
    scores, pooled over the conditions. The network, reference points and decision rule are
    unchanged; enrolled sources keep their thresholds. A wider threshold also accepts more
    images of unseen generators, which `genprint eval --perturb` on the new model measures."""
    import os

    import genprint
    from genprint.evaluation.evaluate import seed_root
    from genprint.evaluation.perturb import expand_perturbations
    from genprint.io.batches import load_items
    from genprint.methods.fitting import FEW_VALIDATION_IMAGES
    from genprint.methods.recalibrate import (
        check_recalibratable,
        count_images,
        recalibrate_from_scores,
    )
    from genprint.registry import RegistryError
    from genprint.storage.model_dir import ModelFormatError

    try:
        names = [*([CLEAN] if CLEAN in perturb else []),
                 *expand_perturbations([p for p in perturb if p != CLEAN])]
    except RegistryError as exc:
        raise typer.BadParameter(str(exc), param_hint="--perturb") from None
    if protocol is not None and bench is None:
        raise typer.BadParameter("--protocol goes with --bench", param_hint="--protocol")
    if os.path.realpath(out) == os.path.realpath(model):
        raise typer.BadParameter("give --out a new directory: MODEL is kept as it was, so that "
                                 "both can be evaluated", param_hint="--out")
    target = check_out_dir(out, overwrite)
    try:
        attributor = genprint.load(model)
        check_recalibratable(attributor)
    except (ModelFormatError, ValueError) as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    info = getattr(attributor, "training_info_", {}) or {}
    drawn = info.get("split_drawn") or _drawn_split(str(info.get("split") or ""))
    asked_split = val_fraction is not None or seed is not None
    val_fraction = val_fraction if val_fraction is not None else drawn.get("val_fraction", 0.2)
    seed = seed if seed is not None else drawn.get("seed", 0)
    protocol = protocol or str(info.get("protocol") or "all")
    how: dict[str, object] = {}
    train, val = training_items(data, bench, protocol, val_fraction, seed, None, how)
    if asked_split and (bench is not None or how.get("split") == "the data's own"):
        console.print("note: --val-fraction and --seed are not used: the data has its own "
                      "split, whose validation rows are used")
    enrolled = set(getattr(attributor, "enrolled_sources", ()) or ())
    trained = [c for c in attributor.classes_ if c not in enrolled]
    val = [i for i in val if i.source in trained]
    if not val:
        raise typer.BadParameter("no validation images of the model's trained sources "
                                 f"({', '.join(trained)}) in the data")
    read_size = int(info.get("data_min_size") or attributor.min_size)
    images, kept, errors = load_items([i.path for i in val], min_size=read_size)
    report_bad_files(errors)
    items = [val[k] for k in kept]
    labels = [str(i.source) for i in items]
    same = _same_validation(info, items, images, train, val, read_size, trained)
    if same:
        console.print(f"calibrating on the model's own {len(items)} validation images")
    else:
        console.print(f"[yellow]warning:[/yellow] these {len(items)} validation images are not "
                      "the ones the model was fitted with (their digest differs from the "
                      "card's): the thresholds are only as good as these images are new to the "
                      "model and apart from the test images (check --val-fraction and --seed "
                      "for data split at training)")
    root = bench if bench is not None else seed_root(data) if data is not None else None
    pooled = _pooled_scores(attributor, images, items, labels, names, root)
    try:
        record = recalibrate_from_scores(attributor, pooled, names,
                                         target_accept=target_accept)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    count_images(record, labels)
    record["validation_images_are_the_models"] = same
    attributor.save(target, overwrite=overwrite)
    summary: dict[str, Any] = {"model": str(model), "out": str(target),
                               "model_sha256": getattr(attributor, "model_sha256_", None),
                               **record, "skipped": skipped_rows(errors)}
    if json_out:
        print_json(summary)
        return
    _print_table(record)
    few = [s for s, e in record["sources"].items()
           if e["recalibrated"] and e["n_images"] < FEW_VALIDATION_IMAGES]
    if few:
        console.print(f"[yellow]warning:[/yellow] fewer than {FEW_VALIDATION_IMAGES} validation "
                      f"images for {esc(', '.join(few))}: their thresholds rest on few images")
    kept_as_were = {s: e["kept_because"] for s, e in record["sources"].items()
                    if not e["recalibrated"]}
    for name, why in kept_as_were.items():
        console.print(f"[yellow]note:[/yellow] {esc(name)} keeps its threshold: {esc(why)}")
    if kept_as_were and record["target_accept"] != record["target_accept_before"]:
        console.print(f"[yellow]note:[/yellow] the sources that keep their thresholds still "
                      f"accept about {record['target_accept_before']:.0%} of their images, the "
                      f"others {record['target_accept']:.0%}")
    if any("enrolled" in why for why in kept_as_were.values()):
        console.print("[yellow]note:[/yellow] the trained sources' thresholds changed, so an "
                      "enrolled source may now lose images to a trained one it used to get "
                      "(enrolled sources are visited after the nearest trained source decides); "
                      "their enrolment self-checks were measured with the old thresholds")
    if record.get("unseen_origin_rule_replaced_for"):
        console.print("note: the unseen-origin threshold of "
                      f"{esc(', '.join(record['unseen_origin_rule_replaced_for']))} now follows "
                      "the plain rule")
    console.print(f"[green]saved[/green] {esc(str(target))}; measure it with `genprint eval "
                  f"{esc(str(target))} ... --perturb ...`")


def _drawn_split(text: str) -> dict[str, Any]:
    """The validation share and seed of a split drawn at training, from an older card's text
    ("drawn per source: 0.2 for validation (--val-fraction), seed 0"); {} otherwise."""
    import re

    found = re.match(r"drawn per source: ([0-9.eE+-]+) for validation .*seed (-?\d+)", text)
    return {"val_fraction": float(found[1]), "seed": int(found[2])} if found else {}


def _same_validation(info: dict[str, Any], items: list[Any], images: list[Any],
                     train: list[Any], val: list[Any], read_size: int,
                     trained: list[str]) -> bool:
    """Whether these are the validation images the model was fitted with: by the card's
    validation digest (the images are already read), or for older cards by the digest of all
    its training and validation pictures (every training image read again)."""
    from genprint.io.fingerprint import data_digest, dataset_digest, fingerprint

    if info.get("val_data_digest") is not None:
        keys = [fingerprint(img) for img in images]
        return data_digest(keys, [str(i.source) for i in items],
                           ["val"] * len(items)) == info["val_data_digest"]
    if info.get("data_digest") is None:
        return False
    return dataset_digest([i for i in train if i.source in trained] + val,
                          min_size=read_size) == info["data_digest"]


def _pooled_scores(attributor: Any, images: list[Any], items: list[Any], labels: list[str],
                   names: list[str], root: Path | None) -> dict[str, list[float]]:
    """Each source's own-image scores under every condition, pooled; perturbed copies are made
    a chunk at a time (memory: the validation images and one chunk)."""
    from genprint.evaluation.evaluate import image_seed
    from genprint.evaluation.perturb import perturbation
    from genprint.methods.recalibrate import CHUNK, own_scores

    seeds = [image_seed(i, root) for i in items]
    pooled: dict[str, list[float]] = {c: [] for c in attributor.classes_}
    for name in names:
        fn = None if name == CLEAN else perturbation(name, min_size=attributor.min_size)
        for start in range(0, len(images), CHUNK):
            chunk = images[start : start + CHUNK]
            if fn is not None:
                chunk = [fn(img, s) for img, s in zip(chunk, seeds[start : start + CHUNK],
                                                      strict=True)]
            for source, values in own_scores(attributor, chunk,
                                             labels[start : start + CHUNK]).items():
                pooled[source].extend(values)
    return pooled


def _print_table(record: dict[str, Any]) -> None:
    """Per source: images and scores used, threshold before and after."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="thresholds recalibrated under "
                        + ", ".join(record["conditions"])
                        + f" (each accepts {record['target_accept']:.0%} of its pooled scores)")
    table.add_column("source")
    table.add_column("images", justify="right")
    table.add_column("scores", justify="right")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name, s in record["sources"].items():
        table.add_row(esc(name), str(s.get("n_images", "")), str(s["n_scores"]),
                      f"{s['before']:.4f}", f"{s['after']:.4f}" if s["recalibrated"]
                      else "unchanged")
    Console(emoji=False).print(table)
