"""Fitting a ``probe`` with its feature extraction on Ray Data (``genprint train probe --ray``).

The frozen backbone's forward pass over every training and validation image is what costs in a
``probe`` fit; the heads are fitted on the features in seconds. Here that pass runs in a pool
of Ray actors, each holding the backbone, and the rest of the fit runs in the driver with the
local code, so the model is the one :func:`genprint.methods.fitting.fit_on_items` makes from the
same files (same images used, layer, hyperparameter, thresholds up to the float rounding of
the features, same training record and warnings).

How a fit goes:

1. **Reading pass.** Actors read every file with the local reader and send back, per file, its
   decoded shape and pixel fingerprint (:mod:`genprint.io.fingerprint`), or why it cannot be
   used. Pixels never travel to the driver.
2. **Plan.** The driver runs :meth:`ProbeAttributor.plan_fit
   <genprint.methods.probe.ProbeAttributor.plan_fit>` on the shapes: the per-class cap, the
   images left out for their size, and the backbone's input size.
3. **Feature pass.** Actors build the backbone at that input size, check it has the driver's
   weights (its ``weights_id``), read the chosen files again and send back the features of
   every layer (cached on the worker's disk when the model caches features), with each
   file's fingerprint again: a file whose pixels changed between the passes stops the fit.
4. **Heads.** The driver fits the heads, chooses the layer and calibrates the thresholds
   (:meth:`~genprint.methods.probe.ProbeAttributor.fit_features`) and records the training
   data as a local fit does (:func:`genprint.methods.fitting.record_fit`).

Steps 2 and 4 and the checks between the passes are the local fit's own code
(:func:`genprint.methods.two_pass.fit_in_two_passes`); only the two passes run on Ray.

Files are opened **by the workers**: on a cluster, give paths every node sees the same way.
Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genprint.scale.ray_data import (
    INDEX_COLUMN,
    MAX_BLOCKS,
    ScaleError,
    _check_pool,
    _connect,
    _portable_plugin,
    _quiet_ray_data,
    require_ray,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from genprint.io.images import ImageError
    from genprint.io.sources import Item
    from genprint.methods.probe import ProbeAttributor
    from genprint.methods.two_pass import FileRead

FILE_COLUMN = "file"


@dataclass(frozen=True)
class _ReadSettings:
    """What a reading actor needs (sent to every actor)."""

    min_size: int
    max_pixels: int
    threads: int


@dataclass(frozen=True)
class _FeatureSettings:
    """What a feature actor needs to rebuild the driver's backbone (sent to every actor)."""

    backbone: str
    backbone_options: dict[str, Any]
    input_size: int
    pad: str
    min_side: int | None
    weights_id: str
    """The driver's backbone weights; an actor that builds other weights refuses to work."""
    batch_size: int
    cache: bool
    cache_dir: str | None
    read: _ReadSettings
    plugins: tuple[str, ...]


def _read(files: list[str], settings: _ReadSettings) -> list[Any]:
    """The local reader's results for ``files``, in order."""
    from genprint.io.batches import auto_workers, iter_images

    readers = 1 if settings.threads <= 1 else min(settings.threads, auto_workers(files))
    return list(iter_images(files, workers=readers, min_size=settings.min_size,
                            max_pixels=settings.max_pixels))


def _files(batch: pa.Table) -> list[str]:
    return [os.fsdecode(p) for p in batch.column(FILE_COLUMN).to_pylist()]


class _ReadActor:
    """Reads files and sends back shapes and fingerprints (no pixels), or each file's error."""

    def __init__(self, settings: _ReadSettings) -> None:
        self.settings = settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        from genprint.io.fingerprint import fingerprint

        rows = []
        for index, loaded in zip(batch.column(INDEX_COLUMN).to_pylist(),
                                 _read(_files(batch), self.settings), strict=True):
            row: dict[str, Any] = {INDEX_COLUMN: index, "height": None, "width": None,
                                   "channels": None, "fingerprint": None, "error_code": None,
                                   "error_reason": None, "sha256": loaded.sha256}
            if loaded.ok:
                shape = loaded.pixels.shape
                row.update(height=shape[0], width=shape[1],
                           channels=shape[2] if len(shape) > 2 else None,
                           fingerprint=fingerprint(loaded.pixels))
            else:
                row.update(error_code=loaded.pixels.code, error_reason=loaded.pixels.reason)
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=_read_schema())


def _read_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(INDEX_COLUMN, pa.int64()), ("height", pa.int64()), ("width", pa.int64()),
                      ("channels", pa.int64()), ("fingerprint", pa.binary()),
                      ("error_code", pa.string()), ("error_reason", pa.string()),
                      ("sha256", pa.string())])


