"""``genprint train invert``: an `invert` model from generators you hold the weights of."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.output import check_out_dir, console, esc, print_json
from genprint.cli.train import (
    BenchOption,
    JsonOption,
    OutOption,
    OverwriteOption,
    ProtocolOption,
    train_app,
)


def _parse_generators(values: list[str]) -> dict[str, str]:
    """``NAME=SPEC`` (or a bare ``zoo:NAME``) → {source name: generator spec}."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep:
            if not value.startswith("zoo:"):
                raise typer.BadParameter(
                    f"{value!r}: give NAME=SPEC (e.g. mygan=my_pkg.gens:make_gan) or zoo:NAME",
                    param_hint="--generator")
            name, spec = value[len("zoo:"):], value
        name, spec = name.strip(), spec.strip()
        if name in out:
            raise typer.BadParameter(f"source {name!r} is given twice", param_hint="--generator")
        twin = next((n for n, sp in out.items() if sp == spec), None)
        if twin is not None:  # one generator, two labels: every image would tie between them
            raise typer.BadParameter(f"{name!r} and {twin!r} name the same generator ({spec})",
                                     param_hint="--generator")
        out[name] = spec
    return out


@train_app.command("invert")
def train_invert(
    out: OutOption,
    generators: Annotated[list[str] | None, typer.Option(
        "--generator", help="A known source and its generator: NAME=SPEC with SPEC zoo:NAME or "
                            "package.module:factory, or just zoo:NAME (repeatable).")] = None,
    bench: BenchOption = None,
    protocol: ProtocolOption = "all",
    alpha: Annotated[float, typer.Option(help="Significance level: an image is attributed to "
                                              "a generator when its p-value is ≥ alpha.")] = 0.05,
    calibration_n: Annotated[int, typer.Option(
        "--calibration-n", min=10, help="Generator samples per calibration (when no stored "
                                        "calibration with these settings exists); the "
                                        "smallest p-value is 1/(N+1), so N must exceed "
                                        "1/alpha - 1.")] = 200,
    use_stored: Annotated[bool, typer.Option(help="Reuse a stored calibration made with the "
                                                  "same settings.")] = True,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Build an `invert` model: one calibrated verifier per known generator (no images needed).

    Known sources are the --generator entries, or the known sources of --bench's --protocol that
    are zoo generators (`real` and other non-generators are left out: the method can only say
    "made by this generator" or `unknown`). Stored calibrations are reused; others are made now
    from each generator's own samples (a few seconds to minutes per generator on a CPU).
    """
    from genprint.methods.invert import InvertAttributor
    from genprint.verify.calibration import CalibrationError
    from genprint.verify.generators import GeneratorSpecError

    check_out_dir(out, overwrite)
    if not 0 < alpha < 1:
        raise typer.BadParameter("must be between 0 and 1", param_hint="--alpha")
    if alpha <= 1 / (calibration_n + 1):  # the smallest p-value of N calibration scores
        raise typer.BadParameter(
            f"alpha = {alpha:g} cannot be tested with --calibration-n {calibration_n}: p-values "
            f"from N samples are at least 1/(N+1) = {1 / (calibration_n + 1):.3g}; use "
            f"--calibration-n {int(1 / alpha)} or more, or a larger --alpha",
            param_hint="--alpha")
    specs = _parse_generators(generators or [])
    if bench is not None:
        from genprint.io.sources import ManifestError
        from genprint.world.protocols import read_protocols

        try:
            protocols = read_protocols(bench)
        except (ManifestError, ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--bench") from None
        if protocol not in protocols:
            raise typer.BadParameter(f"{protocol!r} is not a protocol of {bench} (it has: "
                                     f"{', '.join(protocols)})", param_hint="--protocol")
        sources = [s for s in protocols[protocol].known if s not in specs] + list(specs)
    else:
        sources = list(specs)
    if not sources:
        raise typer.BadParameter("give at least one --generator, or --bench with --protocol")
    model = InvertAttributor(alpha=alpha, calibration_n=calibration_n, generators=specs,
                             use_stored=use_stored)
    model.training_info_ = {"bench": str(bench) if bench is not None else None,
                            "protocol": protocol if bench is not None else None}
    with console.status(f"calibrating {len(sources)} generator(s)"):
        try:
            model.fit([], sources)
        except (GeneratorSpecError, CalibrationError, ValueError) as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
    model.save(out, overwrite=overwrite)
    info = model.training_info_
    summary = {"method": "invert", "out": str(out), "classes": model.classes_,
               "alpha": alpha, "not_generators": info.get("not_generators", []),
               "calibrations_reused": info.get("calibrations_reused", [])}
    if json_out:
        print_json(summary)
        return
    if summary["not_generators"]:
        console.print(f"note: left out (no generator weights): "
                      f"{esc(', '.join(summary['not_generators']))}")
    console.print(f"[green]saved[/green] {esc(str(Path(out)))}: {len(model.classes_)} "
                  f"generator(s) ({esc(', '.join(model.classes_))}); calibrations reused for "
                  f"{len(summary['calibrations_reused'])}")
