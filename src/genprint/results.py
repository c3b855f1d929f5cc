"""The result of attributing one image, and writing a batch of results to CSV / Parquet / JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

RESULT_COLUMN_TYPES = (
    ("path", "string"), ("label", "string"), ("candidate", "string"), ("score", "float64"),
    ("threshold", "float64"), ("is_unknown", "bool_"), ("scores", "string"), ("n_tiles", "int64"),
    ("tile_agreement", "float64"), ("accepted_by", "string"), ("seen_in_training", "bool_"),
    ("notes", "string"), ("error", "string"), ("error_code", "string"), ("sha256", "string"),
    ("model_sha256", "string"),
)
"""The columns of a results table and their Parquet (pyarrow) types."""

RESULT_COLUMNS = tuple(name for name, _ in RESULT_COLUMN_TYPES)

OPTIONAL_COLUMNS = ("seen_in_training", "notes")
"""Columns that results files written by an older genprint lack (read back as empty)."""


@dataclass
class Attribution:
    """What genprint says about one image.

    ``label`` is the attributed source or ``"unknown"``; ``candidate`` is the known source the
    method ranks first (what a closed-set classifier would say: the nearest source for
    ``metric`` and ``baseline``, the highest p-value for ``invert``, the head's top class for
    ``probe``; with ``metric`` enrolled sources, the source the decision took, which may be an
    enrolled one that is not the nearest); ``score`` is ``scores[candidate]``, the open-set
    confidence (higher = more like the candidate) compared with the candidate's ``threshold``;
    ``scores`` holds one score per known source (for ``probe`` with a Mahalanobis or k-NN
    score, rejection scores that need not rank the candidate first). ``accepted_by`` says how a known label was reached: ``"threshold"`` (the score
    is within the candidate's threshold) or ``"separator"`` (``metric`` only: an enrolled
    source's separator claimed an image outside its distance threshold); it is empty for
    ``unknown``. ``seen_in_training`` is True when the image has the same pixels as a picture
    the model was fitted on (training, validation or enrolment; see
    :mod:`genprint.io.fingerprint`), so the answer may be recall rather than attribution; None
    when the model keeps no fingerprints. ``notes`` says what reading the file changed or
    left out (e.g. 16-bit values reduced to 8 bits, an alpha channel dropped, an EXIF
    orientation not applied), then what the method did to the pixels (``probe``'s padding);
    ``"; "``-separated, None when there is nothing to say (images given as arrays have no
    reading notes). For provenance, ``sha256`` is the hash of the file's bytes as read and
    analysed (files only), and ``model_sha256`` the hash of the saved model's ``card.json``,
    which lists the sha256 of every other file of the model (empty for a model never saved or
    loaded). For an image that could not be used, every field but ``path``, ``error``, the
    hashes and ``error_code`` is empty (``scores`` is ``{}``, written ``"{}"`` in CSV and
    Parquet).
    """

    path: str
    label: str | None = None
    candidate: str | None = None
    score: float | None = None
    threshold: float | None = None
    is_unknown: bool | None = None
    scores: dict[str, float] = field(default_factory=dict)
    n_tiles: int | None = None
    tile_agreement: float | None = None
    accepted_by: str | None = None
    seen_in_training: bool | None = None
    notes: str | None = None
    error: str | None = None
    error_code: str | None = None
    sha256: str | None = None
    model_sha256: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the image was read and attributed."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready)."""
        return asdict(self)


def printable(value: Any) -> Any:
    """Text that UTF-8 can store: a file name with bytes that are not UTF-8 (kept by Python as
    lone surrogates) gets them as ``\\xNN`` escapes; other values are returned as they are."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
"""A CSV text cell starting with one of these gets a ``'`` in front (:func:`csv_cell`)."""


def csv_cell(value: Any) -> Any:
    """A value as a CSV results file holds it. Text a spreadsheet would run as a formula (it
    starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: a file named
    ``=HYPERLINK(...).png``, a source name of the user's) gets a ``'`` in front, which
    spreadsheets read as "text, not a formula" and do not show; text starting with ``'`` gets
    one too, so that :func:`csv_text` gives every value back exactly. Numbers are kept as they
    are. JSON and Parquet files hold the text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(value: str) -> str:
    """The text a CSV results cell stands for: the inverse of :func:`csv_cell`."""
    return value.removeprefix("'")


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN / inf (not valid JSON) replaced by ``None`` and file-name bytes that are
    not UTF-8 written as ``\\xNN`` (as in CSV, Parquet and tables), in nested dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {json_ready(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def flat_row(result: Attribution) -> dict[str, Any]:
    """``result`` as one row of a results table: its fields, ``scores`` as JSON text."""
    row = result.to_dict()
    row["scores"] = json.dumps(result.scores, sort_keys=True)  # "{}" for a file not read
    return row


RESULT_SUFFIXES = (".csv", ".parquet", ".json")
"""The files :func:`write_results` writes."""


def check_results_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path` if results can be written there, else ``ValueError`` (a
    suffix other than :data:`RESULT_SUFFIXES`, an existing directory, or a place that cannot be
    written; the parent folder is created). Callers check it
    before the work whose results it will hold."""
    out = Path(path)
    if out.suffix.lower() not in RESULT_SUFFIXES:
        raise ValueError(f"{out}: results can be written as .csv, .parquet or .json")
    if out.is_dir():
        raise ValueError(f"{out} is a directory; give a file name ending in .csv, .parquet "
                         "or .json")
    from genprint.storage.atomic import check_output_file

    try:
        check_output_file(out)
    except OSError as exc:
        raise ValueError(str(exc)) from None
    return out


def write_results(results: Sequence[Attribution], path: str | os.PathLike[str]) -> Path:
    """Write results to ``.csv``, ``.parquet`` or ``.json`` (atomically: temp file + rename).

    In CSV and Parquet the per-source ``scores`` column is a JSON object.
    """
    return write_table(path, RESULT_COLUMN_TYPES, [flat_row(r) for r in results],
                       [r.to_dict() for r in results])


def write_labelled_results(results: Sequence[Attribution], sources: Sequence[str | None],
                           path: str | os.PathLike[str],
                           origins: Sequence[str | None] | None = None) -> Path:
    """:func:`write_results` with a first column ``true_source``: the label of each image in the
    evaluation data (``genprint eval --results``), so every figure can be audited row by row;
    and a last column ``true_origin`` (the camera of a real image, e.g. a held-out one) when
    ``origins`` are given."""
    extra = origins is not None
    origins = list(origins) if origins is not None else [None] * len(results)
    columns = (("true_source", "string"), *RESULT_COLUMN_TYPES,
               *((("true_origin", "string"),) if extra else ()))
    flat = [{"true_source": s, **flat_row(r), **({"true_origin": o} if extra else {})}
            for r, s, o in zip(results, sources, origins, strict=True)]
    rows = [{"true_source": s, **r.to_dict(), **({"true_origin": o} if extra else {})}
            for r, s, o in zip(results, sources, origins, strict=True)]
    return write_table(path, columns, flat, rows)


def read_results(path: str | os.PathLike[str]) -> list[Attribution]:
    """Read back a results file written by :func:`write_results` or a :class:`ResultsWriter`
    (``.csv``, ``.parquet`` or ``.json``), e.g. the rows of an interrupted run to resume from.
    ``ValueError`` if it is not such a file."""
    import csv

    src = Path(path)
    kind = src.suffix.lower()
    try:
        if kind == ".json":
            rows = json.loads(src.read_text(encoding="utf-8"))
        elif kind == ".csv":
            with src.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not set(RESULT_COLUMNS) - set(OPTIONAL_COLUMNS) <= set(reader.fieldnames
                                                                          or ()):
                    raise ValueError(f"{src}: not a genprint results file (its columns are not "
                                     "attribute's)")
                return [from_flat_row({k: csv_text(v) if isinstance(v, str) else v
                                       for k, v in r.items()}) for r in reader]
        elif kind == ".parquet":
            import pyarrow.parquet as pq

            return [from_flat_row(r) for r in pq.read_table(src).to_pylist()]
        else:
            raise ValueError(f"{src}: results are .csv, .parquet or .json files")
        return [Attribution(**{k: r.get(k) for k in RESULT_COLUMNS}) for r in rows]
    except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{src}: not a genprint results file ({exc})") from None


def from_flat_row(row: dict[str, Any]) -> Attribution:
    """The :class:`Attribution` of a results-table row (CSV text or Arrow values, ``scores``
    as JSON text): the inverse of :func:`flat_row`."""
    typed = _typed(row)
    return Attribution(**{k: typed.get(k) for k in RESULT_COLUMNS})


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV or Parquet row with the types of :class:`Attribution` (empty text = None)."""
    out: dict[str, Any] = {}
    for name, kind in RESULT_COLUMN_TYPES:
        value = row.get(name)
        if value in ("", None):
            out[name] = None
        elif kind == "float64":
            out[name] = float(value)
        elif kind == "int64":
            out[name] = int(value)
        elif kind == "bool_":
            out[name] = value if isinstance(value, bool) else value == "True"
        else:
            out[name] = value
    out["scores"] = json.loads(row.get("scores") or "{}")
    return out


class RowsKept(OSError):
    """The rows were complete but could not be renamed to their path; they were kept at
    :attr:`kept` instead (see :meth:`TableWriter.commit`)."""

    def __init__(self, kept: Path, cause: OSError) -> None:
        super().__init__(cause.errno, f"{cause.strerror or cause}; the complete rows are in "
                                      f"{kept}")
        self.kept = kept


class TableWriter:
    """A ``.csv``, ``.parquet`` or ``.json`` table written row by row, atomically.

    Rows go to a temporary file beside ``path`` as they come, so memory does not grow with the
    number of rows. :meth:`commit` completes the file and renames it to ``path``;
    :meth:`keep_as` completes it under another name (the rows of an interrupted run);
    :meth:`abandon` removes it. Used as a context manager, an error abandons it. ``columns``
    are (name, pyarrow type name) pairs; CSV and Parquet take those columns of each flat row
    (text written by :func:`printable`), JSON writes the JSON row as it is (nested values
    allowed). Parquet needs pyarrow (``RuntimeError`` without it) and is written in row groups
    of :attr:`GROUP` rows.
    """

    GROUP = 10_000

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[tuple[str, str]]) -> None:
        import tempfile

        self.path = check_results_path(path)
        self.kind = self.path.suffix.lower()
        self.columns = list(columns)
        self.names = [name for name, _ in columns]
        self.count = 0
        self._buffer: list[dict[str, Any]] = []
        self._parquet: Any = None
        if self.kind == ".parquet":
            try:
                import pyarrow as pa
            except ImportError:
                raise RuntimeError(
                    "writing Parquet needs pyarrow: pip install 'genprint[parquet]'") from None
            self._schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns])
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        self._fh: Any = None
        if self.kind == ".csv":
            import csv

            self._fh = self.tmp.open("w", newline="", encoding="utf-8")
            self._csv = csv.DictWriter(self._fh, fieldnames=self.names)
            self._csv.writeheader()
        elif self.kind == ".json":
            self._fh = self.tmp.open("w", encoding="utf-8")

    def write(self, flat_row: dict[str, Any], json_row: Any) -> None:
        """Add one row (``flat_row`` for CSV / Parquet, ``json_row`` for JSON)."""
        if self.kind == ".csv":
            self._csv.writerow({k: "" if flat_row.get(k) is None
                                else csv_cell(printable(flat_row.get(k))) for k in self.names})
        elif self.kind == ".json":
            from genprint.cli.output import to_json

            self._fh.write(("[\n  " if self.count == 0 else ",\n  ")
                           + to_json(json_row).replace("\n", "\n  "))
        else:
            self._buffer.append({k: printable(flat_row.get(k)) for k in self.names})
            if len(self._buffer) >= self.GROUP:
                self._flush_parquet()
        self.count += 1

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, self._schema)
        if self._buffer:
            self._parquet.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
            self._buffer = []

    def _finish(self) -> None:
        """Complete the temporary file (once: a second call changes nothing)."""
        if getattr(self, "_finished", False):
            return
        if self.kind == ".json" and self._fh is not None:
            # from the file, not self.count: an interrupt may fall between a row and its count
            self._fh.write("[]\n" if self._fh.tell() == 0 else "\n]\n")
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.kind == ".parquet" and self.tmp.exists():
            self._flush_parquet()
            self._parquet.close()
            self._parquet = None
        self._finished = True

    def keep_as(self, path: str | os.PathLike[str]) -> Path:
        """Complete the file and give it the name ``path`` (e.g. ``results.partial.csv``).
        If that fails (a full disk, ``path`` a folder, an interrupt), the temporary file is
        removed and the error raised."""
        from genprint.storage.atomic import file_mode, replace_durably

        try:
            self._finish()
            replace_durably(self.tmp, path, file_mode())
        except BaseException:
            self.abandon()
            raise
        return Path(path)

    def commit(self, fallback: str | os.PathLike[str] | None = None) -> Path:
        """Complete the file and rename it to its path. When only that last rename fails (the
        rows are complete: e.g. the existing file at the path cannot be replaced) and
        ``fallback`` is given, the file is renamed to ``fallback`` instead — or, if that fails
        too, left as the hidden temporary file — and :class:`RowsKept` (an ``OSError``) says
        why and where; otherwise the temporary file is removed and the error raised."""
        from genprint.storage.atomic import file_mode, fsync_dir, fsync_file

        try:
            self._finish()
            fsync_file(self.tmp)  # (before the mode: a umask may take read access away)
            os.chmod(self.tmp, file_mode())
        except BaseException:
            self.abandon()
            raise
        try:
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            if fallback is None:
                self.abandon()
                raise
            try:
                os.replace(self.tmp, fallback)
            except BaseException:  # noqa: BLE001 - the complete rows stay where they are
                raise RowsKept(self.tmp, exc) from exc
            raise RowsKept(Path(fallback), exc) from exc
        except BaseException:
            self.abandon()
            raise
        return self.path

    def abandon(self) -> None:
        """Remove the temporary file; the path is left as it was."""
        import contextlib

        for handle in (self._fh, self._parquet):
            if handle is not None:
                with contextlib.suppress(Exception):  # the file is being thrown away
                    handle.close()
        self._fh = self._parquet = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if self.tmp.exists():  # neither committed nor kept: an error, or left unfinished
            self.abandon()


class ResultsWriter(TableWriter):
    """:class:`TableWriter` of :class:`Attribution` rows with the columns of
    :data:`RESULT_COLUMN_TYPES` (what ``genprint attribute --out`` streams to)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, RESULT_COLUMN_TYPES)

    def add(self, result: Attribution) -> None:
        """Add one result."""
        self.write(flat_row(result), result.to_dict())


def write_table(path: str | os.PathLike[str], columns: Sequence[tuple[str, str]],
                flat_rows: Sequence[dict[str, Any]], json_rows: Sequence[Any]) -> Path:
    """Write one table to ``.csv``, ``.parquet`` or ``.json``, atomically (a
    :class:`TableWriter` fed every row)."""
    with TableWriter(path, columns) as writer:
        for flat, row in zip(flat_rows, json_rows, strict=True):
            writer.write(flat, row)
        return writer.commit()
