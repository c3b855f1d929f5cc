"""Where images come from: loose files, a folder, a folder per source, or a manifest.

Three labelled layouts are understood by :func:`load_dataset`:

* a **manifest** (``.csv`` or ``.parquet``) with columns ``path,source,split`` (``label`` is
  accepted for ``source``; the optional columns ``kind`` (``real`` / ``generated``) and ``origin``
  (e.g. the camera model of a real image) are kept). Relative paths are relative
  to the manifest's folder. A folder holding ``manifest.csv`` or ``manifest.parquet`` is read as
  that manifest;
* a **folder with one sub-folder per source** (``real/``, ``gan-a/``, ...): every image below a
  sub-folder gets the sub-folder's name as its source;
* a **flat folder** of images: unlabelled.

The label ``unknown`` is reserved for sources that were never seen in training (``-1`` as an
integer label): it may appear in validation or test rows of a manifest, never in training
rows; in a folder layout, a sub-folder called ``unknown`` holds such images (training leaves
them out, ``genprint eval --data`` counts them as unknown).

Files listed in a manifest but missing on disk are not dropped silently: they stay in the
dataset (their load reports ``file not found``) and are listed in :attr:`Dataset.problems`.
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from genprint import UNKNOWN
from genprint.io.images import IMAGE_EXTENSIONS

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "training": "train", "testing": "test"}
MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")


class ManifestError(ValueError):
    """A manifest or data folder that cannot be used as it is, with the reason."""


MAX_SOURCE_NAME = 100
"""Longest source name accepted, in characters."""


def source_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a source, or None when it can.

    A source name is printed in tables, written to CSV / JSON / HTML and typed on command lines,
    so it must be a non-empty string of at most :data:`MAX_SOURCE_NAME` visible characters,
    without leading or trailing spaces and without control or invisible (format) characters.
    Spelling variants of the reserved ``unknown`` (``Unknown``, ``UNKNOWN``) are refused so that
    no known source reads like the open-set answer; ``unknown`` itself passes here, and the
    callers decide where it is allowed. Anything else goes, ``/`` included (names never become
    file names).
    """
    if not isinstance(name, str) or not name:
        return "a source name must be a non-empty text"
    if name != name.strip():
        return f"the source name {name!r} has leading or trailing spaces"
    bad = [c for c in name if unicodedata.category(c).startswith("C")]
    if bad:
        return (f"the source name {name!r} contains a control or invisible character "
                f"(U+{ord(bad[0]):04X})")
    if len(name) > MAX_SOURCE_NAME:
        return (f"the source name {name[:40]!r}... is {len(name)} characters long "
                f"(at most {MAX_SOURCE_NAME})")
    if name.casefold() == UNKNOWN and name != UNKNOWN:
        return (f"the source name {name!r} would read as the reserved label {UNKNOWN!r}; write "
                f"{UNKNOWN!r} exactly for images of unseen sources, or choose another name")
    return None


def check_source_names(names: Iterable[str], *, allow_unknown: bool = False) -> None:
    """Raise ``ValueError`` naming the first unusable source name (see
    :func:`source_name_problem`); ``unknown`` is refused unless ``allow_unknown``."""
    for name in names:
        problem = source_name_problem(name)
        if problem is None and name == UNKNOWN and not allow_unknown:
            problem = (f"the label {UNKNOWN!r} is reserved for sources never seen in training "
                       "and cannot name a known source")
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class Item:
    """One image of a dataset: its path and, when known, its source, split and kind."""

    path: Path
    source: str | None = None
    split: str | None = None
    kind: str | None = None
    origin: str | None = None
    """Finer provenance when known, e.g. the camera model of a real image."""


@dataclass
class Dataset:
    """A list of :class:`Item` with the place it was read from and any problems found."""

    items: list[Item]
    location: str
    """The manifest or folder the dataset was read from."""
    problems: list[str] = field(default_factory=list)
    """What a user should check (files missing, images left out, ...)."""
    notes: list[str] = field(default_factory=list)
    """How the data was read, for information (e.g. the layout recognised)."""

    def __len__(self) -> int:
        return len(self.items)

    def sources(self) -> list[str]:
        """Sorted names of the labelled sources, ``unknown`` excluded."""
        return sorted({i.source for i in self.items if i.source and i.source != UNKNOWN})

    def select(self, split: str | None = None, sources: Iterable[str] | None = None) -> Dataset:
        """A sub-dataset of one split and/or some sources (problems are carried over)."""
        wanted = set(sources) if sources is not None else None
        items = [
            i for i in self.items
            if (split is None or i.split == split) and (wanted is None or i.source in wanted)
        ]
        return Dataset(items, self.location, list(self.problems))

    def missing(self) -> list[Path]:
        """Paths listed but not present on disk."""
        return [i.path for i in self.items if not _is_present(i.path)]


