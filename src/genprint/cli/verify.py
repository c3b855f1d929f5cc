"""``genprint verify``: white-box verification of images against generators by inversion.

Two subcommands::

    genprint verify calibrate --generator G [--n 200] [--condition jpeg75] [--out PATH] [--json]
    genprint verify run --generator G IMAGES... [--alpha 0.05] [--condition jpeg75] [--json]

``run`` is the default: ``genprint verify --generator G IMAGES...`` means
``genprint verify run --generator G IMAGES...`` (any first argument that is not a subcommand name
selects ``run``). ``G`` is ``zoo:NAME``, ``zoo:*``, ``package.module:factory`` or a comma list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from genprint.cli.app import Terminated, app
from genprint.cli.output import (
    console,
    esc,
    print_json,
    progress_bar,
    save_interrupted,
    shortened_paths,
    warnings_as_notes,
)


class _RunByDefault(TyperGroup):
    """A group whose default subcommand is ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


verify_app = typer.Typer(
    cls=_RunByDefault, no_args_is_help=True,
    help="Verify whether generators made images, by inverting them (RONAN with LatentTracer's "
         "encoder start). `genprint verify --generator G IMAGES...` is short for `genprint verify "
         "run ...`; calibrate a generator first with `genprint verify calibrate --generator G`.")
app.add_typer(verify_app, name="verify")

GEN_HELP = ("zoo:NAME, zoo:* (every trained zoo generator), package.module:factory (a function "
            "returning an object with latent_shape, sample_latent(n, seed), decode(z) and "
            "optionally encode(x)), or a comma-separated list.")


CONDITION_HELP = ("A perturbation the images went through (jpeg95, jpeg75, jpeg50, resize0.5, "
                  "blur0.5, blur1, noise; see `genprint eval --perturb`). Calibration applies it "
                  "to the generator's own samples; verification then uses that calibration, so "
                  "p-values hold for images processed that way. Default: clean images.")


def _describe(path: Path) -> str:
    """A few words on an existing calibration file (its N and creation time), for messages."""
    from genprint.verify.calibration import Calibration, CalibrationError

    try:
        cal = Calibration.load(path)
    except CalibrationError:
        return "not a readable calibration"
    return f"N = {cal.n}, made {cal.info.get('created', 'at an unknown time')}"


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {esc(str(message))}")
    return typer.Exit(2)


def _resolve(spec: str) -> list[Any]:
    from genprint.verify.generators import GeneratorSpecError, resolve

    try:
        return resolve(spec)
    except GeneratorSpecError as exc:
        raise _fail(str(exc)) from None


def _check_condition(condition: str | None) -> None:
    """An unknown --condition is refused before any work, with the known names."""
    if condition is None:
        return
    from genprint.evaluation.perturb import PERTURBATIONS, expand_perturbations
    from genprint.registry import RegistryError

    try:
        expand_perturbations([condition])
    except RegistryError:
        raise _fail(f"--condition {condition!r} is not a perturbation; known: "
                    f"{', '.join(PERTURBATIONS.names())}") from None


def _threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(max(1, n))


def _overrides(**given: Any) -> dict[str, Any]:
    return {k: v for k, v in given.items() if v is not None}


