"""The one output-path check and the one atomic writer that every cnnzoo command uses.

A writer that puts its data in a temporary file and renames it onto the target without looking turns a FIFO
or a device node (``/dev/null``) at the target into a regular file, a symlink into a file while the file it
points to stays unchanged, and replaces a user's own file unasked. Here:

- :func:`check_output_path` runs before any work: it refuses an empty name, a folder and anything that is not
  a regular file (device, FIFO, socket) in one line; follows a symlink to its target (the link stays, the
  target is written); and refuses an existing file unless ``overwrite`` is given or cnnzoo wrote that file
  earlier in this process.
- :func:`atomic_write` runs the same check again at write time, writes a temporary file beside the target
  (created with the umask's permissions, or the replaced file's own), flushes it to disk and renames it into
  place, so a reader sees the old file or the new one, never half of one. The temporary file is removed on
  any failure.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import CnnzooError

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))
# files this process wrote with atomic_write, as renamed into place: device, inode, modification time and size
# (a file deleted and made again may reuse the inode; its time and size tell it apart)
_WRITTEN: set[tuple[int, int, int, int]] = set()


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, in words (``a FIFO``), or None for a regular file: the one table that readers
    (:func:`cnnzoo.data.images.open_regular`) and writers (:func:`check_output_path`) both say it with."""
    return next((word for test, word in _KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def written_here(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file this process wrote with :func:`atomic_write` (and nobody replaced since)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _identity(st) in _WRITTEN


def check_output_path(path: str | os.PathLike, *, overwrite: bool, what: str = "output") -> Path:
    """The file to write for the output ``path`` (a symlink's target), checked before any work is done.

    One-line :class:`CnnzooError` when ``path`` is empty, a folder, a device, a FIFO or a socket, a symlink to
    one of those or a dangling symlink, or an existing file that ``overwrite`` does not allow replacing and this
    process did not write. ``what`` names the output in the message (e.g. ``--csv``)."""
    from .oserr import safe_path

    if not str(path).strip():
        raise CnnzooError(f"{what} is empty: give a file name")
    p = Path(path).expanduser()
    shown = safe_path(p)
    target = Path(os.path.realpath(p)) if p.is_symlink() else p
    if p.is_symlink() and not target.exists() and target.is_symlink():  # a link loop
        raise CnnzooError(f"{what} {shown!r} is a symlink loop: give a file name")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if p.is_symlink():
            raise CnnzooError(f"{what} {shown!r} is a symlink to {safe_path(target)!r}, which does not exist: "
                              f"give the target's path or create it first") from None
        return target
    except OSError:  # no permission to look: the write itself will say why
        return target
    kind = file_kind(st.st_mode)
    via = f" (a symlink to {safe_path(target)!r})" if target != p else ""
    if kind == "a folder":
        raise CnnzooError(f"{what} {shown!r}{via} is a folder, not a file name: give a file name inside it, "
                          f"e.g. {safe_path(p / 'out')!r}")
    if kind is not None:
        raise CnnzooError(f"{what} {shown!r}{via} is {kind}, not a regular file: cnnzoo writes only regular "
                          f"files, give another path")
    if not overwrite and _identity(st) not in _WRITTEN:
        raise CnnzooError(f"{what} {shown!r}{via} already exists and was not written by this cnnzoo run: "
                          f"pass --overwrite to replace it, or give another path")
    return target


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object], *, overwrite: bool = False,
                 what: str = "output") -> Path:
    """Write ``path`` atomically: ``write_fn(tmp)`` writes a temporary file beside the target, which is then
    renamed onto it; returns the path written (a symlink's target). Checked as by :func:`check_output_path`
    first; the temporary file never outlives a failure."""
    target = check_output_path(path, overwrite=overwrite, what=what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_tmp(target)
    try:
        write_fn(tmp)
        try:  # keep the replaced file's permissions (a user's chmod survives a rewrite)
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            pass
        _fsync(tmp)
        check_output_path(target, overwrite=overwrite, what=what)  # a FIFO made meanwhile is still refused
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = os.stat(target)
    _WRITTEN.add(_identity(st))
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes, **kw) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), **kw)


def atomic_write_text(path: str | os.PathLike, text: str, **kw) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8 (an undecodable file name in it is written as its own bytes)."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), **kw)


def _create_tmp(target: Path) -> Path:
    """A new empty file beside ``target`` with the umask's permissions (``O_EXCL``: never someone else's)."""
    stem = target.name[:120]
    for i in range(100):
        tmp = target.with_name(f".tmp-{os.getpid()}-{i}-{stem}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise CnnzooError(f"cannot create a temporary file beside {target}: remove its .tmp-* files")


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk, so a crash after the rename never leaves an empty file in its place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a file system without fsync (some FUSE mounts): the rename is still atomic
        pass
    finally:
        os.close(fd)
