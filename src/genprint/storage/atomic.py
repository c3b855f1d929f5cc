"""Writing output files atomically, with the permissions the user's umask asks for.

Every file genprint writes for the user (results tables, reports, model files) is first written
to a temporary sibling and renamed into place only when complete, so an interrupted run never
leaves a half-written file under the final name. The file's bytes are flushed to the disk
before the rename, and the folder's entry after it, so that a power cut or a crash of the machine
leaves either the old file or the complete new one, not an empty file under the final name.
Temporary files are created private (mode 0600); before the rename they get the mode a plainly
created file would have (0666 minus the umask), so outputs are not unexpectedly unreadable to
the user's group.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read once; reading it means setting it, hence the lock)."""
    global _UMASK
    with _UMASK_LOCK:
        if _UMASK is None:
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
        return _UMASK


def file_mode() -> int:
    """Mode of a newly created file under the process umask (e.g. 0644 with umask 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode of a newly created directory under the process umask (e.g. 0755 with umask 022)."""
    return 0o777 & ~_umask()


def kept_mode(path: str | os.PathLike[str]) -> int | None:
    """The permission bits of an existing ``path`` (followed if a link), or None: what a
    replacement keeps, so that replacing a private file or model does not make it readable."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


_NO_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF)
"""``os.fsync`` errors of file systems or descriptors that cannot flush: passed over."""


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush the bytes of the file at ``path`` to the disk (``os.fsync``). The file is opened
    for writing where it can be (Windows flushes only such descriptors), else for reading; a
    file system that cannot flush is passed over. Call it before taking write or read
    permission away from the file."""
    fd = None
    for flags in (os.O_RDWR, os.O_WRONLY, os.O_RDONLY):
        try:
            fd = os.open(path, flags)
            break
        except PermissionError:
            continue
    if fd is None:  # no access of any kind: nothing this process wrote can be flushed here
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_FSYNC:
            raise
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk; passed over where the platform
    or file system cannot open or flush a folder (Windows, some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: str | os.PathLike[str], target: str | os.PathLike[str],
                    mode: int | None = None) -> None:
    """Rename the complete file ``tmp`` to ``target``, its bytes flushed before (and then its
    permission bits set to ``mode``, if given) and the rename flushed after (see the module's
    docstring)."""
    fsync_file(tmp)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, target)
    fsync_dir(Path(target).parent)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, give it the
    mode of the file it replaces (else the umask's file mode) and rename it to ``path``. On
    error it is removed and ``path`` is left as it was."""
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a directory, not a file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        kept = kept_mode(out)
        replace_durably(tmp, out, file_mode() if kept is None else kept)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Check, before the work whose output it will hold, that a file can be written at
    ``path``: it is not a folder, its parent is (or can be made) a folder we can write in.
    Raises ``OSError`` with the reason; creates the parent folder."""
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give a file name")
    check_parent_writable(out)
    return out


def enclosing_model_dir(path: str | os.PathLike[str]) -> Path | None:
    """The genprint model folder that ``path`` would be written inside (a folder above it
    holding a valid model card), or None. ``path`` itself does not count: a model folder may
    be replaced as a whole."""
    from genprint.storage.model_dir import CARD_NAME, ModelFormatError, read_card

    here = Path(os.path.realpath(Path(path).parent))
    for folder in (here, *here.parents):
        if (folder / CARD_NAME).is_file():
            try:
                read_card(folder)
            except (ModelFormatError, OSError, ValueError):  # not a model's card
                continue
            return folder
    return None


def check_parent_writable(out: Path) -> None:
    """Check that ``out``'s parent is (or can be made) a folder we can write in, by creating
    and removing a temporary file there; ``OSError`` with the reason otherwise."""
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"cannot write {out}: {parent} is not a folder")
    model = enclosing_model_dir(out)
    if model is not None:
        raise IsADirectoryError(f"cannot write {out}: it is inside the model folder {model}, "
                                "whose files are checked on load (an extra or replaced file "
                                "would make the model refuse to load); write outside it")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.check-", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OSError(f"cannot write {out}: {exc.strerror or exc}") from None


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
