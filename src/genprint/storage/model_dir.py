"""The on-disk format of a trained attributor (and of anything else genprint saves as a folder).

A saved attributor is a directory::

    MODEL/
      card.json          format version, method, classes, thresholds, backbone + preprocessing,
                         creation info, and the sha256 of every other file
      weights.safetensors
      *.npy              arrays (reference points, feature statistics, ...)

Writing goes to a temporary sibling directory that is renamed into place only once every file
and the card are complete, so a crash never leaves a half-written model under the final name.
Loading checks, before anything is used, that the format version is one this genprint can read
(a newer one is refused with a clear message), that every file the card lists is present and
matches its sha256, and that no unexpected file has been dropped in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import stat
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import genprint
from genprint.storage.atomic import (
    check_parent_writable,
    dir_mode,
    file_mode,
    fsync_dir,
    kept_mode,
)

FORMAT_VERSION = 2
"""Version of the attributor directory format written by this genprint (2: the card carries
``card_digest``, checked on load; format 1 cards, without it, still load)."""

CARD_NAME = "card.json"


class ModelFormatError(ValueError):
    """A model directory that cannot be trusted or read, with the reason."""


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(named: Iterable[tuple[str, Any]]) -> str:
    """Hex sha256 of ``(name, torch tensor)`` pairs in the order given: each name, a zero
    byte, then the tensor's raw bytes (any dtype, bfloat16 included). Identifies weights."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(name.encode() + b"\0")
        raw = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(raw.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ModelContents:
    """What a model directory holds once loaded: its card, tensors and arrays."""

    card: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None
    card_sha256: str | None = None
    """Hex sha256 of the card file as read: it lists every other file's sha256, so it identifies
    the whole model."""


def creation_info() -> dict[str, Any]:
    """Provenance stored in every card: when and with which software it was made."""
    info: dict[str, Any] = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "genprint_version": genprint.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()  # metric's weights depend on it
    except ImportError:  # pragma: no cover
        pass
    from importlib import metadata

    packages = {}
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    info["packages"] = packages
    return info


PROVENANCE_PACKAGES = ("pillow", "colour-demosaicing", "scikit-learn", "pytorch-metric-learning", "faiss-cpu",
                       "safetensors", "onnxruntime", "open-clip-torch", "transformers")
"""Installed packages whose versions every card records (those not installed are left out)."""


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name == CARD_NAME:
        raise ValueError(f"invalid file name in a model directory: {name!r}")


BENCH_ENTRIES = frozenset({"bench.json", "manifest.csv", "protocols.json", "images"})
"""What a benchmark folder written by ``genprint bench build`` holds."""


def _why_not_ours(target: Path, kind: str) -> str | None:
    """Why the folder ``target`` is not wholly a genprint output of ``kind`` (``model`` or
    ``benchmark``), or None when it is: its card / ``bench.json`` is a genprint one and every
    entry (hidden ones aside, which are kept) is a file genprint wrote there."""
    marker = CARD_NAME if kind == "model" else "bench.json"
    try:
        info = json.loads((target / marker).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"it has no readable {marker}"
    if kind == "model":
        if not isinstance(info, dict) or not isinstance(info.get("format_version"), int) \
                or not isinstance(info.get("files"), dict):
            return f"its {marker} is not a genprint model card"
        ours = {CARD_NAME, *info["files"]}
    else:
        if not isinstance(info, dict) or "per_class" not in info:
            return f"its {marker} is not a genprint benchmark description"
        ours = set(BENCH_ENTRIES)
    foreign = sorted(p.name for p in target.iterdir()
                     if not p.name.startswith(".") and p.name not in ours)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return f"it also holds files genprint did not write there ({shown})"
    return None


def refuse_unless_replaceable(target: Path, kind: str = "model") -> None:
    """Raise ``FileExistsError`` unless ``target`` is absent, an empty folder, or wholly a
    genprint ``kind`` output (see :func:`_why_not_ours`): ``--overwrite`` replaces genprint's
    own outputs, never a file or a folder holding anything of the user's."""
    what = "a genprint model directory" if kind == "model" else "a genprint benchmark folder"
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} is a file, not {what}: refusing to replace it")
    if not any(target.iterdir()):
        return
    reason = _why_not_ours(target, kind)
    if reason:
        raise FileExistsError(f"{target} is not only {what} ({reason}): refusing to replace "
                              "it; choose another output folder, or move those files")


def check_output_dir(path: str | os.PathLike[str], overwrite: bool, *,
                     kind: str = "model") -> Path:
    """Check, before any long work, that ``path`` can receive an output folder: its parent is
    (or can be made) a writable folder, and an existing ``path`` may be replaced
    (``overwrite`` and :func:`refuse_unless_replaceable`). Returns the folder that will be
    written: a symbolic link is followed, so the link keeps pointing to the updated folder.
    Raises ``FileExistsError`` or ``OSError`` with the reason."""
    target = Path(path)
    if target.is_symlink():
        try:
            target = target.resolve(strict=False)
        except (RuntimeError, OSError) as exc:  # a symlink loop
            raise OSError(f"cannot write {path}: {exc}") from None
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} already exists (replace it with --overwrite, or "
                                  "overwrite=True in Python)")
        refuse_unless_replaceable(target, kind)
    check_parent_writable(target)
    return target


