"""Receptive fields of registered models at their default size, cached on disk for ``cnnzoo list``.

Tracing all ~50 zoo nets takes several seconds; a listing should not. Each entry is keyed by a hash of
the model's family source file, the tracer's source, the input size and torch's version, so changing any recomputes
it: the numbers always come from the trace, never from a table. Cache folder: :func:`cnnzoo.utils.diskcache.cache_dir`
(``$CNNZOO_CACHE``, else ``$XDG_CACHE_HOME/cnnzoo``, else ``~/.cache/cnnzoo``); a cache that cannot be written
is simply skipped.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

from .. import __version__
from ..utils.diskcache import cache_dir, read_json, write_json

__all__ = ["cache_dir", "registered_rf"]

_FILE = "rf-v1.json"


@functools.cache
def _file_hash(path: str) -> str:
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "?"


def _key(name: str) -> str:
    import torch

    from ..models.registry import model_info

    info = model_info(name)
    family = getattr(sys.modules.get(info.fn.__module__), "__file__", "") or ""
    here = Path(__file__).parent
    parts = [__version__, torch.__version__, name, "x".join(map(str, info.input_size)), _file_hash(family),
             _file_hash(str(here / "receptive_field.py")), _file_hash(str(here / "_common.py"))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def _read() -> dict:
    data = read_json(_FILE)
    return data if isinstance(data, dict) else {}


def _write(data: dict) -> None:
    write_json(_FILE, data)  # atomic: concurrent writers never leave a torn file


def registered_rf(names: list[str]) -> dict[str, dict | None]:
    """``{name: {"rf": r, "jump": j} or None}`` at each model's default input size (None: not traceable)."""
    from .receptive_field import receptive_field

    cache = _read()
    out: dict[str, dict | None] = {}
    changed = False
    for name in names:
        key = _key(name)
        hit = cache.get(name)
        if isinstance(hit, dict) and hit.get("key") == key:
            out[name] = hit.get("value")
            continue
        try:
            r = receptive_field(name)
            value: dict | None = {"rf": r.rf, "jump": r.jump}
        except Exception:  # a net the tracer cannot follow: an empty cell, never a failed listing
            value = None
        out[name] = value
        cache[name] = {"key": key, "value": value}
        changed = True
    if changed:
        _write(cache)
    return out
