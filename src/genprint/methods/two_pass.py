"""Fitting a feature-based attributor (``probe``) in two passes over the files, so that the
decoded images are never all in memory.

A ``probe`` needs two things of each image, at two moments: its shape, to choose which images
to use and the backbone's input size (:meth:`ProbeAttributor.plan_fit
<genprint.methods.probe.ProbeAttributor.plan_fit>`), and then the backbone's features of the
chosen ones (:meth:`~genprint.methods.probe.ProbeAttributor.fit_features`). So the files are
read twice:

1. the **reading pass** gives, per file, its decoded shape and pixel fingerprint
   (:mod:`genprint.io.fingerprint`) or why it cannot be used;
2. the **feature pass** reads the chosen files again and gives every layer's features and the
   fingerprints again; a file whose pixels changed in between stops the fit
   (:class:`FilesChangedError`) rather than train on something else.

What holds in memory is the shapes, fingerprints and features, and decoded pixels up to a
budget (:data:`KEEP_DECODED_BYTES`, kept from the first pass so that small data is decoded
once) plus a chunk of images. The passes are functions, so the same fit runs here
(:func:`local_passes`: what ``genprint train probe`` does) or on Ray Data
(:mod:`genprint.scale.ray_features`: ``genprint train probe --ray``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from genprint.io.fingerprint import DIGEST_BYTES, as_rows
from genprint.io.images import ImageError
from genprint.io.sources import Item
from genprint.methods.fitting import ReadSplit, record_fit, refuse_lost_sources

if TYPE_CHECKING:  # pragma: no cover
    from genprint.methods.probe import ProbeAttributor

Progress = Callable[[int], None]

FEATURE_CHUNK_BATCHES = 4
"""The local feature pass decodes this many backbone batches of images at a time ..."""
FEATURE_CHUNK_BYTES = 256 * 2**20
"""... or fewer, once their decoded pixels reach this many bytes (large photographs)."""


class FileRead(NamedTuple):
    """What the reading pass learnt of one file: its shape and fingerprint, or its error."""

    shape: tuple[int, ...] | None
    fingerprint: bytes | None
    error: ImageError | None


ReadPass = Callable[[Sequence[Path]], list[FileRead]]
"""Reads files (in order) and says, for each, its shape and fingerprint or its error."""

FeaturePass = Callable[[Sequence[Path], Sequence[bytes], int],
                       tuple[list[np.ndarray], list[bytes | None]]]
"""Features of every layer of files (one (N, D) float32 array per layer, rows in input order)
and each file's fingerprint as read this time (None: it could not be read). It is given each
file's fingerprint from the reading pass, to stop at a changed file before analysing it, and
the number of leading training files (the local pass batches the two splits apart, as
:meth:`ProbeAttributor.fit <genprint.methods.probe.ProbeAttributor.fit>` does, so that its
features are those of a fit on decoded images to the bit)."""


class FilesChangedError(ValueError):
    """A file read in the reading pass has other pixels (or none) in the feature pass."""


def changed_file(path: str | Path, got: bytes | None, reason: str | None = None
                 ) -> FilesChangedError:
    """The error for a file whose fingerprint in the feature pass is ``got`` (None: it could
    not be read, for ``reason``) instead of its fingerprint from the reading pass."""
    what = (f"was read in the first pass over the data but not in the second ({reason})"
            if got is None else "has other pixels in the second pass over the data than in "
            "the first")
    return FilesChangedError(f"{path} {what}: did the files change during the fit? Nothing "
                             "was fitted")


def split_reads(items: Sequence[Item], reads: Sequence[FileRead]) -> ReadSplit:
    """The reading pass's results for ``items`` as a :class:`ReadSplit`."""
    kept = [k for k, r in enumerate(reads) if r.error is None]
    keys = [reads[k].fingerprint for k in kept]
    return ReadSplit(
        kept, [reads[k].shape for k in kept],  # type: ignore[misc]
        as_rows(keys) if keys else np.zeros((0, DIGEST_BYTES), np.uint8),  # type: ignore[arg-type]
        [(items[k].path, r.error) for k, r in enumerate(reads) if r.error is not None])


