"""Reading many images at once, in order, with a per-file error instead of a crash."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from genprint.io.content import NO_CONTENT_REASON, is_uniform
from genprint.io.images import AnimatedPolicy, ImageError, read_image_with_info

R = TypeVar("R")


class LoadResult(NamedTuple):
    """One file read by :func:`iter_images` (a tuple: ``path, pixels, sha256, notes = r``)."""

    path: Path | str
    """The file read (or, for bytes that came another way, e.g. an upload, their name)."""
    pixels: np.ndarray | ImageError
    """The RGB pixels, or the error that says why the file could not be used."""
    sha256: str | None
    """Hex sha256 of the bytes read (None when none could be read)."""
    notes: tuple[str, ...] = ()
    """What decoding changed or left out (:attr:`genprint.io.images.ImageInfo.notes`)."""

    @property
    def ok(self) -> bool:
        """True when the file was read as an image."""
        return not isinstance(self.pixels, ImageError)


SMALL_FILE_BYTES = 8 * 1024
"""Below this median file size, decoding is faster on one thread than on a pool."""


CHUNK_BYTES = 4 * 1024 * 1024
"""Bytes of files one task of the read-ahead pool reads (at most 16 files): large files go one
per task, so only a few large images are decoded ahead of the consumer."""


def _median_size(paths: Sequence[str | os.PathLike[str]], sample: int = 32) -> float | None:
    sizes = []
    for p in paths[:sample]:
        try:
            sizes.append(os.stat(p).st_size)
        except OSError:
            continue
    return float(np.median(sizes)) if sizes else None


def auto_workers(paths: Sequence[str | os.PathLike[str]], sample: int = 32) -> int:
    """Threads worth using for ``paths``: 1 for small files (thread overhead and the GIL cost
    more than decoding them), else up to 4 bounded by the CPU count."""
    return _workers_for(_median_size(paths, sample))


def _workers_for(median: float | None) -> int:
    if median is None or median < SMALL_FILE_BYTES:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def iter_images(
    paths: Sequence[str | os.PathLike[str]],
    *,
    workers: int | None = None,
    min_size: int | tuple[int, int] = 1,
    animated: AnimatedPolicy = "refuse",
    max_pixels: int | None = None,
    refuse_uniform: bool = False,
) -> Iterator[LoadResult]:
    """Yield a :class:`LoadResult` ``(path, pixels or ImageError, sha256)`` for every path, in
    input order (``sha256`` of the file's bytes, None when they could not be read).

    With ``refuse_uniform``, an image that one colour covers (:func:`genprint.io.content.
    is_uniform`) is an ``ImageError`` with code ``no_content``: it has no trace to learn from
    (readers of training and enrolment images; attribution refuses such an image in its own
    step, after the same check).

    ``workers=None`` picks the thread count with :func:`auto_workers`. Files are read and
    decoded by a small thread pool (Pillow releases the GIL while decoding), in chunks of up
    to 16 files and :data:`CHUNK_BYTES` (one file per chunk when files are large), at most
    ``workers + 1`` chunks ahead of the consumer, so memory stays bounded on large folders and
    large files. When the consumer stops early (an interrupt), queued chunks are cancelled.
    """
    # file sizes, sampled once, set the threads (unless given) and the chunk size
    median = None if workers is not None and workers <= 1 else _median_size(paths)
    if workers is None:
        workers = _workers_for(median)
    kwargs: dict[str, object] = {"min_size": min_size, "animated": animated}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels

    def load(p: str | os.PathLike[str]) -> LoadResult:
        try:
            pixels, info = read_image_with_info(p, **kwargs)  # type: ignore[arg-type]
        except ImageError as exc:
            return LoadResult(Path(p), exc, exc.sha256)
        if refuse_uniform and is_uniform(pixels):
            err = ImageError("no_content", NO_CONTENT_REASON, os.fsdecode(p))
            err.sha256 = info.sha256
            return LoadResult(Path(p), err, info.sha256, info.notes)
        return LoadResult(Path(p), pixels, info.sha256, info.notes)

    if workers <= 1:
        for p in paths:
            yield load(p)
        return
    # Files go to the pool in chunks: one future per tiny file costs more than decoding it.
    chunk = max(1, min(16, int(CHUNK_BYTES // max(median or 0.0, 1.0))))
    window = workers + 1
    groups = (paths[i : i + chunk] for i in range(0, len(paths), chunk))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending: list = []
        for group in groups:
            pending.append(pool.submit(lambda g: [load(p) for p in g], group))
            if len(pending) >= window:
                yield from pending.pop(0).result()
        for fut in pending:
            yield from fut.result()
    finally:  # on an early stop, drop what is queued and wait only for what is running
        pool.shutdown(wait=True, cancel_futures=True)


def load_items(
    paths: Sequence[str | os.PathLike[str]],
    *,
    min_size: int | tuple[int, int] = 1,
    workers: int | None = None,
    refuse_uniform: bool = True,
) -> tuple[list[np.ndarray], list[int], list[tuple[Path, ImageError]]]:
    """Load images for training or enrolment.

    Returns the decoded images, the index in ``paths`` of each, and ``(path, error)`` for every
    file that could not be used — so callers can report them and carry on with the rest.
    Images of one colour are refused (``no_content``) unless ``refuse_uniform`` is False.
    """
    images: list[np.ndarray] = []
    kept: list[int] = []
    errors: list[tuple[Path, ImageError]] = []
    for idx, (path, loaded, *_) in enumerate(iter_images(paths, workers=workers,
                                                         min_size=min_size,
                                                         refuse_uniform=refuse_uniform)):
        if isinstance(loaded, ImageError):
            errors.append((path, loaded))
        else:
            images.append(loaded)
            kept.append(idx)
    return images, kept, errors


def ordered_batches(
    loaded: Iterable[LoadResult],
    *,
    batch_size: int,
    batch_pixels: int,
    error_row: Callable[[LoadResult], R],
    placeholder: Callable[[LoadResult], R],
    run: Callable[[list[np.ndarray], list[R]], list[R]],
) -> Iterator[R]:
    """Rows for read files, in input order, each yielded as soon as it and those before it are
    final: the shared loop of ``attribute`` and ``verify``.

    A file that could not be read gets ``error_row(result)`` at once; the pixels of the others
    wait (with ``placeholder(result)``) for a batch of ``batch_size`` images or
    ``batch_pixels`` pixels, whichever comes first, and ``run(images, placeholders)`` turns
    the batch into its rows. A caller that stops early keeps every row already yielded.
    """
    rows: dict[int, R] = {}
    images: list[np.ndarray] = []
    slots: list[int] = []
    pixels = 0
    next_out = 0

    def flush() -> None:
        nonlocal pixels
        if images:
            for slot, row in zip(slots, run(list(images), [rows[s] for s in slots]),
                                 strict=True):
                rows[slot] = row
            images.clear()
            slots.clear()
            pixels = 0

    def ready() -> Iterator[R]:
        nonlocal next_out
        waiting = set(slots)
        while next_out in rows and next_out not in waiting:
            yield rows.pop(next_out)
            next_out += 1

    for slot, result in enumerate(loaded):
        if result.ok:
            rows[slot] = placeholder(result)
            images.append(result.pixels)  # type: ignore[arg-type]
            slots.append(slot)
            pixels += result.pixels.shape[0] * result.pixels.shape[1]  # type: ignore[union-attr]
            if len(images) >= batch_size or pixels >= batch_pixels:
                flush()
        else:
            rows[slot] = error_row(result)
        yield from ready()
    flush()
    yield from ready()
