"""The result of attributing one image, and writing a batch of results to CSV / Parquet / JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genprint.storage.atomic import atomic_file

RESULT_COLUMNS = (
    "path", "label", "candidate", "score", "threshold", "is_unknown", "scores", "n_tiles",
    "tile_agreement", "accepted_by", "error", "error_code",
)


@dataclass
class Attribution:
    """What genprint says about one image.

    ``label`` is the attributed source or ``"unknown"``; ``candidate`` is the nearest known source
    (what a closed-set classifier would say; with ``metric`` enrolled sources, the source the
    decision took, which may be an enrolled one that is not the nearest); ``score`` is the open-set confidence (higher = more
    like a known source) compared with the candidate's ``threshold``; ``scores`` holds one score per
    known source. ``accepted_by`` says how a known label was reached: ``"threshold"`` (the score
    is within the candidate's threshold) or ``"separator"`` (``metric`` only: an enrolled
    source's separator claimed an image outside its distance threshold); it is empty for
    ``unknown``. For an image that could not be read, every field but ``path`` and ``error`` is
    empty.
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
    row["scores"] = json.dumps(result.scores, sort_keys=True) if result.ok else ""
    return row


RESULT_SUFFIXES = (".csv", ".parquet", ".json")
"""The files :func:`write_results` writes."""


def check_results_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path` if results can be written there, else ``ValueError`` (a
    suffix other than :data:`RESULT_SUFFIXES`, or an existing directory). Callers check it
    before the work whose results it will hold."""
    out = Path(path)
    if out.suffix.lower() not in RESULT_SUFFIXES:
        raise ValueError(f"{out}: results can be written as .csv, .parquet or .json")
    if out.is_dir():
        raise ValueError(f"{out} is a directory; give a file name ending in .csv, .parquet "
                         "or .json")
    return out


def write_results(results: Sequence[Attribution], path: str | os.PathLike[str]) -> Path:
    """Write results to ``.csv``, ``.parquet`` or ``.json`` (atomically: temp file + rename).

    In CSV and Parquet the per-source ``scores`` column is a JSON object.
    """
    import csv

    out = Path(path)
    suffix = out.suffix.lower()
    check_results_path(out)
    with atomic_file(out) as tmp:
        if suffix == ".csv":
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(RESULT_COLUMNS))
                writer.writeheader()
                for r in results:
                    writer.writerow({k: ("" if v is None else printable(v))
                                     for k, v in _flat_row(r).items()})
        elif suffix == ".json":
            from genprint.cli.output import to_json

            tmp.write_text(to_json([r.to_dict() for r in results]) + "\n", encoding="utf-8")
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise RuntimeError(
                    "writing Parquet needs pyarrow: pip install 'genprint[parquet]'"
                ) from None
            rows = [{k: printable(v) for k, v in _flat_row(r).items()} for r in results]
            table = pa.Table.from_pylist(rows, schema=pa.schema([
                ("path", pa.string()), ("label", pa.string()), ("candidate", pa.string()),
                ("score", pa.float64()), ("threshold", pa.float64()), ("is_unknown", pa.bool_()),
                ("scores", pa.string()), ("n_tiles", pa.int64()), ("tile_agreement", pa.float64()),
                ("accepted_by", pa.string()),
                ("error", pa.string()), ("error_code", pa.string()),
            ]))
            pq.write_table(table, tmp)
    return out
