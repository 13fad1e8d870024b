"""Small JSON caches on disk, keyed by the code that computed them (torch-free: the CLI reads them at once).

Folder: ``$CNNZOO_CACHE``, else ``$XDG_CACHE_HOME/cnnzoo``, else ``~/.cache/cnnzoo``. What lives here: the
receptive-field traces behind ``cnnzoo list`` (``rf-v1.json``, ~5 KB) and the listing itself (``list-v1.json``,
~26 KB). (Decoded image folders are cached elsewhere: :func:`cnnzoo.data.cache_dir`.) Deleting either file
is always safe. A cache that cannot be read or written is simply skipped.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    if os.environ.get("CNNZOO_CACHE"):
        return Path(os.environ["CNNZOO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnzoo"


def read_json(name: str):
    """The JSON value stored as ``name`` in the cache folder, or None (missing, unreadable, torn)."""
    try:
        return json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def write_json(name: str, data) -> None:
    """Store ``data`` as ``name`` atomically (concurrent writers never leave a torn file); errors are skipped."""
    from ..errors import CnnzooError
    from .files import atomic_write_text

    try:  # a name of cnnzoo's own in its own cache folder; a FIFO or folder there is skipped, not replaced
        atomic_write_text(cache_dir() / name, json.dumps(data), overwrite=True, what="cache file")
    except (OSError, CnnzooError):
        pass


def _version_file(package: str) -> bytes:
    """``package/version.py`` of an installed package, read without importing it (b"" if not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return b""
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            return (Path(folder) / "version.py").read_bytes()
        except OSError:
            continue
    return b""


@functools.cache
def code_fingerprint() -> str:
    """A hash of every source file of this package, the Python version and torch's and torchvision's version
    files: anything cached under it is recomputed after an edit, an upgrade or a switch of torch build."""
    h = hashlib.sha1()
    h.update(sys.version.encode())
    for path in sorted(_PACKAGE.rglob("*")):
        if "__pycache__" in path.parts or path.suffix not in (".py", ".json", ".csv", ".txt") or not path.is_file():
            continue
        h.update(str(path.relative_to(_PACKAGE)).encode())
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"?")
    for package in ("torch", "torchvision"):
        h.update(package.encode() + _version_file(package))
    return h.hexdigest()[:20]
