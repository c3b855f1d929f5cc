"""Batch attribution on Ray Data: the rows of ``genprint attribute``, computed by a pool of actors.

How a run goes:

1. The driver (the process that calls these functions) expands folders with
   :func:`genprint.io.sources.scan_inputs`, as the local path does, and reads the model's card:
   its sha256 is the ``model_sha256`` every row must carry.
2. A dataset of ``(index, path)`` rows is handed by ``map_batches`` to a fixed pool of actors
   (:class:`_AttributionActor`). Each actor loads the model **once** with :func:`genprint.load`,
   sets torch's threads to the CPUs Ray gives it, and checks that it loaded the driver's model
   (same ``model_sha256``): a worker that sees another model at that path stops the run with a
   :class:`ModelMismatchError` instead of mixing two models' answers.
3. Each actor reads its files with the local reader (:func:`genprint.io.batches.iter_images`,
   i.e. :func:`genprint.io.images.read_image_with_info`) and attributes them with
   :meth:`genprint.methods.base.Attributor.attribute_loaded`, the code that
   :meth:`~genprint.methods.base.Attributor.iter_attribute` runs after reading. A file that
   cannot be used (missing, empty, corrupt, truncated, too large, not an image) is an error
   row with its ``error``, ``error_code`` and ``sha256``; the rest of its batch goes on.

The model folder and the image files are opened **by the workers**: on a cluster, give paths
that every node sees the same way (a shared file system), and the same model at the model path.

Importing this module imports neither Ray nor torch; the functions import Ray when they run and
raise :class:`ScaleError` saying ``pip install "genprint[ray]"`` when it is missing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genprint.results import RESULT_COLUMN_TYPES, Attribution, from_flat_row, printable
from genprint.scale.ray_session import (
    FILE_COLUMN,
    INDEX_COLUMN,
    ModelMismatchError,
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
from genprint.storage.model_dir import ModelFormatError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from ray.data import Dataset

    from genprint.io.images import AnimatedPolicy
    from genprint.methods.base import Attributor

log = logging.getLogger("genprint.scale")


PathLike = str | os.PathLike[str]


def model_identity(model: PathLike) -> tuple[dict[str, Any], str]:
    """The card of the model directory ``model`` and its ``model_sha256`` (the sha256 of
    ``card.json``), as this process sees them. :class:`ModelFormatError` if it is not a model
    directory (or its card was edited)."""
    from genprint.storage.model_dir import CARD_NAME, read_card, sha256_file

    card = read_card(model)
    return card, sha256_file(Path(model) / CARD_NAME)


def result_schema(with_index: bool = False) -> pa.Schema:
    """The Arrow schema of result rows: :data:`genprint.results.RESULT_COLUMN_TYPES` (the
    columns of a local results file), after an ``index`` column if ``with_index``."""
    import pyarrow as pa

    fields = [(name, getattr(pa, kind)()) for name, kind in RESULT_COLUMN_TYPES]
    if with_index:
        fields.insert(0, (INDEX_COLUMN, pa.int64()))
    return pa.schema(fields)


@dataclass(frozen=True)
class _ActorSettings:
    """What each actor needs to attribute as the driver asked (sent to every actor)."""

    model: str
    """Absolute path of the model directory, opened by the actor."""
    model_sha256: str
    """The driver's ``model_sha256``; an actor that loads another one refuses to work."""
    batch_size: int
    threads: int
    """torch threads, and at most this many threads reading files."""
    animated: str
    max_pixels: int
    max_tiles: int | None
    plugins: tuple[str, ...]
    """Plugin modules to import before loading the model (:mod:`genprint.plugins`)."""
    with_index: bool
    versions: dict[str, str]
    """The driver's :func:`~genprint.scale.ray_session.runtime_versions`; an actor that runs
    others refuses to work (its decoding or network could differ)."""


@dataclass(frozen=True)
class _Plan:
    """The driver's part of a run: the files, in input order, and the actors' settings."""

    paths: list[Path]
    settings: _ActorSettings