class _FeatureActor:
    """Holds the backbone; sends back every layer's features of the files it is given."""

    def __init__(self, settings: _FeatureSettings) -> None:
        import torch

        from genprint.backbones.resolve import weights_id
        from genprint.methods.probe import ProbeAttributor
        from genprint.plugins import PluginError, load_plugins

        self.settings = settings
        self.problem: Exception | None = None
        """Why this actor cannot work (raised at its first batch, as the attribution actors
        do: a failing constructor would make Ray restart the actor instead of stopping)."""
        torch.set_num_threads(max(1, settings.read.threads))
        where = f"a Ray worker on {socket.gethostname()} (pid {os.getpid()})"
        try:
            load_plugins(settings.plugins)
            self.model = ProbeAttributor(
                backbone=settings.backbone, backbone_options=settings.backbone_options,
                input_size=settings.input_size, pad=settings.pad,
                batch_size=settings.batch_size, cache=settings.cache,
                cache_dir=settings.cache_dir)
            backbone = self.model.build_backbone(settings.min_side)
        except (ValueError, OSError, ImportError, PluginError) as exc:
            self.problem = ScaleError(f"{where} cannot build the backbone "
                                      f"{settings.backbone!r}: {exc}")
            return
        got = weights_id(backbone)
        if got != settings.weights_id or backbone.preprocessing.input_size != settings.input_size:
            self.problem = ScaleError(
                f"{where} built the backbone {settings.backbone!r} with other weights or input "
                f"size ({str(got)[:12]}…, {backbone.preprocessing.input_size} px) than the "
                f"driver ({settings.weights_id[:12]}…, {settings.input_size} px): every node "
                "must see the same backbone files")

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        from genprint.io.fingerprint import fingerprint

        if self.problem is not None:
            raise self.problem
        loaded = _read(_files(batch), self.settings.read)
        images = [r.pixels for r in loaded if r.ok]
        feats = self.model.extract(images)
        rows = np.cumsum([r.ok for r in loaded]) - 1  # each readable file's row in ``feats``
        columns: dict[str, Any] = {
            INDEX_COLUMN: batch.column(INDEX_COLUMN),
            "fingerprint": pa.array([fingerprint(r.pixels) if r.ok else None for r in loaded],
                                    pa.binary()),
        }
        for k, layer in enumerate(feats):
            columns[_layer_column(k)] = pa.array(
                [np.ascontiguousarray(layer[rows[j]], dtype=np.float32).tobytes() if r.ok
                 else None for j, r in enumerate(loaded)], pa.binary())
        return pa.table(columns)


def _layer_column(k: int) -> str:
    return f"layer_{k:03d}"


def _dataset(files: Sequence[str], cls: type, settings: Any, *, actors: int,
             cpus_per_actor: float, batch_size: int) -> Any:
    """``map_batches`` of ``cls`` over ``(index, file)`` rows, on a fixed pool of actors."""
    import ray.data

    rows = [{INDEX_COLUMN: i, FILE_COLUMN: os.fsencode(f)} for i, f in enumerate(files)]
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(rows) / batch_size)))
    try:
        source = ray.data.from_items(rows, override_num_blocks=blocks)
    except TypeError:  # Ray before 2.10 calls it parallelism
        source = ray.data.from_items(rows, parallelism=blocks)
    return source.map_batches(
        cls, batch_size=batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=min(actors, blocks)), num_cpus=cpus_per_actor,
        fn_constructor_kwargs={"settings": settings})


def _collect(dataset: Any, n: int, on_progress: Callable[[int], None] | None,
             quiet: bool) -> dict[int, dict[str, Any]]:
    """Every row of ``dataset`` by its index (all ``n`` of them, else :class:`ScaleError`)."""
    if quiet and getattr(dataset, "context", None) is not None:
        dataset.context.enable_progress_bars = False
    out: dict[int, dict[str, Any]] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows = batch.to_pylist()
        for row in rows:
            out[int(row[INDEX_COLUMN])] = row
        if on_progress:
            on_progress(len(rows))
    if len(out) != n:
        raise ScaleError(f"Ray returned rows for {len(out)} of {n} files")
    return out


