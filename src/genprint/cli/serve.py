"""``genprint serve MODEL``: answer uploaded images over HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import app
from genprint.cli.output import console, esc, print_json


@app.command("serve")
def serve(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on. The default answers this "
                                           "machine only; 0.0.0.0 answers every network "
                                           "(there is no authentication: put it behind a "
                                           "proxy that has some).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    max_files: Annotated[int, typer.Option(min=1, help="Files per request (more: HTTP 413).")
                         ] = 64,
    max_file_mb: Annotated[float, typer.Option(
        min=0.001, help="Megabytes (MiB) per file; a larger file gets an error row "
                        "(file_too_large).")] = 64.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    json_out: Annotated[bool, typer.Option("--json", help="Print the model and address as one "
                                                          "JSON object before serving.")] = False,
) -> None:
    """Serve a model over HTTP: POST image files to /attribute (multipart field `files`) and get
    one row per file, as `genprint attribute --json` gives them; GET /model describes the model,
    GET /health answers, /docs is the interactive API page.

    Example: curl -F files=@photo.jpg -F files=@other.png http://127.0.0.1:8000/attribute

    Needs the serve extra (pip install "genprint\\[serve]"). Exit code 2 for a bad model or a
    missing extra. Stop with Ctrl-C.
    """
    try:
        import uvicorn

        from genprint.serve.app import create_app, model_summary
        from genprint.serve.limits import MiB, ServeLimits
    except ImportError as exc:
        console.print(f"[red]error:[/red] genprint serve needs FastAPI and uvicorn ({esc(str(exc))}"
                      "): pip install \"genprint[serve]\"")
        raise typer.Exit(2) from None
    import genprint
    from genprint.storage.model_dir import ModelFormatError

    try:
        attributor = genprint.load(model)
    except ModelFormatError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    limits = ServeLimits(max_files=max_files, max_file_bytes=max(1, int(max_file_mb * MiB)),
                         batch_size=batch_size)
    web_app = create_app(attributor, limits)
    summary = model_summary(attributor)
    address = f"http://{host}:{port}"
    if json_out:
        print_json({"address": address, "model": str(model), **summary,
                    "max_files": limits.max_files, "max_file_bytes": limits.max_file_bytes,
                    "max_pixels": limits.pixel_limit})
    console.print(f"serving {esc(str(model))} (method {summary['method']}, "
                  f"{len(summary['classes'])} sources, model_sha256 "
                  f"{(summary['model_sha256'] or '-')[:12]}) at {esc(address)}; POST images to "
                  f"/attribute, API page at /docs; Ctrl-C stops")
    uvicorn.run(web_app, host=host, port=port, log_level="warning")
