"""Fitting a ``probe`` with its two passes over the files on Ray Data (``train probe --ray``).

The frozen backbone's forward pass over every training and validation image is what costs in a
``probe`` fit; the heads are fitted on the features in seconds. A ``probe`` fit reads the files
in two passes (:mod:`genprint.methods.two_pass`); here both passes run in pools of Ray actors
and the rest of the fit — choosing the images and the input size, fitting the heads, the
thresholds and the training record — runs in the driver with the local fit's own code
(:func:`genprint.methods.two_pass.fit_in_two_passes`). So the model is the one
``genprint train probe`` makes from the same files.

1. **Reading pass.** Actors read every file with the local reader and send back, per file,
   its decoded shape and pixel fingerprint, or why it cannot be used. Pixels never travel to
   the driver. An error that may come from the node rather than the file (not found, no
   permission, a decoder missing there, ...) is checked again on the driver: if the driver
   reads the file otherwise, the fit stops, naming the node, instead of quietly leaving the
   file out.
2. **Feature pass.** Each actor builds the backbone the driver planned, checks it has the
   driver's weights and input size, reads the chosen files again, checks each against its
   fingerprint from the first pass (a file that changed stops the fit) and sends back the
   features of every layer. The driver writes them into one array per layer.

Every actor also checks that it runs the driver's versions of genprint, Pillow, numpy and
torch. A worker that fails, or dies, stops the fit with a :class:`ScaleError` saying so (a
dead worker is not restarted: a file that kills its worker would otherwise be retried without
end). Files are opened **by the workers**: on a cluster, give paths every node sees the same
way. Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genprint.scale.ray_session import (
    FILE_COLUMN,
    INDEX_COLUMN,
    ScaleError,
    WorkerActor,
    batch_files,
    check_pool,
    connect,
    from_ray_error,
    pool_dataset,
    portable_plugin,
    quiet_ray_data,
    require_ray,
    runtime_versions,
    version_problem,
    worker_label,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from genprint.io.batches import LoadResult
    from genprint.io.images import ImageError
    from genprint.io.sources import Item
    from genprint.methods.probe import ProbeAttributor
    from genprint.methods.two_pass import FileRead

EXPECTED_COLUMN = "expected"
"""Feature-pass input: each file's fingerprint from the reading pass."""

NODE_ERRORS = frozenset({"not_found", "unreadable", "unsupported_format", "too_many_pixels"})
"""Reading-pass error codes that may come from the node (its mounts, permissions, decoders,
pixel limit) rather than from the file: re-checked on the driver."""


@dataclass(frozen=True)
class _ReadSettings:
    """How the actors read files (the driver's reader settings)."""

    min_size: int
    max_pixels: int
    cpus: int
    """CPUs of an actor: the threads reading its files, and torch's threads."""
    plugins: tuple[str, ...]
    versions: dict[str, str]
    """The driver's runtime versions; an actor that runs others refuses to work."""


@dataclass(frozen=True)
class _FeatureSettings:
    """What a feature actor needs to rebuild the driver's planned backbone."""

    backbone: str
    backbone_options: dict[str, Any]
    input_size: int
    pad: str
    weights_id: str
    """The driver's backbone weights; an actor that builds other weights refuses to work."""
    batch_size: int
    cache: bool
    cache_dir: str | None
    read: _ReadSettings


def _iter_read(files: list[str], settings: _ReadSettings) -> Iterator[LoadResult]:
    """The local reader's results for ``files``, in order, one decoded image at a time."""
    from genprint.io.batches import auto_workers, iter_images

    readers = 1 if settings.cpus <= 1 else min(settings.cpus, auto_workers(files))
    return iter_images(files, workers=readers, min_size=settings.min_size,
                       max_pixels=settings.max_pixels, refuse_uniform=True)


def _start(settings: _ReadSettings) -> Exception | None:
    """An actor's common start: versions checked, torch's threads set, plugins imported;
    the problem that stops it, if any."""
    problem = version_problem(settings.versions)
    if problem is not None:
        return problem
    import torch

    from genprint.plugins import load_plugins

    torch.set_num_threads(max(1, settings.cpus))
    try:
        load_plugins(settings.plugins)
    except Exception as exc:  # noqa: BLE001 - said as ours, with the node
        return ScaleError(f"{worker_label()} cannot import the plugins: {exc}")
    return None


