"""The ``genprint`` console script: assembles one typer sub-app or command per verb module."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

import genprint


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler) raised as an interrupt: clean-up code runs (no
    half-written temporary file stays behind) and ``attribute`` keeps its finished rows."""


_terminated = False


def _terminate(signum: int, frame: object) -> None:
    global _terminated
    _terminated = True
    raise Terminated


app = typer.Typer(
    name="genprint",
    help="Open-set source attribution for AI-generated images: which generator made an image, "
    "is it a real camera image, or is its source unknown?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genprint {genprint.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
    max_pixels: Annotated[
        int | None,
        typer.Option("--max-pixels", min=1, help="Largest image any command reads, in pixels "
                     "(default 64 000 000; larger files are refused per file as "
                     "too_many_pixels). Same as the GENPRINT_MAX_PIXELS variable."),
    ] = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Import a module that registers parts of your own "
                     "(backbones, losses, ...) before the command runs: a module name or a "
                     ".py file; repeatable. Same as the GENPRINT_PLUGINS variable "
                     "(comma-separated); installed 'genprint.plugins' entry points are always "
                     "imported."),
    ] = None,
) -> None:
    """genprint command line."""
    if not {"--help", "-h"} & set(sys.argv[1:]) or plugin:
        from genprint.plugins import PluginError, load_plugins

        try:
            load_plugins(plugin or [])
        except PluginError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if max_pixels is None:
        # a bad GENPRINT_MAX_PIXELS is an error before any work, not a crash (help still shows)
        from genprint.io.images import default_max_pixels

        try:
            default_max_pixels()
        except ValueError as exc:
            if not {"--help", "-h"} & set(sys.argv[1:]):
                typer.echo(f"error: {exc} (unset it, or set it to a positive number of "
                           "pixels)", err=True)
                raise typer.Exit(2) from None
    else:
        import os

        from genprint.io.images import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(max_pixels)  # decode_image also lifts Pillow's limit


def _register_verbs() -> None:
    # Each verb module adds its commands to ``app`` (or a sub-app) when imported. Imports are
    # cheap: heavy libraries (torch, ...) are imported inside the command functions.
    from genprint.cli import (  # noqa: F401
        attribute,
        bench,
        calibrate,
        compare,
        demo,
        enroll,
        evaluate,
        pretrain,
        serve,
        train,
        train_invert,
        train_metric,
        train_probe,
        verify,
        zoo,
    )


def _reflow(doc: str) -> str:
    """A docstring with each paragraph on one line (the terminal wraps it to its width)."""
    import inspect

    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


def _reflow_helps(typer_app: typer.Typer) -> None:
    # Help is shown with the docstring's own line breaks, and docstrings are wrapped at 100
    # columns: each paragraph is joined into one line, and the command lists get the first
    # sentence.
    import re

    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback is not None else None)
        if doc:
            info.help = _reflow(doc)
            if info.short_help is None:
                first = info.help.split("\n\n")[0]
                info.short_help = re.split(r"(?<=\.)\s", first, maxsplit=1)[0]
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_helps(group.typer_instance)


_register_verbs()
_reflow_helps(app)


def main() -> None:
    """Entry point of the ``genprint`` console script.

    SIGTERM interrupts the command like Ctrl-C (so clean-up runs) and exits with 143, as a
    process killed by it would; the previous handler is put back afterwards."""
    import signal
    import threading
    import warnings

    global _terminated
    _terminated = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    show = warnings.showwarning
    warnings.showwarning = _warning_as_note(show)
    try:
        app()
    except SystemExit as exc:
        if _terminated:
            raise SystemExit(143) from None
        raise exc from None
    except Terminated:  # outside typer's handling
        raise SystemExit(143) from None
    finally:
        warnings.showwarning = show
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _warning_as_note(fallback: Any) -> Any:
    """A ``warnings.showwarning`` that prints a library's UserWarning as a one-line console
    note (not Python's ``file:line: UserWarning`` form); other categories go to ``fallback``."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if issubclass(category, UserWarning):
            from genprint.cli.output import console, esc

            console.print(f"[yellow]note:[/yellow] {esc(str(message))}")
        else:
            fallback(message, category, filename, lineno, file, line)

    return show
