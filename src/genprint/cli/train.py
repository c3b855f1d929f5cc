"""``genprint train METHOD``: fit an attributor on labelled images and save it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.output import check_out_dir, console, esc, print_json

train_app = typer.Typer(help="Train an attributor on labelled images.", no_args_is_help=True)


def report_bad_files(errors: list, limit: int = 10) -> None:
    """Print the files that could not be used, with their reasons: all of them up to
    ``limit`` + 5, else the first ``limit`` (``--json``'s ``skipped`` lists every one)."""
    if not errors:
        return
    console.print(f"[yellow]{len(errors)} file(s) skipped:[/yellow]")
    shown = errors if len(errors) <= limit + 5 else errors[:limit]
    for path, err in shown:
        console.print(f"  {esc(str(path))}: {esc(str(err.reason))}")
    if len(errors) > len(shown):
        console.print(f"  ... and {len(errors) - len(shown)} more (`--json` lists every one "
                      "under skipped)")


def skipped_rows(errors: list) -> list[dict[str, str]]:
    """The files that could not be used, for a ``--json`` summary: path, error code, reason."""
    return [{"path": str(path), "error_code": err.code, "reason": err.reason}
            for path, err in errors]


def report_data_warnings(model: object) -> None:
    """Print the warnings about the training data recorded by ``fit_on_items``."""
    for warning in getattr(model, "training_info_", {}).get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {esc(warning)}")


def sources_phrase(n: int) -> str:
    """'1 source' / 'N sources'."""
    return f"{n} source" + ("" if n == 1 else "s")


def no_training_images(data: Path | None) -> typer.BadParameter:
    """The error for data without labelled training images, with what a labelled layout is."""
    return typer.BadParameter(
        "no labelled training images found: a folder needs one sub-folder per source (its name "
        "is the label), a manifest a source (or label) column", param_hint="--data")


def training_items(
    data: Path | None, bench: Path | None, protocol: str, val_fraction: float, seed: int,
    sources: list[str] | None, info: dict[str, object] | None = None,
) -> tuple[list, list]:
    """Train and validation items from ``--data`` or ``--bench/--protocol`` (known sources only).
    ``info`` (optional) is told how the split was made (``split``), for the card."""
    info = {} if info is None else info
    info["split"] = "the data's own"
    from genprint import UNKNOWN
    from genprint.io.sources import ManifestError, load_dataset, with_split
    from genprint.world.protocols import protocol_view

    if (data is None) == (bench is None):
        raise typer.BadParameter("give exactly one of --data or --bench")
    try:
        if bench is not None:
            view = protocol_view(bench, protocol)
            train, val = view.train, view.val
        else:
            dataset = load_dataset(data)  # type: ignore[arg-type]
            for note in dataset.notes:
                console.print(f"note: {esc(str(note))}")
            for problem in dataset.problems:
                console.print(f"[yellow]warning:[/yellow] {esc(str(problem))}")
            unsplit = sum(i.split is None for i in dataset.items)
            if unsplit == len(dataset.items):
                dataset = with_split(dataset, (1 - val_fraction, val_fraction, 0.0), seed=seed)
                info["split"] = (f"drawn per source: {val_fraction:g} for validation "
                                 f"(--val-fraction), seed {seed}")
                info["split_drawn"] = {"val_fraction": val_fraction, "seed": seed}
            elif unsplit:  # the data has splits: a row without one is not guessed into one
                console.print(f"note: {unsplit} image(s) without a split are left out (the "
                              "others have one; --val-fraction splits only data without any)")
            unlabelled = sum(not i.source for i in dataset.items if i.split in ("train", "val"))
            if unlabelled:
                console.print(f"note: {unlabelled} training or validation image(s) have no "
                              "source label and are left out")
            n_unknown = sum(i.source == UNKNOWN for i in dataset.items)
            if n_unknown:
                console.print(f"note: {n_unknown} image(s) labelled {UNKNOWN!r} are not trained "
                              "on (they are for `genprint eval --data`)")
            items = [i for i in dataset.items if i.source and i.source != UNKNOWN]
            train = [i for i in items if i.split == "train"]
            val = [i for i in items if i.split == "val"]
    except ManifestError as exc:
        raise typer.BadParameter(str(exc)) from None
    if sources:
        available = sorted({i.source for i in [*train, *val] if i.source})
        missing = [s for s in sources if s not in available]
        if missing:
            raise typer.BadParameter(f"{', '.join(missing)}: not a source of the training data "
                                     f"(it has: {', '.join(available) or 'none'})",
                                     param_hint="--source")
        train = [i for i in train if i.source in set(sources)]
        val = [i for i in val if i.source in set(sources)]
    if not train and data is not None:
        splits = Counter(i.split for i in dataset.items if i.source and i.source != UNKNOWN)
        if splits:
            found = ", ".join(f"{n} {s or 'unsplit'}" for s, n in sorted(
                splits.items(), key=lambda kv: str(kv[0])))
            raise typer.BadParameter(f"the data has labelled images, but none in the train "
                                     f"split ({found}); give training rows split 'train'",
                                     param_hint="--data")
    return train, val


def data_provenance(data: Path | None, bench: Path | None, protocol: str,
                    split: dict[str, object]) -> dict[str, object]:
    """What the card records about the training data, besides the digest of its pictures and
    labels (``data_digest``, set by :func:`genprint.methods.fitting.fit_on_items`): where it
    was read, the sha256 of its manifest when it has one (a bench's ``manifest.csv``), and how
    the split was made (``split``, as :func:`training_items` recorded it)."""
    from genprint.io.sources import MANIFEST_NAMES
    from genprint.storage.model_dir import sha256_file

    where = data if data is not None else bench
    manifest = None
    if where is not None:
        if where.is_file():
            manifest = where
        else:
            manifest = next((where / n for n in MANIFEST_NAMES if (where / n).is_file()), None)
    return {
        "data": str(data) if data is not None else None,
        "bench": str(bench) if bench is not None else None,
        "protocol": protocol if bench is not None else None,
        "manifest_sha256": sha256_file(manifest) if manifest is not None else None,
        "split": split.get("split"),
        "split_drawn": split.get("split_drawn"),
    }


# The data options every `train` verb shares (one definition, so their help never drifts).
OutOption = Annotated[Path, typer.Option(help="Model directory to write.")]
DataOption = Annotated[Path | None, typer.Option(
    help="Manifest (.csv/.parquet), folder with a manifest, or a folder with one sub-folder per "
         "source.")]
BenchOption = Annotated[Path | None, typer.Option(
    help="A benchmark folder from `genprint bench build` (use with --protocol).")]
ProtocolOption = Annotated[str, typer.Option(
    help="Protocol of --bench whose known sources are trained on.")]
ValFractionOption = Annotated[float, typer.Option(
    help="Share of each source held out for validation (threshold calibration) when the data has "
         "no split.")]
TargetAcceptOption = Annotated[float, typer.Option(
    min=0.5, max=1.0, help="Fraction of known validation images each threshold accepts.")]
SourcesOption = Annotated[list[str] | None, typer.Option(
    "--source", help="Train on these sources only (repeatable); default: all.")]
OverwriteOption = Annotated[bool, typer.Option(help="Replace an existing model directory.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON summary.")]


@train_app.command("baseline")
def train_baseline(
    out: OutOption,
    data: DataOption = None,
    bench: BenchOption = None,
    protocol: ProtocolOption = "all",
    patch_size: Annotated[int, typer.Option(help="Tile size in pixels (images are tiled, never "
                                                 "resized).")] = 32,
    max_tiles: Annotated[int, typer.Option(help="Most tiles used per image.")] = 16,
    val_fraction: ValFractionOption = 0.2,
    target_accept: TargetAcceptOption = 0.95,
    sources: SourcesOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split.")] = 0,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Fit the `baseline` method: nearest centroid on noise-residual spectra."""
    from genprint.methods.baseline import BaselineAttributor
    from genprint.methods.fitting import fit_on_items

    check_out_dir(out, overwrite)
    split_info: dict[str, object] = {}
    train_items, val_items = training_items(data, bench, protocol, val_fraction, seed, sources,
                                            split_info)
    if not train_items:
        raise no_training_images(data)
    model = BaselineAttributor(patch_size=patch_size, max_tiles=max_tiles,
                               target_accept=target_accept)
    model.training_info_ = {
        **data_provenance(data, bench, protocol, split_info),
        "seed": seed,
        "threshold_rule": f"per source, accepts {target_accept:.0%} of its validation images",
    }
    with console.status(f"fitting baseline on {len(train_items)} images"):
        try:
            errors = fit_on_items(model, train_items, val_items)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    report_bad_files(errors)
    report_data_warnings(model)
    model.save(out, overwrite=overwrite)
    summary = {
        "method": "baseline", "out": str(out), "classes": model.classes_,
        "thresholds": dict(zip(model.classes_, map(float, model.thresholds_), strict=True)),
        **{k: model.training_info_.get(k) for k in ("n_train", "n_val", "n_skipped", "protocol",
                                                    "warnings")},
        "skipped": skipped_rows(errors),
    }
    if json_out:
        print_json(summary)
    else:
        console.print(f"[green]saved[/green] {esc(str(out))}: {sources_phrase(len(model.classes_))}, "
                      f"{summary['n_train']} training and {summary['n_val']} validation images")


# Registered last: importing the app imports every verb module, and the train_* ones import
# this module's options and helpers, which must exist by then (so that this module, too, can
# be the first one imported).
from genprint.cli.app import app

app.add_typer(train_app, name="train")
