"""Running genprint's work on Ray: connecting, the actor pools, and Ray's errors in genprint's
words. Shared by :mod:`genprint.scale.ray_data` (attribution) and
:mod:`genprint.scale.ray_features` (probe training).

Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from genprint.storage.model_dir import ModelFormatError

log = logging.getLogger("genprint.scale")

INSTALL_HINT = 'pip install "genprint[ray]"'
"""What to run when Ray Data is missing."""


MAX_BLOCKS = 10_000
"""Most blocks the input dataset is cut into (one block per batch below that)."""


class ScaleError(RuntimeError):
    """Ray cannot run the job: Ray Data is not installed, a cluster cannot be reached, or it
    returned fewer rows than files."""


class ModelMismatchError(ModelFormatError):
    """A Ray worker loaded another model than the driver read (another ``model_sha256``)."""


def require_ray() -> Any:
    """The ``ray`` module with Ray Data imported, or :class:`ScaleError` naming the extra."""
    try:
        import ray
        import ray.data  # the part this module needs
    except ImportError as exc:
        raise ScaleError(f"Ray Data is not installed ({exc}): {INSTALL_HINT}") from None
    return ray



def portable_plugin(spec: str) -> str:
    """A plugin spec the workers can import: a ``.py`` file path made absolute."""
    spec = spec.strip()
    is_file = spec.endswith(".py") or os.sep in spec or bool(os.altsep and os.altsep in spec)
    return os.path.abspath(spec) if is_file else spec


def check_pool(actors: int, cpus_per_actor: float) -> None:
    """ValueError unless the actor pool's size and CPUs make sense."""
    if actors < 1:
        raise ValueError(f"actors must be ≥ 1, got {actors}")
    if cpus_per_actor <= 0:
        raise ValueError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")



def connect(ray: Any, *, address: str | None, num_cpus: int, quiet: bool) -> bool:
    """Make sure Ray is initialised; True if this call did it (and should shut it down)."""
    if ray.is_initialized():
        return False
    quiet_args: dict[str, Any] = ({"logging_level": logging.WARNING, "log_to_driver": False}
                                  if quiet else {})
    if not address and os.environ.get(RAY_ADDRESS_ENV):  # e.g. under `ray job submit`
        address = os.environ[RAY_ADDRESS_ENV]
        log.info("using the Ray cluster of %s=%s", RAY_ADDRESS_ENV, address)
    if address:
        check_reachable(address)
    with _own_signal_handlers():
        try:
            if address:
                ray.init(address=address, **quiet_args)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet_args)
        except Exception as exc:  # noqa: BLE001 - e.g. ConnectionError: said in our words
            where = f"reach the Ray cluster at {address}" if address else "start a local Ray"
            raise ScaleError(f"could not {where}: {type(exc).__name__}: {exc}") from None
    return True


RAY_ADDRESS_ENV = "RAY_ADDRESS"
"""Ray's own variable naming the cluster to join; used when no ``address`` is given."""


@contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Keep the process's SIGTERM / SIGINT handlers across ``ray.init``, which installs its
    own (exiting at once): the caller's clean-up (the CLI keeps finished rows) still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a cluster's port to answer before giving up (Ray itself retries
without end when nothing answers)."""


def check_reachable(address: str) -> None:
    """:class:`ScaleError` when ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) names a
    port that does not answer; other forms (``auto``, ``local``) are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise ScaleError(f"could not reach the Ray cluster at {address}: nothing answers at "
                         f"{host}:{port} ({exc})") from None


@contextmanager
def quiet_ray_data(quiet: bool) -> Iterator[None]:
    """While running: Ray Data's logger shows errors only (``quiet``), then as it was."""
    logger = logging.getLogger("ray.data")
    before = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


INDEX_COLUMN = "index"
"""Position of a row's file among the inputs (input and output rows of every actor pool)."""
FILE_COLUMN = "file"
"""Absolute path of the file a worker opens, as bytes (any file name survives Arrow)."""


def batch_files(batch: Any) -> list[str]:
    """The files of a pyarrow batch's :data:`FILE_COLUMN`, as paths to open."""
    return [os.fsdecode(p) for p in batch.column(FILE_COLUMN).to_pylist()]


