"""``genprint zoo list|train|sample|sheet``: the built-in generator zoo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import app
from genprint.cli.output import console, esc, print_json, progress_bar

zoo_app = typer.Typer(help="The built-in generator zoo.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

CARD_COLUMNS = ("name", "family", "architecture", "upsampling", "seed", "resolution",
                "parameters", "training_steps", "train_seconds")
HEADERS = {"architecture": "arch", "upsampling": "upsampl.", "resolution": "px",
           "parameters": "params", "training_steps": "steps", "train_seconds": "train s"}
"""Short column titles, so the table fits an 80-column terminal."""


@zoo_app.command("list")
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="Print the model cards as JSON.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Include catalogue entries that have no "
                                                     "trained weights yet.")] = False,
) -> None:
    """List the zoo's generators with their model cards (sha256 verified against the weights)."""
    from rich.table import Table

    from genprint.world import zoo
    from genprint.world.zoo.store import find_card, sha256_file

    try:
        cards = zoo.list_generators(trained_only=not all_)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    for card in cards:
        path = find_card(card["name"])
        if path is not None:
            try:
                card["sha256_ok"] = sha256_file(path.parent / card["file"]) == card["sha256"]
            except (OSError, KeyError):  # weights missing or the card names none
                card["sha256_ok"] = "weights missing"
    if json_out:
        print_json(cards)
        return
    table = Table(title="genprint zoo")
    width = max((len(str(c.get("name", ""))) for c in cards), default=4)
    table.add_column("name", no_wrap=True, min_width=width)  # names must stay readable
    for c in CARD_COLUMNS[1:]:
        table.add_column(HEADERS.get(c, c), overflow="fold")
    table.add_column("sha256 ok", overflow="fold")
    for card in cards:
        table.add_row(*(str(card.get(c, "")) for c in CARD_COLUMNS),
                      str(card.get("sha256_ok", "untrained")))
    console.print(table)