def _is_present(path: Path) -> bool:
    """Whether ``path`` exists; False when the path itself is unusable (a name too long, a
    symbolic link loop, a path through a file), whose load then reports the reason."""
    try:
        return path.exists()
    except OSError:
        return False


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _walk_images(folder: Path) -> tuple[list[Path], list[Path], int]:
    """Image files below ``folder``, the other (not hidden) files, left out, and how many paths
    were left out as another path to a file already found.

    Hidden files and folders (names starting with ``.``) are skipped. Each file is found once,
    under its path without links where it has one: first the folder's own tree (a folder's
    files sorted by name, then each subfolder in turn, sorted), then what only links reach
    (linked folders followed, each real folder once, so no loops; links to files)."""
    found: list[Path] = []
    real: set[str] = set()
    kept: set[Path] = set()
    duplicates, links = 0, False

    def walk(follow: bool) -> None:
        nonlocal duplicates, links
        visited: set[str] = set()
        for root, dirs, files in os.walk(folder, followlinks=follow):
            here = os.path.realpath(root)
            if here in visited:  # a link back to a folder already walked
                dirs[:] = []
                continue
            visited.add(here)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if not follow and not links:  # does the second walk have anything to follow?
                links = any(os.path.islink(os.path.join(root, d)) for d in dirs)
            for name in sorted(files):
                path = Path(root) / name
                if name.startswith("."):
                    continue
                if not follow and os.path.islink(path):
                    links = True
                    continue
                key = os.path.realpath(path)
                if key in real:  # found already: by the first walk here, or another path
                    duplicates += path not in kept
                    continue
                real.add(key)
                kept.add(path)
                found.append(path)

    walk(follow=False)
    if links:
        walk(follow=True)
    return ([p for p in found if is_image_file(p)], [p for p in found if not is_image_file(p)],
            duplicates)


class Scan(NamedTuple):
    """What :func:`scan_inputs_report` found."""

    paths: list[Path]
    """Image paths, in input order, each file once."""
    repeated: int
    """Paths left out because an earlier input already named the same file (overlapping
    folders, a file also inside a given folder, links)."""
    not_images: int
    """Files inside the given folders left out for their extension (not hidden ones)."""
    not_image_examples: tuple[Path, ...] = ()
    """The first few of those files (at most 3), to name them."""


def scan_inputs_report(inputs: Sequence[str | os.PathLike[str]], *, unique: bool = True) -> Scan:
    """:func:`scan_inputs` for the command line: with ``unique``, a file reached twice
    (overlapping folders, a file also inside a given folder, links) is kept once, where it
    first appears; and the counts of what was left out, for a note to the user."""
    paths: list[Path] = []
    seen: set[str] = set()
    left_out: set[str] = set()
    repeated = 0
    for raw in inputs:
        p = Path(raw)
        if _is_folder(p):
            found, others, linked_again = _walk_images(p)
            left_out.update(os.path.realpath(o) for o in others)
            repeated += linked_again if unique else 0
        else:
            found = [p]
        for f in found:
            key = os.path.realpath(f)
            if unique and key in seen:
                repeated += 1
                continue
            seen.add(key)
            paths.append(f)
    others = sorted(left_out - seen)
    return Scan(paths, repeated, len(others), tuple(Path(p) for p in others[:3]))


