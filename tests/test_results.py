"""Results tables: written row by row, atomically, the same in every format as in one go."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from genprint.cli.output import to_json
from genprint.results import Attribution, ResultsWriter, write_results


def _rows() -> list[Attribution]:
    good = Attribution("a.png", label="x", candidate="x", score=-0.1, threshold=-0.5,
                       is_unknown=False, scores={"x": -0.1, "y": -0.9}, n_tiles=4,
                       tile_agreement=1.0, accepted_by="threshold", seen_in_training=True,
                       sha256="ab" * 32)
    bad = Attribution("b\udcff.png", error="file not found", error_code="not_found")
    return [good, bad, good]


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_streamed_rows_make_the_same_file_and_nothing_before_commit(tmp_path: Path,
                                                                   suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    rows = _rows()
    whole = write_results(rows, tmp_path / f"whole{suffix}")
    target = tmp_path / f"streamed{suffix}"
    writer = ResultsWriter(target)
    writer.GROUP = 2  # several Parquet row groups
    for r in rows:
        writer.add(r)
    assert not target.exists()  # nothing at the final name until complete
    writer.commit()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(target).to_pylist() == pq.read_table(whole).to_pylist()
    else:
        assert target.read_bytes() == whole.read_bytes()
    if suffix == ".json":
        assert target.read_text(encoding="utf-8") == to_json([r.to_dict() for r in rows]) + "\n"
        assert json.loads(target.read_text(encoding="utf-8"))[1]["scores"] == {}
    if suffix == ".csv":
        with open(target, newline="", encoding="utf-8") as fh:
            assert [json.loads(r["scores"]) for r in csv.DictReader(fh)][1] == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_kept_partial_rows_and_abandoned_writers_leave_no_temporary_file(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "r.json")
    writer.add(_rows()[0])
    kept = writer.keep_as(tmp_path / "r.partial.json")
    assert len(json.loads(kept.read_text(encoding="utf-8"))) == 1
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(RuntimeError), ResultsWriter(tmp_path / "s.csv") as w:
        w.add(_rows()[0])
        raise RuntimeError("stopped")
    empty = ResultsWriter(tmp_path / "e.json")
    assert json.loads(empty.commit().read_text(encoding="utf-8")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "r.partial.json"]


def test_a_row_interrupted_before_its_count_still_makes_valid_json(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "r.json")
    writer.add(_rows()[0])
    writer.count = 0  # as if the interrupt fell between the row's bytes and its count
    kept = writer.keep_as(tmp_path / "r.partial.json")
    assert len(json.loads(kept.read_text(encoding="utf-8"))) == 1


def test_a_failed_completion_removes_the_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "r.partial.csv").mkdir()  # where the rows would go is a folder
    writer = ResultsWriter(tmp_path / "r.csv")
    writer.add(_rows()[0])
    with pytest.raises(OSError):
        writer.keep_as(tmp_path / "r.partial.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.partial.csv"]


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_results_read_back_as_written(tmp_path: Path, suffix: str) -> None:
    from genprint.results import read_results

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    rows = [r for r in _rows() if "\udcff" not in r.path]  # names written escaped stay escaped
    assert read_results(write_results(rows, tmp_path / f"r{suffix}")) == rows
    (tmp_path / f"bad{suffix}").write_text("not a table", encoding="utf-8")
    with pytest.raises(ValueError, match="results"):
        read_results(tmp_path / f"bad{suffix}")


def test_results_of_an_older_genprint_without_newer_columns_still_read(tmp_path: Path) -> None:
    from genprint.results import OPTIONAL_COLUMNS, read_results

    written = write_results(_rows()[:1], tmp_path / "r.csv")
    with written.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    old = tmp_path / "old.csv"
    with old.open("w", newline="", encoding="utf-8") as fh:
        kept = [c for c in rows[0] if c not in OPTIONAL_COLUMNS]
        writer = csv.DictWriter(fh, kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    [row] = read_results(old)
    assert row.seen_in_training is None and row.label == "x" and row.scores == {"x": -0.1,
                                                                                 "y": -0.9}


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_text_a_spreadsheet_would_run_is_not_a_formula_in_csv(tmp_path: Path,
                                                              suffix: str) -> None:
    """A file or source named like a formula (``=HYPERLINK(...)``, ``+cmd|...``, ``@SUM``,
    ``-2+3``) is written to CSV with a leading ``'`` and read back exactly; numbers (negative
    scores) and the other formats are unchanged."""
    from genprint.results import read_results

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    names = ['=HYPERLINK("http://x","y").png', "+cmd|calc!A1", "@SUM(1+1)", "-2+3.png",
             "\tt.png", "'quoted.png", "''two.png", "plain.png"]
    rows = [Attribution(n, label="=evil", candidate="=evil", score=-0.25, threshold=-0.5,
                        is_unknown=False, scores={"=evil": -0.25}) for n in names]
    out = write_results(rows, tmp_path / f"r{suffix}")
    assert read_results(out) == rows
    if suffix != ".csv":
        return
    with out.open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["path"] for r in table] == ["'" + n for n in names[:-1]] + ["plain.png"]
    assert {r["label"] for r in table} == {"'=evil"} and {r["score"] for r in table} == {"-0.25"}
    for row in table:
        for key, cell in row.items():
            assert not cell.startswith(("=", "+", "@", "\t")), (key, cell)
