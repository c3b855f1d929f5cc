"""``genprint enroll MODEL --source NAME IMAGES...``: add a source without retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import app
from genprint.cli.output import check_out_dir, console, esc, print_json


@app.command("enroll")
def enroll_cmd(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory (method `metric`).")],
    images: Annotated[list[Path], typer.Argument(help="Images of the new source: files and/or "
                                                      "folders (searched recursively).")],
    source: Annotated[str, typer.Option(help="Name of the new source.")],
    separator: Annotated[bool, typer.Option(
        "--separator/--no-separator",
        help="Also fit a linear separator against the known sources' stored embeddings; it "
             "recovers images that would otherwise be `unknown`, at the cost of more unseen "
             "generators taken by the new source (docs/metric.md). Off by default.")] = False,
    threshold_rule: Annotated[str, typer.Option(
        help="How the new source's threshold is set from the leave-one-out distances of its "
             "images (3 to 38 of them at 95%): 'scaled-mean' (default: a factor, simulated on the "
             "trained sources' validation images, times their mean; aims at the share of new "
             "images the model's trained sources accept, 95% unless recalibrated) or "
             "'quantile' (the rule before it: their quantile at that share, with few images "
             "the largest; accepts fewer, and for spread-out sources takes fewer unseen "
             "generators' images; docs/metric.md).")] = "scaled-mean",
    out: Annotated[Path | None, typer.Option(
        help="Write the enrolled model to this new directory and leave MODEL as it was "
             "(default: MODEL is replaced).")] = None,
    overwrite: Annotated[bool, typer.Option(help="With --out: replace an existing "
                                                 "directory.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Enrol a new source from one or more of its images, without retraining (method `metric`).

    Reference points and a threshold are added, the other sources are left untouched, and the
    model directory is replaced atomically (a complete new directory is written, then swapped
    into place), or written to --out. A leave-one-out self-check (3–30 images) says how many of
    the images are recognised when the source is enrolled from the others: a rough (± 0.1)
    estimate of the recall to expect. An overlap check says which share of the model's stored
    images of its other sources the new source would take."""
    import genprint
    from genprint.cli.train import report_bad_files, skipped_rows
    from genprint.io.batches import load_items
    from genprint.io.sources import scan_inputs_report
    from genprint.methods.metric import ENROL_THRESHOLD_RULES
    from genprint.storage.model_dir import ModelFormatError, model_lock

    if threshold_rule not in ENROL_THRESHOLD_RULES:
        raise typer.BadParameter(f"choose from {', '.join(ENROL_THRESHOLD_RULES)}",
                                 param_hint="--threshold-rule")
    if out is not None:
        target = check_out_dir(out, overwrite)
    else:  # in place: a missing model is reported by load below, without creating folders
        target = check_out_dir(model, True, "MODEL") if model.exists() else model
    with model_lock(target):  # a second enrol into the same model waits, then sees this one
        if out is not None and not overwrite:  # another run may have written it meanwhile
            target = check_out_dir(out, overwrite)
        try:
            attributor = genprint.load(model)
        except ModelFormatError as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
        if not hasattr(attributor, "enroll"):
            console.print(f"[red]error:[/red] method {attributor.method!r} does not support "
                          "enrolment (use a `metric` model)")
            raise typer.Exit(2)
        scan = scan_inputs_report(images)
        paths = scan.paths
        if scan.repeated:
            console.print(f"note: {scan.repeated} file(s) named more than once are read once")
        loaded, kept, errors = load_items(paths, min_size=attributor.min_size)
        report_bad_files(errors)
        if not loaded:
            console.print("[red]error:[/red] none of the images could be used")
            raise typer.Exit(1)
        from genprint.methods.metric import EnrolmentConflict

        try:
            record = attributor.enroll(loaded, source, separator=separator,
                                       threshold_rule=threshold_rule)
        except EnrolmentConflict as exc:
            named = [paths[kept[i]] for i in exc.indices]
            shown = ", ".join(esc(str(p)) for p in named[:5])
            more = f" and {len(named) - 5} more" if len(named) > 5 else ""
            console.print(f"[red]error:[/red] {len(named)} of the {len(loaded)} image(s) are "
                          "pictures the model was fitted on or has enrolled (the same pixels), "
                          f"each already one of its sources: {shown}{more}. One picture cannot "
                          f"come from two sources; leave them out to enrol {esc(source)}. "
                          "Nothing was changed")
            raise typer.Exit(2) from None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--source") from None
        if separator and record.get("separator", "").startswith("none"):
            console.print(f"[yellow]warning:[/yellow] no separator was fitted: "
                          f"{esc(record['separator'])}; retrain the model to keep sample embeddings")
        try:
            attributor.save(target, overwrite=overwrite or out is None)
        except OSError as exc:  # e.g. another run wrote --out meanwhile
            console.print(f"[red]error:[/red] {esc(str(exc))}; nothing was written")
            raise typer.Exit(2) from None
    summary = {"model": str(out if out is not None else model), **record, "n_skipped": len(errors),
               "skipped": skipped_rows(errors),
               "classes": list(attributor.classes_)}
    if json_out:
        print_json(summary)
        return
    console.print(f"[green]enrolled[/green] {esc(str(source))} in {esc(str(target))} from "
                  f"{record['n_images']} "
                  f"image(s): {record['n_reference_points']} reference point(s), threshold "
                  f"{record['threshold']:.3f} ({record['threshold_rule']}); separator: "
                  f"{esc(record['separator'])}")
    if record.get("threshold_scale") is not None:
        console.print(f"  threshold: distance {-record['threshold']:.3f} = "
                      f"{record['threshold_scale']:.3f} × the mean distance of each enrolment "
                      "image to the points of the others "
                      f"({esc(record['threshold_scale_note'])})")
    elif record.get("threshold_scale_note") and record["n_images"] >= 3:
        console.print("  note: threshold = a quantile of the leave-one-out distances (with few "
                      "images, the largest), not their scaled mean: "
                      f"{esc(record['threshold_scale_note'])}")
    if record.get("n_repeated"):
        console.print(f"  note: {record['n_repeated']} image(s) had the same pixels as another "
                      "one and were used once")
    for warning in record.get("warnings", []):
        console.print(f"  [yellow]warning:[/yellow] {esc(warning)}")
    _print_self_check(record)
    _print_overlap_check(record)
    trained = [t for c, t in zip(attributor.classes_, attributor.thresholds_, strict=True)
               if c not in attributor.enrolled_sources]
    console.print(f"  trained sources' thresholds: {min(trained):.3f} to {max(trained):.3f} "
                  "(minus a distance: the lower, the wider the source's region; a new source "
                  "as wide as the widest trained one is not a tight cluster in the "
                  "embedding, and will also take other sources' images)")
    if record["threshold"] <= min(trained):
        rule_hint = ("; `--threshold-rule quantile` sets a tighter threshold, which takes fewer "
                     "of them" if record.get("threshold_scale") is not None else "")
        console.print(f"  [yellow]warning:[/yellow] the new source's region is as wide as the "
                      f"widest trained source's or wider (threshold {record['threshold']:.3f}): "
                      "on the built-in bench, enrolled sources this wide took about 7–40% of "
                      "the other unseen generators' test images (docs/metric.md, "
                      f"\"Enrolment\"){rule_hint}")