def scan_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand command-line inputs into image paths, in a stable order.

    A folder contributes every file with an image extension below it (recursively, in the order
    of :func:`_walk_images`: hidden files and folders skipped, linked folders followed once,
    each file once under its path without links where it has one); a path given explicitly is
    always kept, even with another extension or when it does not exist, so that
    its problem is reported for that file rather than skipped. Every path found is kept, so a
    caller gets one entry per input file, repeats included (the command line reads each file
    once: :func:`scan_inputs_report`).
    """
    return scan_inputs_report(inputs, unique=False).paths


def _normalise_split(value: str | None, where: str) -> str | None:
    if value is None or value == "":
        return None
    split = _split_name(value)
    if split is None:
        raise ManifestError(f"{where}: split {value!r} is not one of {', '.join(SPLITS)}")
    return split


def _read_rows(path: Path) -> list[dict[str, str | None]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None:
                    raise ManifestError(f"{path}: the manifest is empty (no header row)")
                return [dict(row) for row in reader]
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest "
                                "as UTF-8") from None
        except csv.Error as exc:
            raise ManifestError(f"{path}: not a readable CSV file ({exc})") from None
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - depends on the environment
            raise ManifestError(
                "reading a Parquet manifest needs pyarrow: pip install 'genprint[parquet]'"
            ) from None
        import pyarrow as pa

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError, ValueError) as exc:  # a damaged or foreign file
            raise ManifestError(f"{path}: not a readable Parquet file ({exc})") from None
        return [
            {k: (None if v is None else str(v)) for k, v in row.items()}
            for row in table.to_pylist()
        ]
    raise ManifestError(f"{path}: a manifest must be a .csv or .parquet file")


def read_manifest(path: str | os.PathLike[str]) -> Dataset:
    """Read a ``path,source,split`` manifest (CSV or Parquet) into a :class:`Dataset`."""
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest not found")
    # column names without stray spaces or case ("path, Source" is "path,source")
    rows = [{(k or "").strip().lower(): v for k, v in row.items()}
            for row in _read_rows(manifest)]
    if not rows:
        raise ManifestError(f"{manifest}: the manifest has no rows")
    columns = set(rows[0])
    if "path" not in columns:
        raise ManifestError(f"{manifest}: missing the required column 'path' (has: {sorted(columns)})")
    label_col = "source" if "source" in columns else ("label" if "label" in columns else None)
    base = manifest.parent
    items: list[Item] = []
    seen: dict[Path, tuple[str | None, str | None, int]] = {}  # path -> (source, split, line)
    duplicates = blank = differ = 0
    backslashed: list[str] = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{manifest}:{n}"
        if not any((v or "").strip() for v in row.values() if isinstance(v, str | None)):
            blank += 1  # an empty line, or a spreadsheet's row of commas
            continue
        raw_path = (row.get("path") or "").strip()
        if not raw_path:
            raise ManifestError(f"{where}: empty path")
        p = Path(raw_path)
        p = p if p.is_absolute() else base / p
        if "\\" in raw_path and not _is_present(p):  # a path written on Windows
            alt = Path(raw_path.replace("\\", "/"))
            alt = alt if alt.is_absolute() else base / alt
            if _is_present(alt):
                backslashed.append(raw_path)
                p = alt
        source = (row.get(label_col) or "").strip() or None if label_col else None
        if source is not None:
            source = unicodedata.normalize("NFC", source)
        if label_col == "source" and "label" in columns and unicodedata.normalize(
                "NFC", (row.get("label") or "").strip()) != (source or ""):
            differ += 1
        split = _normalise_split(row.get("split"), where)
        if source is not None and (problem := source_name_problem(source)):
            raise ManifestError(f"{where}: {problem}")
        if source == UNKNOWN and split == "train":
            raise ManifestError(
                f"{where}: the label 'unknown' is reserved for sources never seen in training "
                "and cannot appear in the train split"
            )
        key = Path(os.path.realpath(p))  # one file however it is spelled (.., links)
        if key in seen:
            first_source, first_split, line = seen[key]
            if first_source != source:
                raise ManifestError(f"{where}: {raw_path} is listed twice with different "
                                    f"sources (line {line}: {first_source!r})")
            if first_split != split:
                raise ManifestError(
                    f"{where}: {raw_path} is listed in two splits ({first_split} on line "
                    f"{line}, {split} here): an image in both training and evaluation would "
                    "make the figures optimistic")
            duplicates += 1  # the same row again: counted once
            continue
        seen[key] = (source, split, n)
        kind = (row.get("kind") or "").strip() or None
        origin = (row.get("origin") or "").strip() or None
        items.append(Item(p, source, split, kind, origin))
    dataset = Dataset(items, str(manifest))
    if blank:
        dataset.problems.append(f"{blank} empty row(s) skipped")
    if differ:
        dataset.problems.append(f"the manifest has both a 'source' and a 'label' column, and they "
                                f"differ on {differ} row(s): 'source' is used")
    if backslashed:
        dataset.problems.append(f"{len(backslashed)} path(s) written with '\\' (e.g. "
                                f"{backslashed[0]}) were read with '/' as the folder separator")
    if duplicates:
        dataset.problems.append(f"{duplicates} row(s) repeat an earlier row of the same file; "
                                "each file is used once")
    missing = dataset.missing()
    if missing:
        shown = ", ".join(str(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        dataset.problems.append(f"{len(missing)} file(s) listed in the manifest are missing "
                                f"(or links to nothing, or link loops): {shown}{more}")
    return dataset


def read_folder(path: str | os.PathLike[str]) -> Dataset:
    """Read a folder: one sub-folder per source, a sub-folder per split each holding one
    sub-folder per source (``train/real/...``, ``val/real/...``), or a flat folder of
    unlabelled images."""
    folder = Path(path)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: not a folder")
    subdirs, loose, broken = _folder_entries(folder)
    split_named = [d for d in subdirs if _split_name(d.name)]
    if split_named:
        others = [d.name for d in subdirs if not _split_name(d.name)]
        if others:
            raise ManifestError(
                f"{folder}: sub-folders {', '.join(d.name for d in split_named)} name splits, "
                f"but {', '.join(others[:5])} do{'es' if len(others) == 1 else ''} not: use "
                "either one sub-folder per source, or one per split (train, val, test) each "
                "holding one sub-folder per source")
        dataset = Dataset([], str(folder))
        for d in split_named:
            part = _read_sources(d, _split_name(d.name), dataset.problems)
            if part is None and _folder_entries(d)[1]:
                raise ManifestError(
                    f"{d}: a split folder must hold one sub-folder per source (it has images "
                    "but no sub-folders)")
            if part is None:
                dataset.problems.append(f"split folder {d.name} is empty")
            dataset.items.extend(part or [])
        dataset.notes.append(f"read as one sub-folder per split "
                             f"({', '.join(sorted(d.name for d in split_named))}), each with "
                             "one sub-folder per source")
        if loose:
            dataset.problems.append(f"{len(loose)} image(s) directly in {folder}, beside the "
                                    "split folders, have no split and no source and are left "
                                    "out")
    else:
        dataset = Dataset([], str(folder))
        dataset.items = _read_sources(folder, None, dataset.problems) or [Item(p) for p in loose]
    if broken:
        dataset.problems.append(f"link(s) to nothing in {folder}, left out: "
                                f"{', '.join(broken[:5])}")
    _one_item_per_file(dataset)
    if not dataset.items:
        raise ManifestError(f"{folder}: no images found")
    return dataset


def _one_item_per_file(dataset: Dataset) -> None:
    """Keep each file of a folder layout once, however it was reached (links to files or to
    folders, e.g. a link inside a source folder back to the top): a file reached again under
    the same source and split is dropped with a note; under another source or split it is a
    :class:`ManifestError`, as for a manifest listing one file twice, since it would be counted
    under a label that is not its own."""
    first: dict[str, Item] = {}
    kept: list[Item] = []
    repeats = 0
    for item in dataset.items:
        key = os.path.realpath(item.path)
        seen = first.get(key)
        if seen is None:
            first[key] = item
            kept.append(item)
            continue
        if (seen.source, seen.split) != (item.source, item.split):
            def where(i: Item) -> str:
                return f"{i.source or '(unlabelled)'}" + (f", split {i.split}" if i.split else "")

            raise ManifestError(
                f"{item.path} is the same file as {seen.path} ({where(seen)}) but is reached "
                f"under {where(item)}, through a link: one file cannot have two labels; remove "
                "the link (folders are followed through links)")
        repeats += 1
    if repeats:
        dataset.problems.append(f"{repeats} file(s) were reached twice under the same source "
                                "(through links) and are used once")
    dataset.items = kept


def _folder_entries(folder: Path) -> tuple[list[Path], list[Path], list[str]]:
    """(sub-folders, image files, names of links to nothing) directly in ``folder``; hidden
    entries skipped."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    subdirs = [d for d in entries if _is_folder(d)]
    loose = [p for p in entries if p.is_file() and is_image_file(p)]
    broken = [p.name for p in entries if p.is_symlink() and not p.exists()]
    return subdirs, loose, broken