@verify_app.command("calibrate")
def calibrate_cmd(
    generator: Annotated[str, typer.Option("--generator", "-g", help=GEN_HELP)],
    n: Annotated[int, typer.Option("--n", help="Number of the generator's own samples to "
                                               "invert.")] = 200,
    out: Annotated[Path | None, typer.Option(help="Calibration JSON to write (one generator "
                                                  "only; default: next to its weights).")] = None,
    steps: Annotated[int | None, typer.Option(help="Adam steps per restart (most).")] = None,
    restarts: Annotated[int | None, typer.Option(help="Starts per image.")] = None,
    lr: Annotated[float | None, typer.Option(help="Initial learning rate.")] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine, step or constant.")] = None,
    loss: Annotated[str | None, typer.Option(help="Reconstruction loss: mse, l1, ssim, or one "
                                                  "registered in INVERSION_LOSSES by a "
                                                  "plugin (genprint --plugin).")] = None,
    init: Annotated[str | None, typer.Option(help="auto (encoder where available), random, "
                                                  "encoder.")] = None,
    ddim_steps: Annotated[int | None, typer.Option(help="DDIM chain length for diffusion "
                                                        "generators (default: their own).")] = None,
    early_stop: Annotated[bool | None, typer.Option(help="Stop rows whose loss stopped "
                                                         "improving.")] = None,
    early_stop_from: Annotated[int | None, typer.Option(help="First step at which early "
                                                             "stopping may stop a row.")] = None,
    stage: Annotated[str | None, typer.Option(help="chain (the whole generator), decoder "
                                                   "(latent diffusion: only its autoencoder's "
                                                   "decoder, as LatentTracer) or noise (pixel "
                                                   "diffusion: the encoded noise against the "
                                                   "members' noise model, no "
                                                   "optimisation).")] = None,
    model_n: Annotated[int | None, typer.Option(help="Stage noise: own samples the members' "
                                                     "noise model is fitted on (other samples "
                                                     "than the N calibration ones; default "
                                                     "N).")] = None,
    complexity: Annotated[bool, typer.Option(help="Normalise losses by image complexity "
                                                  "(2-D entropy, as RONAN; off by default: it "
                                                  "did not help on the zoo).")] = False,
    detail: Annotated[bool | None, typer.Option(
        "--detail/--no-detail", help="Adjust log-losses for image detail with a line fitted on "
        "the generator's own samples (docs/invert.md). Default: on with --condition, off for "
        "clean images.")] = None,
    pvalue: Annotated[str, typer.Option(help="ecdf (distribution-free) or normal.")] = "ecdf",
    condition: Annotated[str | None, typer.Option(help=CONDITION_HELP)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows (images × restarts) per batch.")] = 256,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: torch's "
                                                     "choice; 1 on a busy machine).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing calibration (the zoo "
                                                 "ships N = 500 ones).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Calibrate generators: invert N of their own samples and store the belonging
    distribution of the (complexity-calibrated) log reconstruction loss."""
    from genprint.verify.calibration import calibrate, condition_path
    from genprint.verify.inversion import default_settings

    _check_condition(condition)
    _threads(threads)
    handles = _resolve(generator)
    if out is not None and len(handles) > 1:
        raise _fail("--out needs a single generator (the others go next to their weights)")
    given = _overrides(steps=steps, restarts=restarts, lr=lr, schedule=schedule, loss=loss,
                       init=init, ddim_steps=ddim_steps, early_stop=early_stop,
                       early_stop_from=early_stop_from, stage=stage)
    summaries = []
    for h in handles:
        try:
            settings = default_settings(h).with_(batch_size=batch_size, **given)
        except (TypeError, ValueError) as exc:
            raise _fail(str(exc)) from None
        target = out or (condition_path(h.calibration_path, condition)
                         if h.calibration_path is not None else None)
        if target is None:
            raise _fail(f"{h.spec}: no default place for its calibration; give --out")
        if target.exists() and not overwrite:
            raise _fail(f"{target} exists ({_describe(target)}); pass --overwrite to replace "
                        "it, or --out to write the new calibration elsewhere")
        if pvalue == "ecdf" and 1 / (n + 1) >= 0.05:  # check_alpha_reachable's rule
            console.print(f"[yellow]note:[/yellow] with N = {n} the smallest p-value is "
                          f"1/{n + 1} = {1 / (n + 1):.3f}: α = 0.05 cannot be tested "
                          "(N ≥ 20 needed; 200 or more recommended)")
        with progress_bar(disable=json_out or not console.is_terminal) as bar:
            total = n + ((model_n if model_n is not None else n)
                         if settings.stage == "noise" else 0)  # the noise model's samples too
            task = bar.add_task(f"calibrating {h.name}", total=total)
            try:
                cal = calibrate(h, n, settings, complexity=complexity, pvalue=pvalue,
                                on_progress=lambda k, _t=task: bar.advance(_t, k),
                                condition=condition, model_n=model_n, detail=detail)
            except ValueError as exc:
                raise _fail(f"{h.name}: {exc}") from None
        cal.save(target)
        summary = {"generator": h.name, "spec": h.spec, "out": str(target), "n": cal.n,
                   "condition": condition,
                   "mean": cal.mean, "std": cal.std, "median_loss": float(_median(cal.losses)),
                   **cal.info}
        summaries.append(summary)
        if not json_out:
            under = f" under {condition}" if condition else ""
            console.print(f"[green]calibrated[/green] {esc(str(h.name))}{under}: {cal.n} samples, "
                          f"calibrated score "
                          f"{cal.mean:.3f} ± {cal.std:.3f}, {cal.info['seconds']} s → {target}")
    if json_out:
        print_json(summaries)


def _median(v: Any) -> float:
    import numpy as np

    return float(np.median(v))


@verify_app.command("run")
def run_cmd(
    generator: Annotated[str, typer.Option("--generator", "-g", help=GEN_HELP)],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    alpha: Annotated[float, typer.Option(help="Significance level: an image belongs to a "
                                              "generator when its p-value ≥ alpha.")] = 0.05,
    calibration: Annotated[Path | None, typer.Option(help="Calibration JSON (one generator only; "
                                                          "default: next to its weights).")] = None,
    steps: Annotated[int | None, typer.Option(help="Must match the calibration.")] = None,
    restarts: Annotated[int | None, typer.Option(help="Must match the calibration.")] = None,
    lr: Annotated[float | None, typer.Option(help="Must match the calibration.")] = None,
    ddim_steps: Annotated[int | None, typer.Option(help="Must match the calibration.")] = None,
    condition: Annotated[str | None, typer.Option(help=CONDITION_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Write rows to a .csv, .parquet or .json "
                                                  "file.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows (images × restarts) per batch.")] = 256,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: torch's "
                                                     "choice; 1 on a busy machine).")] = None,
    strict: Annotated[bool, typer.Option(help="Exit with code 1 if any input failed.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print rows as JSON on stdout.")] = False,
) -> None:
    """Verify images: per image `path, loss, calibrated_score, p_value, belongs` (and, with
    several generators, the accepting generator with the highest p-value, or `unknown`).

    Inversion uses each generator's calibration settings; other settings are refused. Images
    larger than the generator's resolution are centre-cropped (never resized); smaller ones are
    refused. Exit code: 0 when an image was verified, 1 when every input failed, 2 for a bad
    generator, calibration or no inputs.
    """
    from genprint.io.sources import scan_inputs
    from genprint.verify.calibration import CalibrationError
    from genprint.verify.verifier import Verifier, check_alpha_reachable, iter_verify_files

    if not 0 < alpha < 1:
        raise _fail("--alpha must be between 0 and 1")
    _check_condition(condition)
    _threads(threads)
    if out is not None:
        from genprint.results import check_results_path

        try:
            check_results_path(out)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    handles = _resolve(generator)
    if calibration is not None and len(handles) > 1:
        raise _fail("--calibration needs a single generator")
    wildcard = "zoo:*" in [s.strip() for s in generator.split(",")]
    verifiers = []
    for h in handles:
        try:
            with warnings_as_notes():  # e.g. a calibration without a weights checksum
                v = Verifier.load(h, calibration, batch_size=batch_size, condition=condition)
            given = _overrides(steps=steps, restarts=restarts, lr=lr, ddim_steps=ddim_steps)
            if given:
                v.calibration.check(h, v.calibration.settings.with_(**given), condition)
        except CalibrationError as exc:
            if wildcard:
                console.print(f"[yellow]skipping[/yellow] {esc(str(h.name))}: {esc(str(exc))}")
                continue
            raise _fail(str(exc)) from None
        verifiers.append(v)
    if not verifiers:
        raise _fail("no calibrated generator to verify against; run `genprint verify "
                    "calibrate --generator ...` first")
    for v in verifiers:
        try:
            check_alpha_reachable(v.calibration, alpha, v.name)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    paths = scan_inputs(inputs)
    if not paths:
        raise _fail("no image files found in the inputs")
    # Rows stream to --out as each is final, so stopping a long verification keeps them.
    from genprint.results import TableWriter

    try:
        writer = TableWriter(out, VERIFY_COLUMNS) if out is not None else None
    except RuntimeError as exc:  # no pyarrow for Parquet
        raise _fail(str(exc)) from None
    rows: list[Any] = []
    with progress_bar(disable=json_out or not console.is_terminal) as bar:
        task = bar.add_task("verifying", total=len(paths) * len(verifiers))
        try:
            for row in iter_verify_files(verifiers, paths, alpha=alpha,
                                         on_progress=lambda k: bar.advance(task, k)):
                if writer is not None:
                    writer.write(*_flat_and_json(row.to_dict()))
                rows.append(row)
            if writer is not None:  # inside: an interrupt while completing keeps the rows
                writer.commit()
                writer = None
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (cli.app.Terminated)
            save_interrupted(writer, out, len(rows), len(paths),
                             [r.to_dict() for r in rows] if json_out else None)
            raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
        except OSError as exc:  # e.g. the disk filled up while writing --out
            if writer is not None:
                writer.abandon()
            raise _fail(f"could not write {out}: {exc}") from None
        except BaseException:
            if writer is not None:
                writer.abandon()
            raise
    if json_out:
        print_json([r.to_dict() for r in rows])
    else:
        _print_table(rows, len(verifiers) > 1)
    failed = [r for r in rows if not r.ok]
    if failed:
        console.print(f"[yellow]{len(failed)} of {len(rows)} file(s) could not be used[/yellow]")
    if out is not None:
        console.print(f"results written to {esc(str(out))}")
    if len(failed) == len(rows) or (strict and failed):
        raise typer.Exit(1)


VERIFY_COLUMNS = (("path", "string"), ("label", "string"), ("generator", "string"),
                  ("loss", "float64"), ("calibrated_score", "float64"), ("p_value", "float64"),
                  ("belongs", "bool_"), ("alpha", "float64"), ("per_generator", "string"),
                  ("note", "string"), ("error", "string"), ("error_code", "string"),
                  ("sha256", "string"))
"""The columns of ``verify --out`` files (``per_generator`` is a JSON object in CSV and Parquet)."""


def _flat_and_json(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A verify row for CSV / Parquet (``per_generator`` as a JSON object) and for JSON."""
    import json

    names = [c for c, _ in VERIFY_COLUMNS]
    flat = {**{k: row.get(k) for k in names},
            "per_generator": json.dumps(row.get("per_generator") or {}, sort_keys=True)}
    return flat, row


def _print_table(rows: list[Any], multi: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    folder, shown = shortened_paths([r.path for r in rows])
    table = Table(title="verification")
    longest = max((len(str(r.generator or "")) for r in rows), default=0)
    table.add_column("path", overflow="fold", ratio=2)
    if multi:
        table.add_column("label", overflow="fold")
    table.add_column("generator", overflow="fold", min_width=min(longest, 12) or None)
    for c in ("loss", "score", "p-value", "belongs"):  # short cells: never wrapped
        table.add_column(c, no_wrap=True, justify="right" if c != "belongs" else "left")
    table.add_column("note / error", overflow="fold", ratio=3)
    for r, path in zip(rows, shown, strict=True):
        if not r.ok:
            table.add_row(esc(path), *([""] if multi else []), "", "", "", "", "",
                          f"[red]{esc(r.error)}[/red]")
            continue
        table.add_row(esc(path), *([esc(r.label)] if multi else []), esc(r.generator),
                      f"{r.loss:.2g}", f"{r.calibrated_score:.3f}", f"{r.p_value:.3f}",
                      "yes" if r.belongs else "[bold magenta]no[/bold magenta]",
                      esc(r.note or ""))
    out = Console(emoji=False)
    if folder:
        out.print(f"paths relative to {esc(folder)}", soft_wrap=True)
    out.print(table)