class _AttributionActor(WorkerActor):
    """The callable class ``map_batches`` runs: one per actor, holding one loaded model."""

    doing = "attributing a batch of files"

    def __init__(self, settings: _ActorSettings) -> None:
        import torch

        import genprint
        from genprint.plugins import PluginError, load_plugins

        self.settings = settings
        self.problem = version_problem(settings.versions)
        if self.problem is not None:
            return
        torch.set_num_threads(settings.threads)
        where = worker_label()
        try:
            load_plugins(settings.plugins)
            self.attributor: Attributor = genprint.load(settings.model)
        except (ModelFormatError, PluginError) as exc:
            self.problem = ModelFormatError(f"{where} cannot load the model: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - any other failure, said as ours
            self.problem = ScaleError(f"{where} cannot load the model: "
                                      f"{type(exc).__name__}: {exc}")
            return
        got = getattr(self.attributor, "model_sha256_", None)
        if got != settings.model_sha256:
            self.problem = ModelMismatchError(
                f"{where} loaded another model at {settings.model} (model_sha256 "
                f"{str(got)[:12]}…) than the driver read ({settings.model_sha256[:12]}…): every "
                "node must see the same model folder at that path")
            return
        if settings.max_tiles is not None:
            self.attributor.max_tiles = settings.max_tiles  # type: ignore[attr-defined]

    def _rows(self, batch: pa.Table) -> pa.Table:
        """Result rows for a batch of ``index``, ``path`` (as given) and ``file`` (to open)."""
        import pyarrow as pa

        from genprint.io.batches import auto_workers, iter_images
        from genprint.results import flat_row

        s = self.settings
        given = [os.fsdecode(p) for p in batch.column("path").to_pylist()]
        files = batch_files(batch)
        readers = 1 if s.threads <= 1 else min(s.threads, auto_workers(files))
        loaded = iter_images(files, workers=readers, min_size=self.attributor.min_size,
                             animated=s.animated, max_pixels=s.max_pixels)  # type: ignore[arg-type]
        rows = []
        for name, result in zip(given, self.attributor.attribute_loaded(
                loaded, batch_size=s.batch_size), strict=True):
            row = {k: printable(v) for k, v in flat_row(result).items()}
            row["path"] = printable(name)
            rows.append(row)
        if s.with_index:
            for row, index in zip(rows, batch.column(INDEX_COLUMN).to_pylist(), strict=True):
                row[INDEX_COLUMN] = index
        return pa.Table.from_pylist(rows, schema=result_schema(s.with_index))


def _expand(inputs: PathLike | Sequence[PathLike]) -> list[Path]:
    """Image paths of command-line style inputs, as the local path expands them."""
    from genprint.io.sources import scan_inputs

    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    return scan_inputs(list(inputs))


def _plan(model: PathLike, inputs: PathLike | Sequence[PathLike], *, threads: int,
          batch_size: int, animated: AnimatedPolicy, max_tiles: int | None,
          max_pixels: int | None, expected_model_sha256: str | None,
          plugins: Sequence[str], with_index: bool, expand_folders: bool = True) -> _Plan:
    """The driver's checks (model card, settings) and file list, before Ray is touched."""
    from genprint.io.images import default_max_pixels

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if animated not in ("refuse", "first"):
        raise ValueError(f"animated must be 'refuse' or 'first', got {animated!r}")
    card, digest = model_identity(model)
    if expected_model_sha256 is not None and expected_model_sha256 != digest:
        raise ModelMismatchError(
            f"{model}: its model_sha256 is {digest[:12]}…, not the expected "
            f"{expected_model_sha256[:12]}… (the folder changed)")
    if max_tiles is not None and "max_tiles" not in (card.get("params") or {}):
        raise ValueError(f"method {card.get('method')!r} does not tile images (max_tiles is for "
                         "metric and baseline models)")
    settings = _ActorSettings(
        model=os.path.abspath(model), model_sha256=digest, batch_size=batch_size,
        threads=max(1, threads), animated=animated,
        max_pixels=default_max_pixels() if max_pixels is None else max_pixels,
        max_tiles=max_tiles, plugins=tuple(portable_plugin(p) for p in plugins),
        with_index=with_index, versions=runtime_versions())
    files = _expand(inputs) if expand_folders else [
        Path(p) for p in ([inputs] if isinstance(inputs, str | os.PathLike) else inputs)]
    return _Plan(files, settings)


def _input_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """One input row per file: its position, its path as given (for the result row) and as
    an absolute path (for the workers), as bytes so that any file name survives Arrow."""
    return [{INDEX_COLUMN: i, "path": os.fsencode(str(p)), FILE_COLUMN: os.fsencode(os.path.abspath(p))}
            for i, p in enumerate(paths)]


def _build(plan: _Plan, *, actors: int, cpus_per_actor: float) -> Dataset:
    """The Ray dataset of result rows for a plan (lazy: nothing runs until it is consumed)."""
    out = pool_dataset(_input_rows(plan.paths), _AttributionActor, plan.settings, actors=actors,
                       cpus_per_actor=cpus_per_actor, batch_size=plan.settings.batch_size)
    context = getattr(out, "context", None)
    if context is not None:  # the rows in input order (this dataset's own setting)
        context.execution_options.preserve_order = True
    return out


def attribution_dataset(
    model: PathLike,
    inputs: PathLike | Sequence[PathLike],
    *,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    batch_size: int = 64,
    animated: AnimatedPolicy = "refuse",
    max_tiles: int | None = None,
    max_pixels: int | None = None,
    expected_model_sha256: str | None = None,
    plugins: Sequence[str] = (),
) -> Dataset:
    """A lazy ``ray.data.Dataset`` of result rows for the images in ``inputs``, one per file.

    The columns are exactly :data:`genprint.results.RESULT_COLUMNS`, with the meaning and
    types of a local results file (``genprint attribute --out x.parquet``): ``scores`` is a
    JSON object as text, a file that could not be used has ``error``, ``error_code`` and (when
    its bytes could be read) ``sha256``, and decode notes are in ``notes``. Rows come in input
    order. Write them with ``ds.write_parquet(folder)`` or consume them with
    ``ds.iter_rows()``.

    ``model`` is a model directory and ``inputs`` image files and folders, as on the command
    line (folders are expanded here, on the driver); both must be readable **on the workers**
    at the same paths. Attribution runs in ``actors`` actors of ``cpus_per_actor`` CPUs each
    (torch gets that many threads), each loading the model once and checking it is the one
    read here (:class:`ModelMismatchError` otherwise, raised when the dataset runs; with
    ``expected_model_sha256``, the model read here must also have that hash). ``max_pixels``
    defaults to this process's limit (``GENPRINT_MAX_PIXELS``), sent to the workers;
    ``max_tiles`` overrides a tiling model's own. Each actor imports the installed
    ``genprint.plugins`` entry points, its own ``GENPRINT_PLUGINS`` and the modules in
    ``plugins`` (names, or ``.py`` paths the workers can read) before it loads the model, so
    that a model of a method of your own loads there too.

    Ray must be running (``ray.init(...)``; otherwise Ray Data starts a local one with every
    CPU). :class:`ScaleError` if Ray Data is not installed, :class:`ModelFormatError` if
    ``model`` is not a model directory.
    """
    require_ray()
    plan = _plan(model, inputs, threads=math.floor(cpus_per_actor), batch_size=batch_size,
                 animated=animated, max_tiles=max_tiles, max_pixels=max_pixels,
                 expected_model_sha256=expected_model_sha256, plugins=plugins,
                 with_index=False)
    check_pool(actors, cpus_per_actor)
    return _build(plan, actors=actors, cpus_per_actor=cpus_per_actor)


def iter_attributions(
    model: PathLike,
    inputs: PathLike | Sequence[PathLike],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    batch_size: int = 64,
    animated: AnimatedPolicy = "refuse",
    max_tiles: int | None = None,
    max_pixels: int | None = None,
    expected_model_sha256: str | None = None,
    plugins: Sequence[str] = (),
    on_progress: Callable[[int], None] | None = None,
    expand_folders: bool = True,
    quiet: bool = True,
) -> Iterator[Attribution]:
    """:class:`~genprint.results.Attribution` rows computed on Ray, in input order: the rows
    :meth:`Attributor.iter_attribute <genprint.methods.base.Attributor.iter_attribute>` gives
    for the same files, so the local writers (:class:`genprint.results.ResultsWriter`) and
    tables take them as they are.

    Ray: an already initialised Ray is used as it is; else ``address`` connects to a running
    cluster (``ray.init(address=...)``: ``"auto"``, ``"HOST:6379"`` or ``"ray://HOST:10001"``);
    else a local Ray is started with ``num_cpus`` CPUs (default: ``actors × cpus_per_actor``)
    and no dashboard. A Ray started or connected here is shut down when the iteration ends.
    The other arguments are those of :func:`attribution_dataset`; ``on_progress(n)`` is called
    as rows arrive. ``quiet`` keeps Ray's progress bars and informational logs off the console.
    ``expand_folders=False`` takes ``inputs`` as the files themselves, one row each (a folder
    among them is a file that cannot be read), as an evaluation's list of test files needs.

    Raises :class:`ModelFormatError` (a bad model, or a worker that cannot load it),
    :class:`ModelMismatchError` (a worker sees another model) and :class:`ScaleError` (Ray
    missing or unreachable) as themselves, not as Ray's wrappers.
    """
    ray = require_ray()
    plan = _plan(model, inputs, threads=math.floor(cpus_per_actor), batch_size=batch_size,
                 animated=animated, max_tiles=max_tiles, max_pixels=max_pixels,
                 expected_model_sha256=expected_model_sha256, plugins=plugins,
                 with_index=True, expand_folders=expand_folders)
    check_pool(actors, cpus_per_actor)
    if not plan.paths:
        return
    cpus = num_cpus if num_cpus is not None else max(1, math.ceil(actors * cpus_per_actor))
    started = connect(ray, address=address, num_cpus=cpus, quiet=quiet)
    try:
        with quiet_ray_data(quiet):
            dataset = _build(plan, actors=actors, cpus_per_actor=cpus_per_actor)
            if quiet and getattr(dataset, "context", None) is not None:
                dataset.context.enable_progress_bars = False
            yield from _in_input_order(dataset, plan.paths, on_progress)
    except Exception as exc:  # Ray's wrapper of a worker's error (its class varies by version)
        ours = from_ray_error(exc)
        if ours is None:
            raise
        raise ours from None
    finally:
        if started:
            ray.shutdown()


def _in_input_order(dataset: Dataset, paths: Sequence[Path],
                    on_progress: Callable[[int], None] | None) -> Iterator[Attribution]:
    """The dataset's rows as :class:`Attribution`, in input order whatever order they come in,
    each with its path exactly as the driver has it."""
    waiting: dict[int, Attribution] = {}
    next_index = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows = batch.to_pylist()
        for row in rows:
            index = row.pop(INDEX_COLUMN)
            waiting[index] = replace(from_flat_row(row), path=str(paths[index]))
        if on_progress:
            on_progress(len(rows))
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1
    if next_index != len(paths) or waiting:
        raise ScaleError(f"Ray returned rows for {next_index + len(waiting)} of {len(paths)} "
                         "files")