def _split_name(name: str) -> str | None:
    """The split a name stands for (``train``, ``Validation``, ...), else None."""
    v = name.strip().lower()
    v = _SPLIT_ALIASES.get(v, v)
    return v if v in SPLITS else None


def _read_sources(folder: Path, split: str | None, problems: list[str]) -> list[Item] | None:
    """Items of ``folder``'s source sub-folders (names NFC-normalised), or None when it has no
    sub-folder. Notes empty sources and images without a source sub-folder in ``problems``."""
    subdirs, loose, _ = _folder_entries(folder)
    if not subdirs:
        return None
    for d in subdirs:
        if problem := source_name_problem(d.name):
            raise ManifestError(f"{d}: a sub-folder names a source, and {problem}")
    items: list[Item] = []
    empty = []
    repeats = 0
    for d in subdirs:  # a folder called `unknown` holds images of unseen sources
        found, _, again = _walk_images(d)
        repeats += again
        source = unicodedata.normalize("NFC", d.name)
        items.extend(Item(p, source, split) for p in found)
        if not found:
            empty.append(d.name)
    where = f" of {folder.name}" if split else ""
    if repeats:
        problems.append(f"{repeats} file(s) were reached twice under the same source (through "
                        "links) and are used once")
    if empty:
        problems.append(f"source sub-folder(s){where} without image files, left out: "
                        f"{', '.join(empty)}")
    if loose:
        problems.append(f"{len(loose)} image(s) directly in {folder} have no source sub-folder "
                        + ("(unlabelled)" if split is None else "and are left out"))
        if split is None:
            items.extend(Item(p) for p in loose)
    return items