@contextmanager
def model_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of the model folder ``path`` (e.g.
    ``genprint enroll``), so two processes updating it wait for each other instead of one
    silently losing the other's change. The lock is taken on the folder that holds the model
    (it is not replaced by the atomic swap, and no lock file is left behind), so updates of
    models in the same folder take turns. Without POSIX file locks this does nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    parent = Path(path).parent
    if not parent.is_dir():  # nothing to protect yet (and no folder is created here)
        yield
        return
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:  # an unreadable folder: writing there will say what is wrong
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN / infinite float replaced by ``None`` (strict JSON), recursively."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def write_model_dir(
    path: str | os.PathLike[str],
    card: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a model directory atomically and return its path.

    ``tensors`` go into ``weights.safetensors``; each entry of ``arrays`` becomes ``NAME.npy``;
    each entry of ``extra_files`` (e.g. a JSON table for people to read) is written as is under
    its name and checksummed like the others (loading does not read it). The card gets
    ``format_version``, ``created`` and ``files`` (name → sha256) added; non-finite numbers in
    its ``training`` record (e.g. a figure undefined for two sources) are written as ``null``.
    An existing directory is replaced only with ``overwrite=True``, and only if it is a model
    directory (or empty); a symbolic link to one is followed (see :func:`check_output_dir`).
    """
    from safetensors.numpy import save_file

    target = check_output_dir(path, overwrite)
    leftovers = _leftovers(target)
    if leftovers:
        # a save moves the hidden entries of the model it replaces (.git, ...) across last
        held = [f"{p.name} holds {', '.join(sorted(h.name for h in p.glob('.*')))}"
                for p in leftovers if p.is_dir() and any(p.glob(".*"))]
        yours = (f" (first move what is yours back into {target.name}: {'; '.join(held)})"
                 if held else "")
        warnings.warn(f"{target.parent}: {', '.join(p.name for p in leftovers)} left by a save "
                      f"of {target.name} that was killed (or is still running in another "
                      f"process); once no other save of it runs, delete them{yours}",
                      stacklevel=2)
    # a replaced model keeps its permissions (a private model stays private)
    kept_dir, kept_file = kept_mode(target), kept_mode(target / CARD_NAME)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        files: dict[str, str] = {}
        if tensors:
            contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            save_file(contiguous, str(tmp / "weights.safetensors"))
            files["weights.safetensors"] = sha256_file(tmp / "weights.safetensors")
        for name, array in (arrays or {}).items():
            _check_name(name)
            np.save(tmp / f"{name}.npy", np.asarray(array), allow_pickle=False)
            files[f"{name}.npy"] = sha256_file(tmp / f"{name}.npy")
        for name, data in (extra_files or {}).items():
            _check_name(name)
            if name in files or name.endswith(".npy") or name == "weights.safetensors":
                raise ValueError(f"extra file name {name!r} clashes with the model's own files")
            (tmp / name).write_bytes(data)
            files[name] = sha256_file(tmp / name)
        full_card = dict(card)
        if "training" in full_card:
            full_card["training"] = finite_json(full_card["training"])
        full_card["format_version"] = FORMAT_VERSION
        if "created" in full_card:  # a model saved again (e.g. enrolled): when, and with what
            full_card["modified"] = creation_info()
        else:
            full_card["created"] = creation_info()
        full_card["files"] = files
        full_card.pop(CARD_DIGEST, None)
        full_card[CARD_DIGEST] = card_digest(full_card)
        with open(tmp / CARD_NAME, "w", encoding="utf-8") as fh:
            json.dump(full_card, fh, indent=2, sort_keys=True, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        for name in [*files, CARD_NAME]:
            # (some writers create private files)
            os.chmod(tmp / name, file_mode() if kept_file is None else kept_file)
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        os.chmod(tmp, dir_mode() if kept_dir is None else kept_dir)
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            backup.rmdir()
            os.replace(target, backup)
            os.replace(tmp, target)
            for hidden in backup.glob(".*"):  # e.g. .git, .dvc: not ours, kept as they were
                os.replace(hidden, target / hidden.name)  # (if this fails, the backup stays)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the card of a model directory (format version only; see :func:`verify`)."""
    return _read_card_and_digest(path)[0]


