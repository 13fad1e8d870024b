"""When the operating system says no (a full disk, no permission, a read-only file system): one line.

Every command passes through :func:`cnnzoo.cli.main`, which turns any :class:`OSError` that escapes into
:func:`os_error_line` and exit status 2: what failed, on which path, and how much space is left there (a
full disk, not a ``SafetensorError`` traceback). Writes that need cleanup do it themselves (temp file +
rename), so the previous checkpoint or output stays intact. Torch-free, so the CLI can import it cheaply.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

_ADVICE = {
    errno.ENOSPC: "free some space there or write elsewhere (--out)",
    errno.EDQUOT: "free some of your quota or write elsewhere (--out)",
    errno.EROFS: "the file system is read-only: write elsewhere (--out)",
    errno.EACCES: "you lack permission there: fix it or write elsewhere (--out)",
    errno.EPERM: "the operation is not permitted there: write elsewhere (--out)",
    errno.EFBIG: "the file is too large for that file system: write elsewhere (--out)",
    errno.EMFILE: "too many open files: raise `ulimit -n`",
    errno.ENAMETOOLONG: "shorten the path",
}


def safe_path(p: object) -> str:
    """A path as printable text: bytes and undecodable names (surrogates from ``os.fsdecode``) escaped,
    never a ``UnicodeEncodeError`` when printed on any terminal."""
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    s = str(p)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def free_space(path: str | os.PathLike | None) -> int | None:
    """Bytes free on the file system holding ``path`` (its nearest existing parent), or None if unknown."""
    if not path:
        return None
    p = Path(os.fsdecode(path)).absolute()
    for q in (p, *p.parents):
        try:
            return shutil.disk_usage(q).free
        except OSError:
            continue
    return None


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def os_error_line(e: OSError) -> str:
    """One line for an :class:`OSError`: the system's words, the path, the space left there, what to do."""
    where = e.filename if e.filename is not None else None
    what = e.strerror or str(e) or type(e).__name__
    line = f"{what}: {safe_path(where)}" if where is not None else what
    if e.filename2 is not None:
        line += f" -> {safe_path(e.filename2)}"
    free = free_space(where)
    if free is not None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, None):
        line += f" ({_human(free)} free there)"
    advice = _ADVICE.get(e.errno)
    return f"{line}; {advice}" if advice else line


def as_os_error(e: BaseException, path: str | os.PathLike) -> OSError | None:
    """Libraries that report a failed write in their own type (safetensors' ``SafetensorError: No space left
    on device``) as the :class:`OSError` it is, with the path; ``None`` when it is not an I/O failure."""
    msg = str(e)
    for code, words in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "quota exceeded"),
                        (errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
                        (errno.EIO, "Input/output error")):
        if words.lower() in msg.lower():
            return OSError(code, os.strerror(code), os.fspath(path))
    return None


def _escape_error(e: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a name's undecodable byte (surrogate ``\\udcXX`` from ``os.fsdecode``) prints as
    ``\\xXX``, the byte it was; any other character the stream cannot encode as ``\\uXXXX``."""
    if not isinstance(e, UnicodeEncodeError):
        raise e
    out = []
    for c in e.object[e.start:e.end]:
        o = ord(c)
        out.append(f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else c.encode("ascii", "backslashreplace").decode())
    return "".join(out), e.end


ESCAPE = "cnnzoo.escape"


def register_escape() -> str:
    """Register :data:`ESCAPE` (idempotent) and return its name, for ``stream.reconfigure(errors=...)``."""
    import codecs

    try:
        codecs.lookup_error(ESCAPE)
    except LookupError:
        codecs.register_error(ESCAPE, _escape_error)
    return ESCAPE