@zoo_app.command("train")
def train(
    names: Annotated[list[str], typer.Argument(help="Generators of the catalogue to train "
                                                   "(see `genprint zoo list --all`).")],
    out: Annotated[Path | None, typer.Option(help="Where weights and cards go (default: "
                                                  "$GENPRINT_ZOO_DIR). genprint finds them "
                                                  "there when GENPRINT_ZOO_DIR names the "
                                                  "folder. Maintainers rebuild the shipped "
                                                  "weights with --out src/genprint/zoo_weights "
                                                  "in a source checkout.")] = None,
    work: Annotated[Path, typer.Option(help="Checkpoints (training resumes from them).")] =
        Path(".genprint-work/zoo"),
    threads: Annotated[int, typer.Option(min=1, help="Torch threads (results are reproducible "
                                                     "for a given thread count).")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the resulting cards as JSON.")] = False,
) -> None:
    """Train zoo generators on the simulated cameras (deterministic, resumable)."""
    from genprint.world import zoo
    from genprint.world.zoo.store import weights_dirs
    from genprint.world.zoo.train import train_generator

    specs = []
    for name in names:
        try:
            specs.append(zoo.spec(name))
        except KeyError as exc:
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
    if out is None:
        if not os.environ.get("GENPRINT_ZOO_DIR"):
            console.print("[red]error:[/red] say where the weights go: --out DIR (and set "
                          "GENPRINT_ZOO_DIR=DIR so that genprint finds them), or set "
                          "GENPRINT_ZOO_DIR. Nothing is written into the installed package.")
            raise typer.Exit(2)
        out = Path(os.environ["GENPRINT_ZOO_DIR"])
    for folder, option in ((out, "--out"), (work, "--work")):
        if folder.exists() and not folder.is_dir():
            console.print(f"[red]error:[/red] {option} {esc(str(folder))} is a file; give a "
                          "folder")
            raise typer.Exit(2)
    cards = []
    for spec in specs:
        with progress_bar(disable=json_out or not console.is_terminal) as bar:
            task = bar.add_task(f"training {spec.name}", total=None)

            def progress(done: int, total: int, loss: float, _t: object = task) -> None:
                bar.update(_t, completed=done, total=total)  # type: ignore[arg-type]

            card = train_generator(spec, out, work, threads=threads, on_progress=progress)
        cards.append(card)
        if not json_out:
            console.print(f"[green]trained[/green] {spec.name}: {card['training_steps']} steps in "
                          f"{card['train_seconds']} s, {card['parameters']} parameters")
    if json_out:
        print_json(cards)
    elif out.resolve() not in {d.resolve() for d in weights_dirs()}:
        console.print(f"note: genprint looks for zoo weights in $GENPRINT_ZOO_DIR, then the "
                      f"shipped ones; set GENPRINT_ZOO_DIR={esc(str(out))} to use these.")


@zoo_app.command("sample")
def sample(
    name: Annotated[str, typer.Argument(help="Zoo generator.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNG samples.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of images.")] = 16,
    seed: Annotated[int, typer.Option(help="Latent seed.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the files written as JSON.")
                        ] = False,
) -> None:
    """Write --n samples of a zoo generator as lossless PNG files."""
    from PIL import Image

    from genprint.world import zoo

    try:
        gen = zoo.load(name)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    if out.exists() and not out.is_dir():
        console.print(f"[red]error:[/red] --out {esc(str(out))} is a file; give a folder")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k, img in enumerate(gen.sample(n, seed)):
        files.append(out / f"{name}-{seed}-{k:05d}.png")
        Image.fromarray(img).save(files[-1])
    if json_out:
        print_json({"generator": name, "seed": seed, "n": n, "files": [str(f) for f in files]})
    else:
        console.print(f"wrote {n} samples of {esc(str(name))} to {esc(str(out))}")


KNOWN_LIMITS = [
    "## Known limits",
    "",
    "- The GANs (1500 steps of hinge loss with spectral normalisation) have low sample diversity",
    "  and strong upsampling artefacts (checkerboards for transposed convolution and pixel",
    "  shuffle); `gan-pshuffle-*` are close to mode collapse. They are distinct, reproducible",
    "  sources (a small CNN tells the known sources of protocol `all` apart with 95.6% closed-set",
    "  accuracy, `benchmarks/zoo_distinguishability.py`), but not realistic images. Longer",
    "  training is the next step; it changes every figure measured on the world.",
    "- Latent diffusion clips its standardised latent to ±3 at each DDIM step",
    "  (`src/genprint/world/zoo/generator.py`); without the clip, 72% of its pixels saturated.",
]
"""Written into the zoo's README by ``zoo sheet``: what a reader of the sheets should know."""


@zoo_app.command("sheet")
def sheet(
    out: Annotated[Path, typer.Option(help="Folder for the contact sheets.")] = Path("docs/zoo"),
    n: Annotated[int, typer.Option("--n", min=1, help="Samples per sheet.")] = 32,
    zoom: Annotated[int, typer.Option(min=1, help="Nearest-neighbour zoom for viewing.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print the files written as JSON.")
                        ] = False,
) -> None:
    """Contact sheets: for each generator a PNG grid of samples (left) beside real images (right)."""
    from genprint.world import zoo
    from genprint.world.contact_sheet import write_contact_sheet

    if out.exists() and not out.is_dir():
        console.print(f"[red]error:[/red] --out {esc(str(out))} is a file; give a folder")
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    cards = zoo.list_generators()
    intro = ("Written by `genprint zoo sheet`. Each sheet: samples of the generator (left) beside "
             f"real images of the simulated cameras (right), zoomed ×{zoom} (nearest neighbour, "
             "for viewing only).")
    header = ("| name | family | architecture | seed | parameters | training steps | "
              "training time (s, 1 thread) | sha256 (first 12) |")
    lines = ["# The genprint zoo", "", intro, "", header, "|---|---|---|---|---|---|---|---|"]
    sheets = []
    for card in cards:
        path = write_contact_sheet(card["name"], out / f"{card['name']}.png", n=n, zoom=zoom)
        sheets.append(str(path))
        if not json_out:
            console.print(f"wrote {esc(str(path))}")
        lines.append(f"| {card['name']} | {card['family']} | {card['architecture']} | "
                     f"{card['seed']} | {card['parameters']:,} | {card['training_steps']} | "
                     f"{card.get('train_seconds', '')} | `{card['sha256'][:12]}` |")
    lines += ["", *KNOWN_LIMITS, ""]
    lines += [f"## {c['name']}\n\n![{c['name']}]({c['name']}.png)\n" for c in cards]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if json_out:
        print_json({"sheets": sheets, "readme": str(out / "README.md")})
    else:
        console.print(f"wrote {esc(str(out / 'README.md'))}")
