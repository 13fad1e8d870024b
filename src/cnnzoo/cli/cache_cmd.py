"""``cnnzoo cache [--clear WHAT]``: where cnnzoo's caches and downloaded weights are, how big, and clearing them.

Three kinds of files build up on disk:
- decoded image folders (one uint8 array per folder, split and image size, so the next run skips JPEG
  decoding): ``$CNNZOO_CACHE``, else ``<data root>/.cnnzoo-cache`` when the data root is writable, else
  ``~/.cache/cnnzoo/decoded``. These are the big ones: a folder's images at the size it was trained at.
- small JSON caches behind ``cnnzoo list`` (``$CNNZOO_CACHE``, else ``$XDG_CACHE_HOME/cnnzoo``).
- published ImageNet weights, kept by torch hub (``$TORCH_HOME/hub/checkpoints``) and Hugging Face
  (``$HF_HOME/hub``) for every library that uses them: listed, and cleared only when asked by name.
Every cached file is rebuilt on demand, so clearing is always safe.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

ORDER = 90
KINDS = ("decoded", "listing", "weights", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show where caches and downloaded weights are and their size; clear them",
                       description="Show cnnzoo's cache folders and their size. Every cached file is rebuilt "
                                   "when needed, so clearing is safe.")
    p.add_argument("--clear", choices=KINDS, default=None, metavar="WHAT",
                   help="delete one kind: decoded (decoded image folders), listing (cnnzoo list's JSON), "
                        "weights (torch hub / Hugging Face downloads, shared with torchvision and timm), "
                        "all (the three); default: only show")
    p.add_argument("--data-dir", default=None,
                   help="the data root whose decode cache to show (default $CNNZOO_DATA, else ~/.cache/cnnzoo)")
    p.set_defaults(func=run)


def _decoded_dirs(data_dir: str | None) -> list[Path]:
    """Where this data root's folders are decoded to (:func:`cnnzoo.paths.cache_dir`), and the fallback."""
    from ..paths import DEFAULT_ROOT, cache_dir

    root = Path(data_dir or os.environ.get("CNNZOO_DATA") or DEFAULT_ROOT).expanduser()
    return list(dict.fromkeys([cache_dir(root), cache_dir(None)]))


def _weights_dirs() -> list[Path]:
    torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "torch"
    hf_home = os.environ.get("HF_HUB_CACHE") or Path(
        os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface") / "hub"
    return [Path(torch_home).expanduser() / "hub" / "checkpoints", Path(hf_home).expanduser()]


def _listing_files() -> list[Path]:
    from ..diskcache import cache_dir

    folder = cache_dir()
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def cache_entries(data_dir: str | None = None) -> dict[str, list[Path]]:
    """Paths per kind (folders, or the listing's files), existing or not."""
    return {"decoded": _decoded_dirs(data_dir), "listing": _listing_files(), "weights": _weights_dirs()}


def run(args: argparse.Namespace) -> int:
    entries = cache_entries(args.data_dir)
    for kind, paths in entries.items():
        if args.clear not in (kind, "all"):
            continue
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.is_file():
                p.unlink()
        print(f"cleared {kind}: {', '.join(str(p) for p in paths) or 'nothing there'}")
    if args.clear:
        return 0
    for kind, paths in entries.items():
        if not paths:
            print(f"{kind:8}  {'0 B':>9}  (none yet)")
        for p in paths:
            state = _human(_size(p)) if p.exists() else "-"
            print(f"{kind:8}  {state:>9}  {p}")
    print("clear with: cnnzoo cache --clear decoded|listing|weights|all (rebuilt or re-downloaded when needed)")
    return 0