class _ReadActor(WorkerActor):
    """Reads files and sends back shapes and fingerprints (no pixels), or each file's error."""

    doing = "reading a batch of files"

    def __init__(self, settings: _ReadSettings) -> None:
        self.settings = settings
        self.problem = _start(settings)

    def _rows(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        from genprint.io.fingerprint import fingerprint

        host = worker_label()
        rows = []
        for index, loaded in zip(batch.column(INDEX_COLUMN).to_pylist(),
                                 _iter_read(batch_files(batch), self.settings), strict=True):
            row: dict[str, Any] = {INDEX_COLUMN: index, "shape": None, "fingerprint": None,
                                   "error_code": None, "error_reason": None,
                                   "sha256": loaded.sha256, "worker": host}
            if loaded.ok:
                pixels: np.ndarray = loaded.pixels  # type: ignore[assignment]
                row.update(shape=list(pixels.shape), fingerprint=fingerprint(pixels))
            else:
                row.update(error_code=loaded.pixels.code,  # type: ignore[union-attr]
                           error_reason=loaded.pixels.reason)  # type: ignore[union-attr]
            rows.append(row)  # (the pixels are dropped here, image by image)
        return pa.Table.from_pylist(rows, schema=_read_schema())


def _read_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(INDEX_COLUMN, pa.int64()), ("shape", pa.list_(pa.int64())),
                      ("fingerprint", pa.binary()), ("error_code", pa.string()),
                      ("error_reason", pa.string()), ("sha256", pa.string()),
                      ("worker", pa.string())])


