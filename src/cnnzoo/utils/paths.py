"""Where data sets, the decode cache and downloads live on disk: torch-free, so ``cnnzoo cache`` answers at once.

The data root: ``--data-dir`` > ``$CNNZOO_DATA`` > ``~/.cache/cnnzoo``. Decoded image folders: ``$CNNZOO_CACHE``,
else ``<data root>/.cnnzoo-cache`` when the root may be written, else ``~/.cache/cnnzoo/decoded``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CnnzooError

DEFAULT_ROOT = Path("~/.cache/cnnzoo")


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` (``--data-dir``) > ``$CNNZOO_DATA`` > ``~/.cache/cnnzoo``."""
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise CnnzooError(
                f"data directory {str(root)!r} does not exist: create it (each data set goes in its own "
                f"folder, e.g. {root / 'mnist'}/train-images-idx3-ubyte.gz) or pass an existing --data-dir")
        return root.resolve()
    env = os.environ.get("CNNZOO_DATA")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():  # as for --data-dir: never create it (and half a download) on the way
            raise CnnzooError(
                f"$CNNZOO_DATA is {env!r}, which is not an existing folder: create it, point it at the folder "
                f"holding your data sets (e.g. with mnist/ inside), or unset it")
        return root.resolve()
    return DEFAULT_ROOT.expanduser()


def cache_dir(root: Path | None = None) -> Path:
    """Where decoded, resized folder images are cached: ``$CNNZOO_CACHE``, else ``<root>/.cnnzoo-cache``
    if the data root is writable, else ``~/.cache/cnnzoo/decoded`` (the shared data root is read-only)."""
    env = os.environ.get("CNNZOO_CACHE")
    if env:
        return Path(env).expanduser()
    if root is not None and root.is_dir() and _writable(root):
        return root / ".cnnzoo-cache"
    return DEFAULT_ROOT.expanduser() / "decoded"


def _writable(folder: Path) -> bool:
    """Writable by its permission bits too: root passes ``os.access`` on a folder marked read-only (a shared
    data set), and a cache must not be written into a folder its owner marked so."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def downloads_allowed() -> bool:
    """Missing named data sets are downloaded unless ``$CNNZOO_OFFLINE`` is set (tests set it)."""
    return os.environ.get("CNNZOO_OFFLINE", "").strip().lower() in ("", "0", "false", "no")
