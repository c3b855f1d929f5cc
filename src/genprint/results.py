"""The result of attributing one image, and writing a batch of results to CSV / Parquet / JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genprint.storage.atomic import atomic_file

RESULT_COLUMN_TYPES = (
    ("path", "string"), ("label", "string"), ("candidate", "string"), ("score", "float64"),
    ("threshold", "float64"), ("is_unknown", "bool_"), ("scores", "string"), ("n_tiles", "int64"),
    ("tile_agreement", "float64"), ("accepted_by", "string"), ("error", "string"),
    ("error_code", "string"), ("sha256", "string"), ("model_sha256", "string"),
)
"""The columns of a results table and their Parquet (pyarrow) types."""

RESULT_COLUMNS = tuple(name for name, _ in RESULT_COLUMN_TYPES)


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
    ``unknown``. For provenance, ``sha256`` is the hash of the file's bytes as read and
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


def _flat_row(result: Attribution) -> dict[str, Any]:
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
    return write_table(path, RESULT_COLUMN_TYPES, [_flat_row(r) for r in results],
                       [r.to_dict() for r in results])


def write_labelled_results(results: Sequence[Attribution], sources: Sequence[str | None],
                           path: str | os.PathLike[str]) -> Path:
    """:func:`write_results` with a first column ``true_source``: the label of each image in the
    evaluation data (``genprint eval --results``), so every figure can be audited row by row."""
    columns = (("true_source", "string"), *RESULT_COLUMN_TYPES)
    flat = [{"true_source": s, **_flat_row(r)} for r, s in zip(results, sources, strict=True)]
    rows = [{"true_source": s, **r.to_dict()} for r, s in zip(results, sources, strict=True)]
    return write_table(path, columns, flat, rows)


def write_table(path: str | os.PathLike[str], columns: Sequence[tuple[str, str]],
                flat_rows: Sequence[dict[str, Any]], json_rows: Sequence[Any]) -> Path:
    """Write one table to ``.csv``, ``.parquet`` or ``.json``, atomically.

    ``columns`` are (name, pyarrow type name) pairs; CSV and Parquet take those columns of
    ``flat_rows`` (text written by :func:`printable`), JSON writes ``json_rows`` as they are
    (nested values allowed). Parquet needs pyarrow (``RuntimeError`` without it).
    """
    import csv

    out = check_results_path(path)
    suffix = out.suffix.lower()
    names = [name for name, _ in columns]
    with atomic_file(out) as tmp:
        if suffix == ".json":
            from genprint.cli.output import to_json

            tmp.write_text(to_json(list(json_rows)) + "\n", encoding="utf-8")
        elif suffix == ".csv":
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=names)
                writer.writeheader()
                for r in flat_rows:
                    writer.writerow({k: "" if r.get(k) is None else printable(r.get(k))
                                     for k in names})
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise RuntimeError(
                    "writing Parquet needs pyarrow: pip install 'genprint[parquet]'"
                ) from None
            schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns])
            table = pa.Table.from_pylist(
                [{k: printable(r.get(k)) for k in names} for r in flat_rows], schema=schema)
            pq.write_table(table, tmp)
    return out
