"""``genprint bench build``: write a benchmark folder from the built-in world."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import app
from genprint.cli.output import console, esc, print_json, progress_bar

bench_app = typer.Typer(help="Benchmarks built from the built-in world.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("build")
def build(
    out: Annotated[Path, typer.Argument(help="Folder to write (images, manifest.csv, "
                                             "protocols.json).")],
    per_class: Annotated[int, typer.Option(min=1, help="Images per source (split "
                                                       "60/20/20).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed: the same seed, zoo weights, libraries and "
                                           "torch thread count give a byte-identical "
                                           "benchmark (other thread counts can move a few "
                                           "generated pixels by one level).")] = 0,
    size: Annotated[int, typer.Option(min=8, help="Image side in pixels (the zoo makes "
                                                  "32).")] = 32,
    format: Annotated[str, typer.Option(help="png (lossless) or jpeg; the same for real and "
                                             "generated images.")] = "png",
    jpeg_quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG quality when --format "
                                                                   "jpeg.")] = 90,
    task: Annotated[str, typer.Option(help="attribution (real + zoo generators) or camera "
                                           "(camera-model identification).")] = "attribution",
    generator: Annotated[list[str] | None, typer.Option(help="Use only these zoo generators "
                                                        "(repeatable); default: the whole zoo.")] = None,
    random_cameras: Annotated[int, typer.Option(min=0, max=999, help="Camera task: add this many "
                                                     "random camera models (rcam-001 ...) to the "
                                                     "eight.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing benchmark folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Build a benchmark: real camera images and zoo samples with train/val/test splits and
    open-set protocols (seed, architecture, family, all)."""
    from genprint.world.bench import BenchSettings, build_bench

    if format not in ("png", "jpeg"):
        raise typer.BadParameter("must be png or jpeg", param_hint="--format")
    if task not in ("attribution", "camera"):
        raise typer.BadParameter("must be attribution or camera", param_hint="--task")
    if generator:
        from genprint.world import zoo

        unknown = [g for g in generator if g not in zoo.ZOO.names()]
        if unknown:
            raise typer.BadParameter(f"{', '.join(unknown)}: not in the zoo (genprint zoo list "
                                     "--all)", param_hint="--generator")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; give a folder", param_hint="OUT")
    if any(p.exists() and not p.is_dir() for p in out.parents):
        raise typer.BadParameter(f"{out}: a folder above it is a file", param_hint="OUT")
    settings = BenchSettings(task=task, per_class=per_class, seed=seed, size=size,  # type: ignore[arg-type]
                             format=format, jpeg_quality=jpeg_quality,  # type: ignore[arg-type]
                             generators=tuple(generator) if generator else None,
                             random_cameras=random_cameras)
    with progress_bar(disable=json_out or not console.is_terminal) as bar:
        task_id = bar.add_task("writing images", total=None)
        try:
            summary = build_bench(out, settings, overwrite=overwrite,
                                  on_progress=lambda src, n: bar.advance(task_id, n))
        except (FileExistsError, ValueError) as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
    if json_out:
        print_json(summary)
    else:
        console.print(f"[green]wrote[/green] {summary['n_images']} images to {esc(str(out))} "
                      f"({len(summary['counts'])} sources; protocols: "  # type: ignore[arg-type]
                      f"{', '.join(summary['protocols'])})")  # type: ignore[arg-type]