def _print_self_check(record: dict) -> None:
    """The leave-one-out self-check of an enrolment record, in words."""
    if record.get("loo_recall") is not None:
        elsewhere = ", ".join(f"{n} unknown" if src == "unknown" else f"{n} to {esc(str(src))}"
                              for src, n in record["loo_taken_by"].items())
        n = record["n_images"]
        console.print(f"  leave-one-out check: {round(record['loo_recall'] * n)} of {n} "
                      "enrolment images are recognised when enrolled from the others"
                      + (f" (the others: {elsewhere})" if elsewhere else "")
                      + "; expect about that share of new images of this source")
        if record["loo_recall"] < 0.5:
            console.print("  [red]warning:[/red] fewer than half of the enrolment images "
                          "are recognised when left out: this source is unlikely to be "
                          "recognised in new images (add images, or check they come from "
                          "one source)")
    elif record.get("loo_note"):
        why = record["loo_note"].removeprefix("not checked: ")
        console.print(f"  leave-one-out check: not run ({esc(why)})")


def _print_overlap_check(record: dict) -> None:
    """The overlap check of an enrolment record, in words (nothing for older models)."""
    if "overlap_taken" not in record:
        return
    taken, n_samples = record["overlap_taken"], record["overlap_samples"]
    if not taken:
        console.print(f"  overlap check: the new source takes none of the model's "
                      f"{n_samples} stored images of its other sources")
        return
    parts = ", ".join(f"{100 * share:.1f}% of {esc(str(src))}" for src, share in taken.items())
    colour = "red" if max(taken.values()) >= 0.01 else "yellow"
    console.print(f"  [{colour}]overlap check:[/{colour}] the new source takes {parts} among the "
                  f"model's {n_samples} stored images of its other sources; expect those "
                  "sources to lose at least that share of new images to it")
    from genprint.world.protocols import REAL

    if REAL in taken:
        console.print("  [yellow]warning:[/yellow] it overlaps real photographs: those of "
                      "cameras the model was not trained on can be taken far more often than "
                      "the stored ones show (on the built-in bench, enrolling pixel diffusion "
                      "took 2.5–5.8% of the stored real images, and up to 18 of the 20 "
                      "photographs real had accepted from one unseen camera; docs/metric.md, "
                      "\"Where the drops come from\")")
    if record.get("separator", "").startswith("logistic"):
        console.print("  [yellow]warning:[/yellow] a separator on a source that overlaps known "
                      "ones tends to take unseen generators' images too (docs/metric.md); "
                      "consider enrolling without --separator")