def check_built_bench(bench_dir: str | os.PathLike[str]) -> list[str]:
    """Check a benchmark built by ``genprint bench build`` against what its ``bench.json``
    recorded: ``manifest.csv`` and ``protocols.json`` unchanged (sha256), and returns the
    held-out cameras, whose real images must be test images only. ``ManifestError`` otherwise.
    A folder without ``bench.json`` (a benchmark laid out by hand), or one built before these
    were recorded, has nothing to check: ``[]``. The images themselves are not hashed here."""
    import hashlib

    folder = Path(bench_dir)
    info_path = folder / "bench.json"
    if not info_path.is_file():
        return []
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{info_path}: not a readable bench.json ({exc})") from None
    if not isinstance(info, dict):
        raise ManifestError(f"{info_path}: not a bench.json (JSON {type(info).__name__})")
    for file, key in (("manifest.csv", "manifest_sha256"), ("protocols.json", "protocols_sha256")):
        want = info.get(key)
        if not want:
            continue
        try:
            got = hashlib.sha256((folder / file).read_bytes()).hexdigest()
        except OSError as exc:
            raise ManifestError(f"{folder / file}: cannot be read ({exc})") from None
        if got != want:
            raise ManifestError(f"{folder / file} has changed since the benchmark was built "
                                f"(its sha256 is not the one bench.json recorded): rebuild it "
                                "with `genprint bench build`, or, for a benchmark of your own, "
                                "delete bench.json")
    held = info.get("held_out_cameras") or []
    return [str(c) for c in held] if isinstance(held, list) else []


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a manifest file, a folder holding a manifest, or a folder layout (see module doc).
    A benchmark built by genprint (its folder holds ``bench.json``) is checked first
    (:func:`check_built_bench`)."""
    p = Path(path)
    if p.is_file():
        if p.name == "manifest.csv":
            check_built_bench(p.parent)
        return read_manifest(p)
    if p.is_dir():
        check_built_bench(p)
        for name in MANIFEST_NAMES:
            if (p / name).is_file():
                return read_manifest(p / name)
        return read_folder(p)
    raise ManifestError(f"{p}: no such file or folder")


def with_split(dataset: Dataset, fractions: tuple[float, float, float], seed: int = 0) -> Dataset:
    """Give unsplit items a seeded train/val/test split per source, in the given proportions."""
    import numpy as np

    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be ≥ 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    by_source: dict[str | None, list[int]] = {}
    for idx, item in enumerate(dataset.items):
        if item.split is None:
            by_source.setdefault(item.source, []).append(idx)
    items = list(dataset.items)
    for indices in by_source.values():
        order = rng.permutation(len(indices))
        n_train = round(fractions[0] * len(indices))
        n_val = round(fractions[1] * len(indices))
        for rank, k in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            items[indices[k]] = replace(items[indices[k]], split=split)
    return Dataset(items, dataset.location, list(dataset.problems), list(dataset.notes))


def source_counts(dataset: Dataset) -> dict[str, int]:
    """Number of items per source (``None`` shown as ``"(unlabelled)"``)."""
    return dict(Counter(i.source or "(unlabelled)" for i in dataset.items))
