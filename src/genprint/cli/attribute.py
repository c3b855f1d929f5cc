"""``genprint attribute MODEL INPUTS...``: which source made each image, or ``unknown``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import Terminated, app
from genprint.cli.output import (
    console,
    esc,
    esc_one_line,
    partial_path,
    print_json,
    progress_bar,
    save_interrupted,
    shortened_paths,
)
from genprint.cli.ray_options import (
    DEFAULT_RAY_ACTORS,
    RayActorsOption,
    RayAddressOption,
    check_ray_options,
    ray_rows,
)
from genprint.results import Attribution, ResultsWriter, RowsKept, printable


@app.command("attribute")
def attribute(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched "
                                                      "recursively for image files).")],
    out: Annotated[Path | None, typer.Option(help="Write results to a .csv, .parquet or .json "
                                                  "file (the console then shows counts per "
                                                  "answer; on Ctrl-C the finished rows go to "
                                                  "NAME.partial.EXT).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit with code 1 if any input failed.")] = False,
    first_frame: Annotated[bool, typer.Option(help="Analyse the first frame of animated images "
                                                   "instead of refusing them.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    workers: Annotated[int | None, typer.Option(help="Threads reading and decoding files "
                                                     "(default: by file size).")] = None,
    max_tiles: Annotated[int | None, typer.Option(
        min=1, help="Tiling methods (metric, baseline): analyse at most this many tiles per "
                    "image, evenly spaced (default: the model's, 16). More tiles cover more of a "
                    "large image and cost time in proportion.")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted run with the same --out: the rows of its "
             "NAME.partial.EXT (made by the same model) are kept and their files skipped.")
    ] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Attribute on Ray Data (pip install 'genprint\\[ray]'): a pool of actors, "
                      "each holding the model, on a local Ray or a cluster (--ray-address). "
                      "Same rows and outputs; the model and images must be at the same paths "
                      "on every node.")] = False,
    ray_address: RayAddressOption = None,
    ray_actors: RayActorsOption = None,
) -> None:
    """Attribute images: one row per image with label (a source or `unknown`), candidate, score,
    threshold, per-source scores, and the reason for any file that could not be used.

    Exit code: 0 when at least one image was attributed (1 with --strict if any failed), 1 when
    every input failed, 2 for a bad model or no inputs.
    """
    import genprint
    from genprint.io.sources import scan_inputs_report
    from genprint.results import check_results_path
    from genprint.scale import ScaleError
    from genprint.storage.model_dir import ModelFormatError

    check_ray_options(ray, ray_address, ray_actors)
    if ray and workers is not None:
        raise typer.BadParameter("with --ray, each actor reads its files with as many threads "
                                 "as it has CPUs; leave --workers out", param_hint="--workers")
    if out is not None:  # before any work, not after it
        try:
            check_results_path(out)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--out") from None
    try:
        attributor = genprint.load(model)
    except ModelFormatError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    if max_tiles is not None:
        if not hasattr(attributor, "max_tiles"):
            console.print(f"[red]error:[/red] method {attributor.method!r} does not tile images "
                          "(--max-tiles is for metric and baseline models)")
            raise typer.Exit(2)
        if max_tiles != attributor.max_tiles:
            console.print(f"note: at most {max_tiles} tiles per image instead of the model's "
                          f"{attributor.max_tiles}; the model's hash (model_sha256) does not "
                          "record this setting, so keep it with the results")
        attributor.max_tiles = max_tiles
    scan = scan_inputs_report(inputs)
    paths, repeated, not_images = scan.paths, scan.repeated, scan.not_images
    examples = ", ".join(esc(str(p)) for p in scan.not_image_examples)
    more = ", ..." if not_images > len(scan.not_image_examples) else ""
    if not paths:
        console.print("[red]error:[/red] no image files found in the inputs"
                      + (f" ({not_images} file(s) without an image extension: {examples}{more})"
                         if not_images else ""))
        raise typer.Exit(2)
    if repeated:
        console.print(f"note: {repeated} path(s) name a file already among the inputs "
                      "(overlapping folders or links): each file is attributed once")
    if not_images:
        console.print(f"note: {not_images} file(s) in the folders have no image extension "
                      f"and were left out ({examples}{more}); name a file explicitly to have it "
                      "read whatever its extension")
    done_rows = _rows_to_resume(out, attributor, paths) if resume else []
    if done_rows:
        done = {r.path for r in done_rows}
        paths = [p for p in paths if str(p) not in done and printable(str(p)) not in done]
        console.print(f"resuming: {len(done_rows)} row(s) kept from "
                      f"{esc(str(partial_path(out)))}, {len(paths)} file(s) left")
    # With --out, rows stream to the file (memory does not grow with the number of images);
    # they are kept in memory only for what the console shows: the table or --json.
    keep_rows = json_out or out is None
    results: list = list(done_rows) if keep_rows else []
    counts: Counter[str] = Counter(_answer(r) for r in done_rows)
    n_seen = sum(bool(r.seen_in_training) for r in done_rows)
    n_noted = sum(bool(r.notes) for r in done_rows)
    writer = ResultsWriter(out) if out is not None else None
    for row in done_rows:
        writer.add(row)  # type: ignore[union-attr]
    with progress_bar(disable=json_out or not console.is_terminal) as bar:
        task = bar.add_task("attributing", total=len(paths))
        try:
            animated = "first" if first_frame else "refuse"
            progress = lambda n: bar.advance(task, n)
            actors = ray_actors or DEFAULT_RAY_ACTORS
            rows = (ray_rows(model, paths, attributor, address=ray_address, actors=actors,
                             batch_size=batch_size, animated=animated, max_tiles=max_tiles,
                             on_progress=progress) if ray else
                    attributor.iter_attribute(paths, batch_size=batch_size, workers=workers,
                                              animated=animated, on_progress=progress))
            try:
                for row in rows:
                    if writer is not None:
                        writer.add(row)
                    counts[_answer(row)] += 1
                    n_seen += bool(row.seen_in_training)
                    n_noted += bool(row.notes)
                    if keep_rows:
                        results.append(row)
            finally:  # its clean-up now (--ray: Ray shut down), before any exit below
                rows.close()
            if writer is not None:  # inside: an interrupt while completing keeps the rows
                writer.commit(fallback=partial_path(writer.path))
                writer = None
        except (ModelFormatError, ScaleError) as exc:  # e.g. a backbone that cannot be
            if writer is not None:  # rebuilt here; with --ray, Ray missing or unreachable
                writer.abandon()
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (cli.app.Terminated)
            save_interrupted(writer, out, sum(counts.values()), len(paths) + len(done_rows),
                             [r.to_dict() for r in results] if json_out else None,
                             "Run the same command with --resume to finish.")
            raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
        except OSError as exc:  # e.g. the disk filled up while writing --out
            if writer is not None and not isinstance(exc, RowsKept):
                writer.abandon()
            console.print(f"[red]error:[/red] could not write {esc(str(out))}: "
                          f"{esc(str(exc))}")
            if isinstance(exc, RowsKept):
                console.print(f"every row is there, in input order: rename {esc(str(exc.kept))} "
                              f"to {esc(str(out))} once it can be replaced")
            raise typer.Exit(2) from None
        except BaseException:
            if writer is not None:
                writer.abandon()
            raise
    if done_rows:  # its rows are in --out now
        partial_path(out).unlink(missing_ok=True)  # type: ignore[arg-type]
    n_done = sum(counts.values())
    n_failed = sum(n for answer, n in counts.items() if answer.startswith("error: "))
    if json_out:
        print_json([r.to_dict() for r in results])
    elif out is not None:
        _print_summary(counts)  # the rows are in the file; the console gets the counts
    else:
        _print_table(results)
    if n_failed:
        console.print(f"[yellow]{n_failed} of {n_done} file(s) could not be used[/yellow]")
    if n_noted and not json_out:
        console.print(f"note: {n_noted} image(s) have notes on how they were read (e.g. "
                      "16-bit values reduced to 8 bits, alpha dropped, EXIF orientation not "
                      "applied): see the notes column"
                      + ("" if out is not None else " of --out or --json"))
    if n_seen and not json_out:
        console.print(f"note: {n_seen} of {n_done} image(s) have the same pixels as pictures "
                      "the model was fitted on (seen_in_training): their answers recall "
                      "training rather than attribute a new image")
    if out is not None:
        console.print(f"results written to {esc(str(out))}")
    if n_failed == n_done or (strict and n_failed):
        raise typer.Exit(1)


def _rows_to_resume(out: Path | None, attributor: object, paths: list[Path]) -> list:
    """The rows of the interrupted run to resume (``--resume``), checked to be whole rows of
    this model for files among ``paths`` (the inputs); none (with a note) when there is no
    partial file."""
    from genprint.results import read_results

    if out is None:
        raise typer.BadParameter("--resume continues an interrupted run with --out; give the "
                                 "same --out", param_hint="--resume")
    partial = partial_path(out)
    if not partial.is_file():
        console.print(f"note: no {esc(str(partial))} to resume from: starting from the first "
                      "file")
        return []
    try:
        rows = read_results(partial)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    damaged = [r for r in rows if not (r.model_sha256 and _is_digest(r.model_sha256))
               or not _is_digest(r.sha256)]
    if damaged:
        console.print(f"[red]error:[/red] {esc(str(partial))} holds {len(damaged)} incomplete "
                      f"row(s) (first: {esc(damaged[0].path)}: its model_sha256 or sha256 is "
                      "missing or cut short); it is not the file an interrupted run left. "
                      "Delete it to start from the first file")
        raise typer.Exit(2)
    current = getattr(attributor, "model_sha256_", None)
    others = {r.model_sha256 for r in rows} - {current}
    if others:
        console.print(f"[red]error:[/red] {esc(str(partial))} was made by another model "
                      f"(model_sha256 {min(others)[:12]}…, this one "
                      f"{(current or 'unsaved')[:12]}…); answers of two models would be mixed")
        raise typer.Exit(2)
    given = {str(p) for p in paths} | {printable(str(p)) for p in paths}
    strangers = [r for r in rows if r.path not in given]
    if strangers:
        console.print(f"note: {len(strangers)} row(s) of {esc(str(partial))} are for files that "
                      f"are not among the inputs (first: {esc(strangers[0].path)}) and are left "
                      "out of --out")
        rows = [r for r in rows if r.path in given]
    spelled = Counter(printable(str(p)) for p in paths)  # two files, one printed name: a
    shared = {name for name, n in spelled.items() if n > 1}  # row cannot say which it is
    if shared and any(r.path in shared for r in rows):
        console.print(f"note: {sum(r.path in shared for r in rows)} row(s) of "
                      f"{esc(str(partial))} name a file whose printed name another input shares "
                      "(a name with bytes that are not UTF-8, written as \\xNN); both files are "
                      "attributed again")
        rows = [r for r in rows if r.path not in shared]
    return rows


def _is_digest(value: str | None) -> bool:
    """Whether ``value`` is absent (e.g. a file whose bytes could not be read) or a hex
    sha256."""
    return value is None or (len(value) == 64 and all(c in "0123456789abcdef" for c in value))


def _answer(row: Attribution) -> str:
    """What the counts table counts a row as: its label, or ``error: CODE``."""
    return str(row.label) if row.ok else f"error: {row.error_code}"


def _print_summary(counts: Counter[str]) -> None:
    """Counts per answer (label, or the error code of files that could not be used)."""
    from rich.table import Table

    table = Table(title=f"attribution of {sum(counts.values())} file(s)")
    table.add_column("answer", overflow="fold")
    table.add_column("files", justify="right", no_wrap=True)
    for answer, n in sorted(counts.items(), key=lambda kv: (kv[0].startswith("error"), -kv[1])):
        table.add_row(esc(answer), str(n))
    console.print(table)


def _print_table(results: list) -> None:
    """One row per image. Paths are shown relative to the folder they share (said above the
    table); the tiles and error columns appear only when they say something."""
    from rich.console import Console
    from rich.table import Table

    folder, shown = shortened_paths([r.path for r in results])
    show_tiles = any(r.ok and r.n_tiles > 1 for r in results)
    show_error = any(not r.ok for r in results)
    table = Table(title="attribution", show_lines=False)
    table.add_column("path", overflow="fold", ratio=1)
    for col in ("label", "candidate"):
        table.add_column(col, overflow="fold")
    for col in ("score", "threshold", *(["tiles (agree)"] if show_tiles else [])):
        table.add_column(col, no_wrap=True, justify="right")
    if show_error:
        table.add_column("error", overflow="fold")
    for r, path in zip(results, shown, strict=True):
        if r.ok:
            label = (f"[bold magenta]{esc(r.label)}[/bold magenta]" if r.is_unknown
                     else esc(r.label))
            if r.accepted_by == "separator":  # outside the threshold, claimed by a separator
                label += " (separator)"
            if r.seen_in_training:
                label += " (seen in training)"
            cells = [label, esc(r.candidate), f"{r.score:.3f}", f"{r.threshold:.3f}"]
            cells += [f"{r.n_tiles} ({r.tile_agreement:.0%})"] if show_tiles else []
            cells += [""] if show_error else []
        else:
            cells = ["", "", "", "", *([""] if show_tiles else []), f"[red]{esc(r.error)}[/red]"]
        table.add_row(esc_one_line(path), *cells)
    out = Console(emoji=False)
    if folder:
        out.print(f"paths relative to {esc(folder)}", soft_wrap=True)
    out.print(table)