def _leftovers(target: Path) -> list[Path]:
    """Hidden folders a killed save of ``target`` leaves beside it: the new model being
    written (``.NAME.tmp-*``) or the previous one being replaced (``.NAME.old-*``)."""
    try:
        return sorted(p for p in target.parent.iterdir()
                      if p.name.startswith((f".{target.name}.tmp-", f".{target.name}.old-")))
    except OSError:
        return []


def _read_card_and_digest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The checked card and the sha256 of its bytes (one read)."""
    folder = Path(path)
    card_path = folder / CARD_NAME
    if not folder.is_dir():
        old = [p for p in _leftovers(folder) if ".old-" in p.name and (p / CARD_NAME).is_file()]
        if old:
            raise ModelFormatError(
                f"{folder}: no such folder, but a save that was replacing it left the previous "
                f"model in {old[-1]}; if no save of it is running, it was killed: rename that "
                f"folder to {folder.name} to use the previous model")
        if folder.exists():
            raise ModelFormatError(f"{folder}: not a model directory (a file, not a folder)")
        partial = [p for p in _leftovers(folder) if ".tmp-" in p.name]
        if partial:
            raise ModelFormatError(
                f"{folder}: no such folder; a save of it left {partial[-1].name} beside it, a "
                "model being written: if no save of it is running, the save was killed and "
                "that folder is incomplete (delete it and save again)")
        raise ModelFormatError(f"{folder}: not a model directory (no such folder)")
    if not card_path.is_file():
        raise ModelFormatError(f"{folder}: not a model directory (no {CARD_NAME})")
    raw = card_path.read_bytes()
    return _parse_card(raw, folder), hashlib.sha256(raw).hexdigest()


def _parse_card(raw: bytes, folder: Path) -> dict[str, Any]:
    """The card of ``folder`` from its bytes, checked (format version, checksum table, digest)."""
    card_path = folder / CARD_NAME
    try:
        card = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{card_path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelFormatError(f"{card_path}: the card must be a JSON object")
    version = card.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{card_path}: missing or invalid 'format_version'")
    if version > FORMAT_VERSION:
        written_by = card.get("created", {}).get("genprint_version", "a newer genprint")
        raise ModelFormatError(
            f"{folder} uses model format version {version} (written by genprint {written_by}); "
            f"this genprint {genprint.__version__} reads format versions up to {FORMAT_VERSION}. "
            "Upgrade genprint to load it."
        )
    if not isinstance(card.get("files"), dict):
        raise ModelFormatError(f"{card_path}: missing the 'files' checksum table")
    if version >= 2 and CARD_DIGEST not in card:
        raise ModelFormatError(f"{card_path}: the card's {CARD_DIGEST} is missing (cards of "
                               "format 2 and later all have one): the card was edited by hand")
    # (cards of format 1, written before the digest, have none and cannot be checked)
    if CARD_DIGEST in card and card[CARD_DIGEST] != card_digest(card):
        raise ModelFormatError(
            f"{card_path}: the card was changed after it was written (its {CARD_DIGEST} does "
            "not match its content), e.g. a threshold or a source name edited by hand; "
            "refusing to load it. Restore the original card, or retrain")
    return card


CARD_DIGEST = "card_digest"
"""Card field holding :func:`card_digest` of the rest of the card."""


def card_digest(card: Mapping[str, Any]) -> str:
    """Hex sha256 of the card's content without its :data:`CARD_DIGEST` field (canonical JSON:
    sorted keys, no spaces), so that any change to a threshold, a source name or a setting in
    ``card.json`` is seen when the model is loaded. It catches edits and damage, not forgery:
    whoever edits a card can recompute it. To pin a model, keep its ``model_sha256``."""
    body = {k: v for k, v in card.items() if k != CARD_DIGEST}
    # ASCII escapes: a path that is not UTF-8 (kept by Python as lone surrogates) is hashed too
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def verify(path: str | os.PathLike[str], card: Mapping[str, Any] | None = None) -> None:
    """Check every file listed in the card against its sha256; refuse extra or missing files."""
    folder = Path(path)
    if card is None:
        _read_consistently(folder)
        return
    try:
        _check_files(folder, card, None)
    except FileNotFoundError as exc:
        raise _missing(folder, exc) from None


def _check_files(folder: Path, card: Mapping[str, Any], handle: int | None) -> dict[str, bytes]:
    """The bytes of every file ``card`` lists, each read once (:func:`_read_file`, through
    ``handle`` when given) and checked against its sha256; extra files are refused.
    ``FileNotFoundError`` escapes (see :func:`_read_consistently`)."""
    listed: dict[str, str] = dict(card["files"])
    data: dict[str, bytes] = {}
    for name, expected in listed.items():
        try:
            _check_name(name)
        except ValueError as exc:  # e.g. '../../etc/passwd' in an edited card
            raise ModelFormatError(f"{folder}: {exc}") from None
        data[name] = _read_file(folder, handle, name)
        if hashlib.sha256(data[name]).hexdigest() != expected:
            raise _Mismatch(
                f"{folder}: {name} does not match its sha256 in {CARD_NAME} "
                "(the file was modified or corrupted; refusing to load it)"
            )
    extra = sorted(
        name for name in os.listdir(folder if handle is None else handle)
        if name != CARD_NAME and name not in listed and not name.startswith(".")
    )
    if extra:
        raise ModelFormatError(
            f"{folder}: unexpected file(s) not covered by {CARD_NAME}: {', '.join(extra)}"
        )
    return data


def _missing(folder: Path, exc: FileNotFoundError) -> ModelFormatError:
    """The error for a file of ``folder`` that is not there (the card, or one it lists)."""
    name = Path(exc.filename or "?").name
    if name == CARD_NAME:
        return ModelFormatError(f"{folder}: not a model directory (no {CARD_NAME})")
    return ModelFormatError(f"{folder}: file {name} listed in {CARD_NAME} is missing")


class _Mismatch(ModelFormatError):
    """A file that does not match the card: damage, or a save that replaced the folder while it
    was being read."""


READ_ATTEMPTS = 3
"""How many times a load reads a model folder that another process keeps replacing."""

SWAP_WAIT = 0.05
"""Seconds a load waits (times the attempt) when the folder is missing while a save's hidden
folders lie beside it: a save swapping the new version in has two renames to make."""


def _read_consistently(folder: Path) -> tuple[dict[str, Any], str, dict[str, bytes]]:
    """The card, the sha256 of its bytes, and the checked bytes of every file it lists, all
    from one version of ``folder``.

    The folder is opened once and its files are read through that handle (where the platform
    allows it: :func:`_open_folder`), so a save that swaps a new version into place meanwhile
    (:func:`write_model_dir`) does not mix the two: the read goes on in the version it started
    in, or, if that one is deleted under it, starts again in the new one (at most
    :data:`READ_ATTEMPTS` times). Each file is hashed from the very bytes that are then
    loaded; one that is not a regular file (a folder, a pipe) is refused, never waited on."""
    for attempt in range(READ_ATTEMPTS):
        try:
            handle = _open_folder(folder)
        except OSError:
            if attempt + 1 < READ_ATTEMPTS and _leftovers(folder):  # between a save's renames?
                time.sleep(SWAP_WAIT * (attempt + 1))
                continue
            _read_card_and_digest(folder)  # raises its explanation
            raise ModelFormatError(f"{folder}: cannot be opened") from None
        try:
            opened = os.fstat(handle) if handle is not None else os.stat(folder)
            try:
                raw = _read_file(folder, handle, CARD_NAME)
                card = _parse_card(raw, folder)
                return card, hashlib.sha256(raw).hexdigest(), _check_files(folder, card, handle)
            except (FileNotFoundError, _Mismatch) as exc:
                if attempt + 1 < READ_ATTEMPTS and _replaced(folder, opened):
                    continue  # a save swapped the folder: read the new version
                if isinstance(exc, _Mismatch):
                    raise
                raise _missing(folder, exc) from None
        finally:
            if handle is not None:
                os.close(handle)
    raise ModelFormatError(f"{folder}: replaced by another process {READ_ATTEMPTS} times while "
                           "it was being read; try again once it is no longer being saved")


def _open_folder(folder: Path) -> int | None:
    """A handle on ``folder`` to read its files through, or None where the platform cannot
    open a folder so (e.g. Windows): the files are then read by path."""
    if os.open not in os.supports_dir_fd or os.listdir not in os.supports_fd:
        os.stat(folder)  # (a missing folder raises, as opening it would)
        return None
    return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _read_file(folder: Path, handle: int | None, name: str) -> bytes:
    """The bytes of ``folder/name`` (through ``handle`` when given). ``FileNotFoundError``
    escapes; anything else that stops the read, or a file that is not a regular one, is a
    :class:`ModelFormatError`. Opened without blocking, so a pipe put there cannot hang the
    load."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = (os.open(name, flags, dir_fd=handle) if handle is not None
              else os.open(folder / name, flags))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ModelFormatError(f"{folder}: {name} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise
    except OSError as exc:  # e.g. a folder where Windows cannot open one, no permission
        raise ModelFormatError(f"{folder}: {name} cannot be read "
                               f"({exc.strerror or type(exc).__name__})") from None


def _replaced(folder: Path, opened: os.stat_result) -> bool:
    """Whether ``folder`` is no longer the folder that was opened (a save swapped it)."""
    try:
        now = os.stat(folder)
    except OSError:
        return True
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino)


def read_model_dir(path: str | os.PathLike[str]) -> ModelContents:
    """Load a model directory after checking its format version and every checksum (one
    consistent version of it, even while another process saves it: see
    :func:`_read_consistently`)."""
    from safetensors.numpy import load as load_safetensors

    folder = Path(path)
    card, card_sha256, data = _read_consistently(folder)
    contents = ModelContents(card=card, path=folder, card_sha256=card_sha256)
    for name, raw in data.items():
        try:
            if name == "weights.safetensors":
                contents.tensors = load_safetensors(raw)
            elif name.endswith(".npy"):
                contents.arrays[name[: -len(".npy")]] = np.load(io.BytesIO(raw),
                                                                allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - damaged though its checksum matches
            raise ModelFormatError(f"{folder / name}: cannot be read ({type(exc).__name__}: "
                                   f"{exc})") from None
    return contents