class _FeatureActor(WorkerActor):
    """Holds the backbone; sends back every layer's features of the files it is given."""

    doing = "extracting features"

    def __init__(self, settings: _FeatureSettings) -> None:
        self.settings = settings
        self.problem = _start(settings.read)
        if self.problem is not None:
            return
        from genprint.backbones.resolve import weights_id
        from genprint.methods.probe import ProbeAttributor

        try:
            self.model = ProbeAttributor(
                backbone=settings.backbone, backbone_options=settings.backbone_options,
                input_size=settings.input_size, pad=settings.pad,
                batch_size=settings.batch_size, cache=settings.cache,
                cache_dir=settings.cache_dir)
            backbone = self.model.build_backbone()
            got = weights_id(backbone)
        except Exception as exc:  # noqa: BLE001 - said as ours, with the node
            self.problem = ScaleError(f"{worker_label()} cannot build the backbone "
                                      f"{settings.backbone!r}: {type(exc).__name__}: {exc}")
            return
        size = backbone.preprocessing.input_size
        if got != settings.weights_id or size != settings.input_size:
            self.problem = ScaleError(
                f"{worker_label()} built the backbone {settings.backbone!r} with other weights "
                f"or input size ({got[:12]}…, {size} px) than the driver "
                f"({settings.weights_id[:12]}…, {settings.input_size} px): every node must see "
                "the same backbone files")

    def _rows(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        from genprint.io.fingerprint import fingerprint
        from genprint.methods.two_pass import changed_file

        files = batch_files(batch)
        expected = batch.column(EXPECTED_COLUMN).to_pylist()
        images = []
        for name, want, loaded in zip(files, expected,
                                      _iter_read(files, self.settings.read), strict=True):
            got = fingerprint(loaded.pixels) if loaded.ok else None  # type: ignore[arg-type]
            if got != want:  # checked before any analysis: a changed file stops the fit now
                reason = None if loaded.ok else loaded.pixels.reason  # type: ignore[union-attr]
                raise ScaleError(f"{changed_file(name, got, reason)} ({worker_label()})")
            images.append(loaded.pixels)
        feats = self.model.extract(images)
        columns: dict[str, Any] = {INDEX_COLUMN: batch.column(INDEX_COLUMN)}
        for k, layer in enumerate(feats):
            layer = np.ascontiguousarray(layer, dtype=np.float32)
            columns[_layer_column(k)] = pa.FixedSizeListArray.from_arrays(
                pa.array(layer.reshape(-1)), layer.shape[1])
        return pa.table(columns)


def _layer_column(k: int) -> str:
    return f"layer_{k:03d}"


def _batches(dataset: Any, quiet: bool) -> Iterator[pa.Table]:
    if quiet and getattr(dataset, "context", None) is not None:
        dataset.context.enable_progress_bars = False
    return dataset.iter_batches(batch_size=None, batch_format="pyarrow")


def _count(seen: set[int], indices: Sequence[int], n: int) -> None:
    """Add a batch's row indices to ``seen``; :class:`ScaleError` on a repeat or an index out
    of range (Ray returned something else than one row per file)."""
    for i in indices:
        if not 0 <= i < n or i in seen:
            raise ScaleError(f"Ray returned a row for file {i} twice or out of range")
        seen.add(i)


def _read_rows(batches: Iterator[pa.Table], n: int,
               on_read: Callable[[int], None] | None) -> list[dict[str, Any]]:
    """The reading pass's rows by file index (each file once, whatever the arrival order)."""
    rows: list[dict[str, Any] | None] = [None] * n
    seen: set[int] = set()
    for batch in batches:
        got = batch.to_pylist()
        _count(seen, [r[INDEX_COLUMN] for r in got], n)
        for row in got:
            rows[row[INDEX_COLUMN]] = row
        if on_read:
            on_read(len(got))
    if len(seen) != n:
        raise ScaleError(f"Ray returned rows for {len(seen)} of {n} files")
    return rows  # type: ignore[return-value]


def _feature_arrays(batches: Iterator[pa.Table], n: int,
                    on_progress: Callable[[int], None] | None) -> list[np.ndarray]:
    """Every layer's features, one (n, D) float32 array per layer filled by file index as the
    batches arrive (the driver holds the features once)."""
    layers: list[np.ndarray] = []
    seen: set[int] = set()
    for batch in batches:
        index = batch.column(INDEX_COLUMN).to_numpy()
        _count(seen, index.tolist(), n)
        names = [c for c in batch.column_names if c != INDEX_COLUMN]
        for k, name in enumerate(sorted(names)):
            column = batch.column(name).combine_chunks()
            values = column.flatten().to_numpy(zero_copy_only=False)
            block = values.reshape(len(index), column.type.list_size)
            if len(layers) <= k:
                layers.append(np.empty((n, block.shape[1]), np.float32))
            layers[k][index] = block
        if on_progress:
            on_progress(len(index))
    if len(seen) != n:
        raise ScaleError(f"Ray returned features for {len(seen)} of {n} files")
    return layers


def _file_reads(rows: Sequence[dict[str, Any]], paths: Sequence[Path],
                read: _ReadSettings) -> list[FileRead]:
    """The reading pass's rows as :class:`~genprint.methods.two_pass.FileRead`, in order.
    An error that may come from the node is read again here: :class:`ScaleError` when this
    machine reads the file otherwise (the node's files or decoders differ)."""
    from genprint.io.batches import iter_images
    from genprint.io.images import ImageError
    from genprint.methods.two_pass import FileRead

    recheck = [k for k, r in enumerate(rows) if r["error_code"] in NODE_ERRORS]
    here = dict(zip(recheck, iter_images([paths[k] for k in recheck], min_size=read.min_size,
                                         max_pixels=read.max_pixels, refuse_uniform=True),
                    strict=True))
    out = []
    for k, (row, path) in enumerate(zip(rows, paths, strict=True)):
        if row["error_code"] is None:
            out.append(FileRead(tuple(row["shape"]), row["fingerprint"], None))
            continue
        if k in here:
            mine = here[k]
            code = None if mine.ok else mine.pixels.code  # type: ignore[union-attr]
            if code != row["error_code"]:
                raise ScaleError(
                    f"{row['worker']} could not use {path} ({row['error_reason']}), but this "
                    f"machine {'reads it' if code is None else f'gives another reason ({code})'}"
                    ": every node must see the same files (mounts, permissions) and have the "
                    "same decoders")
        error = ImageError(row["error_code"], row["error_reason"], str(path))
        error.sha256 = row["sha256"]
        out.append(FileRead(None, None, error))
    return out


def fit_probe_on_ray(
    model: ProbeAttributor,
    train: Sequence[Item],
    val: Sequence[Item],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    plugins: Sequence[str] = (),
    on_read: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    quiet: bool = True,
) -> list[tuple[Path, ImageError]]:
    """Fit ``model`` (an unfitted :class:`~genprint.methods.probe.ProbeAttributor`) on the
    files of ``train`` and ``val``, as :func:`genprint.methods.fitting.fit_on_items` does, with
    both passes over the files on Ray Data. Returns the files that could not be used, each
    with its reason.

    ``actors`` actors of ``cpus_per_actor`` CPUs each (torch gets that many threads) do each
    pass; the feature actors each build the backbone once. Ray: an initialised Ray is used as
    it is; else ``address`` (or Ray's ``RAY_ADDRESS``) names a cluster; else a local Ray with
    ``num_cpus`` CPUs (default ``actors × cpus_per_actor``) is started, and shut down at the
    end. ``plugins`` are imported by the workers first (a backbone of your own).
    ``on_read(n)`` / ``on_progress(n)``: ``n`` more files read / featurised.

    Raises ValueError for the data problems the local fit refuses (a source whose every image
    was refused, no training image), and :class:`ScaleError` when Ray is missing or
    unreachable, a worker cannot build the driver's backbone or runs other versions, a node
    reads a file otherwise than this machine, a file changed between the passes, or a worker
    failed or died.
    """
    from genprint.io.images import default_max_pixels
    from genprint.methods.two_pass import fit_in_two_passes

    if not getattr(model, "fits_on_features", False):
        raise ValueError(f"fit_probe_on_ray fits a probe, not a {type(model).__name__}")
    ray = require_ray()
    check_pool(actors, cpus_per_actor)
    if not train:
        raise ValueError("no training images")
    read = _ReadSettings(min_size=model.min_size, max_pixels=default_max_pixels(),
                         cpus=max(1, math.floor(cpus_per_actor)),
                         plugins=tuple(portable_plugin(p) for p in plugins),
                         versions=runtime_versions())
    pool = {"actors": actors, "cpus_per_actor": cpus_per_actor,
            "batch_size": max(1, model.batch_size)}

    def read_pass(paths: Sequence[Path]) -> list[FileRead]:
        rows = [{INDEX_COLUMN: i, FILE_COLUMN: os.fsencode(os.path.abspath(p))}
                for i, p in enumerate(paths)]
        dataset = pool_dataset(rows, _ReadActor, read, **pool)
        return _file_reads(_read_rows(_batches(dataset, quiet), len(rows), on_read), paths,
                           read)

    def feature_pass(paths: Sequence[Path], expected: Sequence[bytes], n_train: int
                     ) -> tuple[list[np.ndarray], list[bytes | None]]:
        # (n_train unused: the actors batch as the files come, so the features equal the
        # local ones to float rounding, not to the bit)
        if not paths:
            return model.extract([]), []
        rows = [{INDEX_COLUMN: i, FILE_COLUMN: os.fsencode(os.path.abspath(p)),
                 EXPECTED_COLUMN: fp} for i, (p, fp) in enumerate(zip(paths, expected,
                                                                     strict=True))]
        dataset = pool_dataset(rows, _FeatureActor, _feature_settings(model, read), **pool)
        # each actor checked its files against ``expected`` before extracting
        return _feature_arrays(_batches(dataset, quiet), len(rows), on_progress), list(expected)

    cpus = num_cpus if num_cpus is not None else max(1, math.ceil(actors * cpus_per_actor))
    started = connect(ray, address=address, num_cpus=cpus, quiet=quiet)
    try:
        with quiet_ray_data(quiet):
            return fit_in_two_passes(model, train, val, read_pass, feature_pass)
    except Exception as exc:  # Ray's wrapper of a worker's error: said in genprint's words
        ours = from_ray_error(exc)
        if ours is None:
            raise
        raise ours from None
    finally:
        if started:
            ray.shutdown()


def _feature_settings(model: ProbeAttributor, read: _ReadSettings) -> _FeatureSettings:
    """The planned backbone of ``model``, as the feature actors must rebuild it."""
    from genprint.backbones.resolve import spec_path, weights_id

    backbone = model.build_backbone()
    return _FeatureSettings(
        backbone=spec_path(model.backbone), backbone_options=dict(model.backbone_options),
        input_size=int(backbone.preprocessing.input_size), pad=model.pad,
        weights_id=weights_id(backbone), batch_size=model.batch_size, cache=model.cache,
        cache_dir=os.path.abspath(model.cache_dir) if model.cache_dir else None, read=read)