class WorkerActor:
    """Base of the callable classes the actor pools run. A subclass sets ``problem`` in its
    constructor when it cannot work (raised at its first batch, where it reaches the driver as
    genprint's error with its message: a failing constructor would only say that the actor
    died) and computes a batch in ``_rows``; any other error there reaches the driver as a
    :class:`ScaleError` naming the worker and what it was doing (``doing``)."""

    doing = "working on a batch of files"
    problem: Exception | None = None

    def __call__(self, batch: Any) -> Any:
        if self.problem is not None:
            raise self.problem
        try:
            return self._rows(batch)
        except ScaleError:
            raise
        except Exception as exc:  # noqa: BLE001 - reaches the driver as a ScaleError
            raise ScaleError(f"{worker_label()} failed {self.doing}: "
                             f"{type(exc).__name__}: {exc}") from None

    def _rows(self, batch: Any) -> Any:  # pragma: no cover - every subclass has its own
        raise NotImplementedError


def pool_dataset(rows: Sequence[dict[str, Any]], cls: type, settings: Any, *, actors: int,
                 cpus_per_actor: float, batch_size: int) -> Any:
    """A lazy dataset: ``cls(settings)`` actors (a fixed pool of ``actors``, ``cpus_per_actor``
    CPUs each) map pyarrow batches of ``batch_size`` of ``rows``.

    A worker process that dies (killed for memory, a crash in native code) is not restarted
    and its batch is not retried: Ray's defaults (restart and retry without end) would turn a
    file that kills its worker into a run that never ends. The run fails instead, and
    :func:`from_ray_error` says so.
    """
    import ray.data

    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(rows) / batch_size)))
    try:
        source = ray.data.from_items(list(rows), override_num_blocks=blocks)
    except TypeError:  # Ray before 2.10 calls it parallelism
        source = ray.data.from_items(list(rows), parallelism=blocks)
    args = {"batch_size": batch_size, "batch_format": "pyarrow",
            "compute": ray.data.ActorPoolStrategy(size=min(actors, blocks)),
            "num_cpus": cpus_per_actor, "fn_constructor_kwargs": {"settings": settings}}
    with warnings.catch_warnings():  # Ray 2.60 deprecates these keywords, with no other way
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        try:
            return source.map_batches(cls, max_restarts=0, max_task_retries=0, **args)
        except TypeError:  # a Ray that no longer takes them: its own restart policy
            log.warning("this Ray cannot be told not to restart dead workers")
            return source.map_batches(cls, **args)


def worker_label() -> str:
    """How errors name the process they come from (a Ray worker: its node and pid)."""
    return f"a Ray worker on {socket.gethostname()} (pid {os.getpid()})"


def runtime_versions() -> dict[str, str]:
    """The versions that decide what a worker computes: genprint, Pillow, numpy, torch."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("genprint", "pillow", "numpy", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def version_problem(expected: dict[str, str]) -> ScaleError | None:
    """A :class:`ScaleError` when this process runs other versions than ``expected`` (the
    driver's :func:`runtime_versions`): decoding or a forward pass could differ."""
    mine = runtime_versions()
    differ = {k: (v, mine.get(k)) for k, v in expected.items() if mine.get(k) != v}
    if not differ:
        return None
    listed = ", ".join(f"{k} {theirs} here, {ours} on the driver"
                       for k, (ours, theirs) in sorted(differ.items()))
    return ScaleError(f"{worker_label()} runs other versions than the driver ({listed}): "
                      "install the same versions on every node")


_OUR_ERROR = re.compile(r"\b(ModelMismatchError|ModelFormatError|ScaleError): ([^\n]+)")


def from_ray_error(exc: BaseException) -> Exception | None:
    """genprint's error for an exception Ray raised while running a dataset: the genprint
    error a worker raised (rebuilt from Ray's wrapper, which keeps only its text), a
    :class:`ScaleError` for any other failure of Ray or of a worker (a worker that died, an
    error in a worker), or None when ``exc`` does not come from Ray (it is then re-raised as
    it is)."""
    if type(exc).__module__.startswith("genprint"):  # raised here, already ours
        return None
    found = _OUR_ERROR.findall(str(exc))
    if found:
        kind, message = found[-1]
        return {"ModelMismatchError": ModelMismatchError, "ModelFormatError": ModelFormatError,
                "ScaleError": ScaleError}[kind](message)
    if not type(exc).__module__.startswith("ray"):
        return None
    name = type(exc).__name__
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else name
    if "ActorDied" in name or "WorkerCrashed" in name or "died" in str(exc).lower():
        return ScaleError(f"a Ray worker died while working ({name}); it may have run out of "
                          "memory or crashed on a file: see the Ray logs (`ray logs`), or "
                          f"retry with fewer files per batch. Ray said: {last[:300]}")
    return ScaleError(f"Ray failed ({name}): {last[:500]}")