def fit_in_two_passes(model: ProbeAttributor, train: Sequence[Item], val: Sequence[Item],
                      read: ReadPass, featurise: FeaturePass) -> list[tuple[Path, ImageError]]:
    """Fit ``model`` on the files of ``train`` and ``val`` with the two passes given; the
    files that could not be used, with their reasons (as
    :func:`~genprint.methods.fitting.fit_on_items` returns them)."""
    min_size = model.min_size
    reads = read([i.path for i in [*train, *val]])
    tr, va = split_reads(train, reads[:len(train)]), split_reads(val, reads[len(train):])
    refuse_lost_sources(train, tr, val, va)
    tr_ix, va_ix = model.plan_fit(tr.shapes, [train[k].source for k in tr.kept], va.shapes,
                                  [val[k].source for k in va.kept])
    chosen = [train[tr.kept[i]] for i in tr_ix] + [val[va.kept[i]] for i in va_ix]
    expected = [bytes(r) for r in tr.fingerprints[tr_ix]] + \
        [bytes(r) for r in va.fingerprints[va_ix]]
    layers, again = featurise([i.path for i in chosen], expected, len(tr_ix))
    for j, fp in enumerate(again):
        if fp != expected[j]:
            raise changed_file(chosen[j].path, fp)
    n_tr = len(tr_ix)
    model.fit_features([x[:n_tr] for x in layers], [i.source for i in chosen[:n_tr]],
                       [x[n_tr:] for x in layers], [i.source for i in chosen[n_tr:]])
    record_fit(model, train, tr, val, va, min_size)
    return tr.errors + va.errors


KEEP_DECODED_BYTES = 1 << 30
"""Decoded pixels the local reading pass keeps for the feature pass (1 GiB): data up to that
size is decoded once, as fast as a fit on decoded images; beyond it, the rest is decoded again
in the feature pass and memory stays bounded."""


def local_passes(model: ProbeAttributor, min_size: int, on_read: Progress | None = None,
                 on_progress: Progress | None = None,
                 keep_bytes: int = KEEP_DECODED_BYTES) -> tuple[ReadPass, FeaturePass]:
    """The two passes in this process (the local reader, a few threads).

    The reading pass keeps the first ``keep_bytes`` of decoded pixels for the feature pass,
    which decodes only the other files again (a kept image is analysed as it was read and
    fingerprinted, so it cannot have changed in between); the feature pass extracts features
    :data:`FEATURE_CHUNK_BATCHES` batches of images at a time with ``model`` (its planned
    backbone and feature cache)."""
    from genprint.io.batches import iter_images
    from genprint.io.fingerprint import fingerprint

    kept: dict[str, tuple[np.ndarray, bytes]] = {}

    def read(paths: Sequence[Path]) -> list[FileRead]:
        out = []
        room = keep_bytes
        for path, loaded in zip(paths, iter_images(list(paths), min_size=min_size,
                                                   refuse_uniform=True), strict=True):
            if loaded.ok:
                pixels: np.ndarray = loaded.pixels  # type: ignore[assignment]
                key = fingerprint(pixels)
                out.append(FileRead(pixels.shape, key, None))
                if str(path) not in kept and pixels.nbytes <= room:  # (a repeat counts once)
                    kept[str(path)] = (pixels, key)
                    room -= pixels.nbytes
            else:
                out.append(FileRead(None, None, loaded.pixels))  # type: ignore[arg-type]
            if on_read:
                on_read(1)
        return out

    def featurise(paths: Sequence[Path], expected: Sequence[bytes], n_train: int
                  ) -> tuple[list[np.ndarray], list[bytes | None]]:
        chunk_size = max(1, model.batch_size) * FEATURE_CHUNK_BATCHES
        parts: list[list[np.ndarray]] = []
        fps: list[bytes | None] = []
        chunk: list[np.ndarray] = []
        chunk_bytes = 0
        chosen = {str(p) for p in paths}
        for left_out in [k for k in kept if k not in chosen]:  # (the cap, sizes): freed now
            del kept[left_out]
        again = iter_images([p for p in paths if str(p) not in kept], min_size=min_size)
        try:
            for j, (path, want) in enumerate(zip(paths, expected, strict=True)):
                if j == n_train and chunk:  # training and validation images batched apart
                    parts.append(model.extract(chunk, on_progress))
                    chunk, chunk_bytes = [], 0
                if str(path) in kept:  # (not popped: a path listed twice is served twice)
                    pixels, key = kept[str(path)]
                else:
                    loaded = next(again)
                    pixels = loaded.pixels  # type: ignore[assignment]
                    if not loaded.ok:
                        raise changed_file(path, None, pixels.reason)  # type: ignore[attr-defined]
                    key = fingerprint(pixels)
                if key != want:  # before any analysis: a changed file stops the fit now
                    raise changed_file(path, key)
                fps.append(key)
                chunk.append(pixels)
                chunk_bytes += pixels.nbytes
                if len(chunk) >= chunk_size or chunk_bytes >= FEATURE_CHUNK_BYTES:
                    parts.append(model.extract(chunk, on_progress))
                    chunk, chunk_bytes = [], 0
            if chunk or not parts:
                parts.append(model.extract(chunk, on_progress))
        finally:  # the reader's threads stopped and the kept pixels freed, whatever happened
            again.close()
            kept.clear()
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))], fps

    return read, featurise
