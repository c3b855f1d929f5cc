"""Shared output helpers for CLI verbs: rich console, progress bars and ``--json`` printing."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from genprint.results import json_ready

T = TypeVar("T")

console = Console(stderr=True, emoji=False)
"""Human-facing messages and progress go to stderr, so stdout stays clean for ``--json``.
Anything that comes from the user or the file system (paths, error texts) is passed through
:func:`esc`, so ``[red]`` or ``:smile:`` in a file name prints as it is."""


def esc(text: str) -> str:
    """``text`` with rich markup escaped (for paths and messages inside styled output), and
    bytes of a file name that are not UTF-8 shown as ``\\xNN`` (they cannot be printed)."""
    from genprint.results import printable

    return escape(printable(text))


def esc_one_line(text: str) -> str:
    """:func:`esc`, with control characters (a newline or tab in a file name) shown as escapes
    (``\\n``, ``\\t``), so that one name stays on one line of a table."""
    import re

    shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)
    return esc(shown)


@contextmanager
def warnings_as_notes() -> Iterator[None]:
    """Print the library's warnings raised inside the block as one-line notes on the console
    (instead of Python's ``file:line: UserWarning`` form), once each, after the block."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                msg = str(w.message)
                if issubclass(w.category, DeprecationWarning | PendingDeprecationWarning
                              | FutureWarning) and not _ours(w.filename):
                    continue  # another library's notice to its own users (e.g. Ray's)
                if msg not in seen:
                    seen.add(msg)
                    console.print(f"[yellow]note:[/yellow] {esc(str(msg))}")


def _ours(filename: str) -> bool:
    """Whether a warning was raised from genprint's own code (its package folder)."""
    import genprint

    package = os.path.realpath(os.path.dirname(genprint.__file__))
    try:
        return os.path.commonpath([os.path.realpath(filename), package]) == package
    except ValueError:  # another drive, or a name that is not a path ("<string>")
        return False


def progress_bar(disable: bool = False) -> Progress:
    """A rich progress bar on stderr; ``disable`` hides it (e.g. when not a terminal)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None,
          disable: bool = False) -> Iterator[T]:
    """Iterate ``items`` with a progress bar."""
    with progress_bar(disable=disable) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """Serialise ``obj`` as strict JSON (NaN becomes null)."""
    return json.dumps(json_ready(obj), default=_json_default, indent=2, allow_nan=False)


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout."""
    sys.stdout.write(to_json(obj) + "\n")
    sys.stdout.flush()


def format_metric(value: Any) -> str:
    """A metric for a table: 3 decimals, or 'n/a' when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def shortened_paths(paths: Sequence[str]) -> tuple[str | None, list[str]]:
    """``(folder, rest)``: the folder every path lies in (None when there is none, or for a
    single path) and each path relative to it, so that a table's path column shows what
    differs. Tables say the folder above them; files and ``--json`` keep full paths."""
    if len(paths) < 2:
        return None, list(paths)
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # absolute and relative paths mixed, or different drives
        return None, list(paths)
    if not common or common == os.sep:
        return None, list(paths)
    return common, [os.path.relpath(p, common) if os.path.dirname(p) else p for p in paths]


def check_out_dir(out: Any, overwrite: bool, option: str = "--out") -> Any:
    """Check an output model folder before any work (see
    :func:`genprint.storage.model_dir.check_output_dir`); a clear ``BadParameter`` otherwise.
    Returns the folder to write (a symbolic link is followed)."""
    import typer

    from genprint.storage.model_dir import check_output_dir

    try:
        return check_output_dir(out, overwrite)
    except OSError as exc:  # FileExistsError, NotADirectoryError, PermissionError, ...
        raise typer.BadParameter(str(exc), param_hint=option) from None


def check_out_file(path: Any, option: str) -> None:
    """Check an output file option (``--json``, ``--report``, ...) before any work; a clear
    ``BadParameter`` otherwise (``-`` meaning stdout and ``None`` pass)."""
    import typer

    from genprint.storage.atomic import check_output_file

    if path is None or str(path) == "-":
        return
    try:
        check_output_file(path)
    except OSError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def partial_path(out: Path) -> Path:
    """Where the rows of an interrupted run go: ``results.partial.csv`` for ``results.csv``."""
    return out.with_name(f"{out.stem}.partial{out.suffix}")


def save_interrupted(writer: Any, out: Path | None, n_done: int, total: int,
                     json_rows: list[Any] | None,
                     to_finish: str = "Run the remaining files to finish.") -> None:
    """After Ctrl-C or SIGTERM in a verb that streams rows to ``out`` through ``writer`` (a
    :class:`genprint.results.TableWriter`, or None without --out): keep the finished rows (in
    input order) as :func:`partial_path`, never as ``out``; with --json alone, print
    ``json_rows``. Says what was kept."""
    said = f"interrupted after {n_done} of {total} file(s)"
    if writer is not None and not writer.tmp.exists():  # interrupted just after completing
        console.print(f"[yellow]interrupted after the last file; results written to "
                      f"{esc(str(out))}[/yellow]")
        return
    if writer is not None and n_done:
        try:
            partial = writer.keep_as(partial_path(writer.path))
        except OSError as exc:
            console.print(f"[red]{said}; the rows could not be kept: {esc(str(exc))}[/red]")
            return
        console.print(f"[yellow]{said}; their rows are in {esc(str(partial))} ({esc(str(out))} "
                      f"was not written). {to_finish}[/yellow]")
        return
    if writer is not None:
        writer.abandon()
    if json_rows:
        print_json(json_rows)
        console.print(f"[yellow]{said}; their rows were printed[/yellow]")
        return
    older = partial_path(out) if out is not None else None
    stale = (f" ({esc(str(older))} is from an earlier run)" if older is not None
             and older.exists() else "")
    console.print(f"[yellow]{said}; nothing was written{stale}[/yellow]")
