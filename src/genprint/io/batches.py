"""Reading many images at once, in order, with a per-file error instead of a crash."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from genprint.io.images import AnimatedPolicy, ImageError, read_image

LoadResult = tuple[Path, np.ndarray | ImageError]


def iter_images(
    paths: Sequence[str | os.PathLike[str]],
    *,
    workers: int = 4,
    min_size: int | tuple[int, int] = 1,
    animated: AnimatedPolicy = "refuse",
    max_pixels: int | None = None,
) -> Iterator[LoadResult]:
    """Yield ``(path, pixels)`` or ``(path, ImageError)`` for every path, in input order.

    Files are read and decoded by a small thread pool (Pillow releases the GIL while decoding),
    at most ``4 × workers`` ahead of the consumer, so memory stays bounded on large folders.
    """
    kwargs: dict[str, object] = {"min_size": min_size, "animated": animated}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels

    def load(p: str | os.PathLike[str]) -> LoadResult:
        try:
            return Path(p), read_image(p, **kwargs)  # type: ignore[arg-type]
        except ImageError as exc:
            return Path(p), exc

    if workers <= 1:
        for p in paths:
            yield load(p)
        return
    window = max(1, 4 * workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for p in paths:
            pending.append(pool.submit(load, p))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def load_items(
    paths: Sequence[str | os.PathLike[str]],
    *,
    min_size: int | tuple[int, int] = 1,
    workers: int = 4,
) -> tuple[list[np.ndarray], list[int], list[tuple[Path, ImageError]]]:
    """Load images for training or evaluation.

    Returns the decoded images, the index in ``paths`` of each, and ``(path, error)`` for every
    file that could not be used — so callers can report them and carry on with the rest.
    """
    images: list[np.ndarray] = []
    kept: list[int] = []
    errors: list[tuple[Path, ImageError]] = []
    for idx, (path, loaded) in enumerate(iter_images(paths, workers=workers, min_size=min_size)):
        if isinstance(loaded, ImageError):
            errors.append((path, loaded))
        else:
            images.append(loaded)
            kept.append(idx)
    return images, kept, errors