def _file_reads(rows: dict[int, dict[str, Any]], paths: Sequence[Path]) -> list[FileRead]:
    """The reading pass's rows as :class:`~genprint.methods.two_pass.FileRead`, in order."""
    from genprint.io.images import ImageError
    from genprint.methods.two_pass import FileRead

    out = []
    for k, path in enumerate(paths):
        row = rows[k]
        if row["error_code"] is not None:
            error = ImageError(row["error_code"], row["error_reason"], str(path))
            error.sha256 = row["sha256"]
            out.append(FileRead(None, None, error))
            continue
        shape = (row["height"], row["width"])
        out.append(FileRead(shape if row["channels"] is None else (*shape, row["channels"]),
                            row["fingerprint"], None))
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
    """Fit ``model`` on the files of ``train`` and ``val`` (as :func:`genprint.methods.fitting.
    fit_on_items` does), with the reading and the backbone's forward pass on Ray Data.

    Returns the files that could not be used, each with its reason, as the local fit does.
    ``actors`` actors of ``cpus_per_actor`` CPUs each (torch gets that many threads) do each
    pass; the feature actors each build the backbone once. Ray: an initialised Ray is used as
    it is; else ``address`` (or Ray's ``RAY_ADDRESS``) names a cluster; else a local Ray with
    ``num_cpus`` CPUs (default ``actors × cpus_per_actor``) is started, and shut down at the
    end. ``plugins`` are imported by the workers before they build the backbone (a backbone
    of your own). ``on_read(n)`` / ``on_progress(n)``: ``n`` more files read / featurised.

    The fit is :func:`genprint.methods.two_pass.fit_in_two_passes`, the local fit's, with
    Ray's two passes. Raises ValueError for the data problems the local fit refuses (a
    source whose every image was refused, no training image; a file changed between the
    passes: :class:`~genprint.methods.two_pass.FilesChangedError`), and :class:`ScaleError`
    when Ray is missing or unreachable or a worker cannot build the driver's backbone.
    """
    from genprint.io.images import default_max_pixels
    from genprint.methods.two_pass import fit_in_two_passes

    ray = require_ray()
    _check_pool(actors, cpus_per_actor)
    if not train:
        raise ValueError("no training images")
    read = _ReadSettings(min_size=model.min_size, max_pixels=default_max_pixels(),
                         threads=max(1, math.floor(cpus_per_actor)))
    pool = {"actors": actors, "cpus_per_actor": cpus_per_actor,
            "batch_size": max(1, model.batch_size)}

    def read_pass(paths: Sequence[Path]) -> list[FileRead]:
        files = [os.path.abspath(p) for p in paths]
        rows = _collect(_dataset(files, _ReadActor, read, **pool), len(files), on_read, quiet)
        return _file_reads(rows, paths)

    def feature_pass(paths: Sequence[Path]) -> tuple[list[np.ndarray], list[bytes | None]]:
        n_layers = len(model.build_backbone().layer_names())
        if not paths:
            return model.extract([]), []
        files = [os.path.abspath(p) for p in paths]
        rows = _collect(_dataset(files, _FeatureActor, _feature_settings(model, read, plugins),
                                 **pool), len(files), on_progress, quiet)
        ordered = [rows[j] for j in range(len(files))]
        layers = [np.stack([np.frombuffer(r[_layer_column(k)], np.float32)
                            for r in ordered if r["fingerprint"] is not None])
                  if any(r["fingerprint"] is not None for r in ordered)
                  else np.zeros((0, 0), np.float32) for k in range(n_layers)]
        return layers, [r["fingerprint"] for r in ordered]

    cpus = num_cpus if num_cpus is not None else max(1, math.ceil(actors * cpus_per_actor))
    started = _connect(ray, address=address, num_cpus=cpus, quiet=quiet)
    try:
        with _quiet_ray_data(quiet):
            return fit_in_two_passes(model, train, val, read_pass, feature_pass)
    except Exception as exc:  # Ray's wrapper of a worker's error: said in genprint's words
        ours = None if isinstance(exc, ScaleError | ValueError) else _scale_error(exc)
        if ours is None:
            raise
        raise ours from None
    finally:
        if started:
            ray.shutdown()


def _feature_settings(model: ProbeAttributor, read: _ReadSettings, plugins: Sequence[str]
                      ) -> _FeatureSettings:
    """The planned backbone of ``model``, as the feature actors must rebuild it."""
    from genprint.backbones.resolve import weights_id

    backbone = model.build_backbone()
    cache_dir = model.cache_dir
    return _FeatureSettings(
        backbone=_portable_backbone(model.backbone), backbone_options=dict(model.backbone_options),
        input_size=int(backbone.preprocessing.input_size), pad=model.pad,
        min_side=getattr(model, "_min_side", None), weights_id=weights_id(backbone),
        batch_size=model.batch_size, cache=model.cache,
        cache_dir=os.path.abspath(cache_dir) if cache_dir else None, read=read,
        plugins=tuple(_portable_plugin(p) for p in plugins))


def _portable_backbone(name: str) -> str:
    """A backbone the workers can find: a registered name as it is, a local path absolute."""
    return os.path.abspath(name) if os.path.exists(name) else name


def _scale_error(exc: BaseException) -> ScaleError | None:
    """A ScaleError a worker raised, rebuilt from Ray's wrapper (which keeps only its text)."""
    import re

    found = re.findall(r"\bScaleError: ([^\n]+)", str(exc))
    return ScaleError(found[-1]) if found else None
