"""``genprint serve MODEL``: answer uploaded images over HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import app
from genprint.cli.output import console, esc, print_json

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@app.command("serve")
def serve(
    model: Annotated[Path, typer.Argument(help="A saved attributor directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on. The default answers this "
                                           "machine only; 0.0.0.0 answers every network "
                                           "(then set a token with --token-env, and put it "
                                           "behind a proxy for TLS).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free "
                                                            "port, printed).")] = 8000,
    max_files: Annotated[int, typer.Option(min=1, help="Files per request (more: HTTP 413).")
                         ] = 64,
    max_file_mb: Annotated[float, typer.Option(
        min=0.001, help="MiB per file; a larger file gets an error row (file_too_large).")
    ] = 64.0,
    max_request_mb: Annotated[float, typer.Option(
        min=0.001, help="MiB per request body (more: HTTP 413 as soon as it is known).")
    ] = 256.0,
    max_waiting: Annotated[int, typer.Option(
        min=0, help="Requests that may wait while the model answers one (more: HTTP 503 with "
                    "Retry-After, before their body is read).")] = 8,
    max_connections: Annotated[int, typer.Option(
        min=1, help="Open connections at once, any endpoint (more: HTTP 503).")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    body_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds in which a request's whole body must arrive once admitted "
                        "(more: HTTP 408), so that a slow client cannot hold a waiting place.")
    ] = 300.0,
    max_request_tiles: Annotated[int, typer.Option(
        min=1, help="The largest max_tiles a request may ask for (tiling methods; more: HTTP "
                    "422), so that one request cannot hold the model for minutes.")] = 256,
    log_level: Annotated[str, typer.Option(
        help=f"Server log level ({', '.join(LOG_LEVELS)}); `info` logs one line per request.")
    ] = "info",
    token_env: Annotated[str, typer.Option(
        help="Environment variable holding a token: when it is set, /attribute, /model and "
             "/metrics "
             "need `Authorization: Bearer TOKEN` (HTTP 401 otherwise); /health and the API "
             "description stay open. Without it, no authentication.")
    ] = "GENPRINT_SERVE_TOKEN",
    json_out: Annotated[bool, typer.Option("--json", help="Print the model, address and limits "
                                                          "as one JSON object once listening."
                                           )] = False,
) -> None:
    """Serve a model over HTTP: POST image files to /attribute (multipart field `files`) and get
    one row per file, as `genprint attribute --json` gives them; GET /model describes the model
    and the limits, GET /health answers, GET /metrics gives monitoring counters (Prometheus
    text), /docs is the interactive API page.

    Example: curl -F files=@photo.jpg -F files=@other.png http://127.0.0.1:8000/attribute

    Needs the serve extra (pip install "genprint\\[serve]"). Exit code 2 for a bad model, a
    missing extra or an address it cannot listen on. Ctrl-C or SIGTERM stop it after the
    requests in progress are answered.
    """
    try:
        import uvicorn

        from genprint.serve.app import create_app, listening_socket, model_summary
        from genprint.serve.limits import MiB, ServeLimits
    except ImportError as exc:
        console.print(f"[red]error:[/red] genprint serve needs FastAPI and uvicorn ({esc(str(exc))}"
                      "): pip install \"genprint[serve]\"")
        raise typer.Exit(2) from None
    import genprint
    from genprint.storage.model_dir import ModelFormatError

    if log_level not in LOG_LEVELS:
        raise typer.BadParameter(f"one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    try:
        attributor = genprint.load(model)
    except ModelFormatError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
    limits = ServeLimits(max_files=max_files, max_file_bytes=max(1, int(max_file_mb * MiB)),
                         max_request_bytes=max(1, int(max_request_mb * MiB)),
                         max_waiting=max_waiting, batch_size=batch_size,
                         body_timeout=body_timeout, max_request_tiles=max_request_tiles,
                         max_connections=max_connections)
    token = os.environ.get(token_env, "").strip() or None
    web_app = create_app(attributor, limits, token=token)
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot listen on {esc(host)}:{port}: "
                      f"{esc(exc.strerror or str(exc))}")
        raise typer.Exit(2) from None
    bound = sock.getsockname()[1]
    address = f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    summary = model_summary(attributor, limits)
    if json_out:
        print_json({"address": address, "model": str(model), "token_required": bool(token),
                    **summary})
    console.print(f"serving {esc(str(model))} (method {summary['method']}, "
                  f"{len(summary['classes'])} sources, model_sha256 "
                  f"{(summary['model_sha256'] or '-')[:12]}) at {esc(address)}; POST images to "
                  f"/attribute, API page at /docs, counters at /metrics; "
                  + (f"requests need the token of ${esc(token_env)}; " if token else
                     f"no authentication (set ${esc(token_env)} for a token); ")
                  + "Ctrl-C stops")
    config = uvicorn.Config(web_app, log_level=log_level, limit_concurrency=max_connections,
                            timeout_keep_alive=5, log_config=_logs_to_stderr(log_level))
    uvicorn.Server(config).run(sockets=[sock])


def _logs_to_stderr(level: str = "info") -> dict:
    """uvicorn's logging set-up with its access lines on stderr too (its default writes them
    to stdout, which stays for --json, as in every genprint command), and the server's own
    lines (logger ``genprint.serve``: requests whose client left) at ``level``."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config.get("handlers", {}).values():
        if handler.get("stream") == "ext://sys.stdout":
            handler["stream"] = "ext://sys.stderr"
    config.setdefault("loggers", {})["genprint.serve"] = {
        "handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
