"""``cnnzoo cache [--clear WHAT]``: where cnnzoo's caches and downloaded weights are, how big, and clearing them.

Three kinds of files build up on disk:
- decoded image folders (one uint8 array per folder, split and image size, so the next run skips JPEG
  decoding): ``$CNNZOO_CACHE``, else ``<data root>/.cnnzoo-cache`` when the data root is writable, else
  ``~/.cache/cnnzoo/decoded``. These are the big ones: a folder's images at the size it was trained at.
- small JSON caches behind ``cnnzoo list`` (``$CNNZOO_CACHE``, else ``$XDG_CACHE_HOME/cnnzoo``).
- published ImageNet weights, kept by torch hub (``$TORCH_HOME/hub/checkpoints``) and Hugging Face
  (``$HF_HOME/hub``) for every library that uses them: listed, and cleared only when asked by name.
Every cached file is rebuilt on demand, so clearing is always safe. ``--clear`` removes only files cnnzoo
wrote or fetched for zoo models (:func:`owned_files`), never a folder and never another library's or the user's
entries in the same folders.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

ORDER = 90
KINDS = ("decoded", "listing", "weights", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show where caches and downloaded weights are and their size; clear them",
                       description="Show cnnzoo's cache folders and their size. Every cached file is rebuilt "
                                   "when needed, so clearing is safe.")
    p.add_argument("--clear", choices=KINDS, default=None, metavar="WHAT",
                   help="delete one kind of cnnzoo's own files: decoded (the NAME-SPLIT-SIZE-HASH.npy/.json "
                        "decode entries), listing (list-vN.json and rf-vN.json), weights (the torchvision files "
                        "and Hugging Face timm/ repos of the zoo's nets' published weights), all (the three). "
                        "Folders, other files and other models' weights stay. Default: only show")
    p.add_argument("--data-dir", default=None,
                   help="the data root whose decode cache to show (default $CNNZOO_DATA, else ~/.cache/cnnzoo)")
    p.set_defaults(func=run)


def _decoded_dirs(data_dir: str | None) -> list[Path]:
    """Where this data root's folders are decoded to (:func:`cnnzoo.utils.paths.cache_dir`), and the fallback."""
    from ..errors import CnnzooError
    from ..utils.paths import DEFAULT_ROOT, cache_dir

    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise CnnzooError(f"--data-dir {data_dir!r} is not a folder: give the data root whose decode cache to "
                          f"show (default $CNNZOO_DATA)")
    root = Path(data_dir or os.environ.get("CNNZOO_DATA") or DEFAULT_ROOT).expanduser()
    return list(dict.fromkeys([cache_dir(root), cache_dir(None)]))


_DECODED = re.compile(r"(\.tmp-\d+-)?.+-(train|test)-\d+-[0-9a-f]+\.(npy|json)")
_LISTING = re.compile(r"(list|rf)-v\d+\.json")


def _zoo_weight_names() -> tuple[set[str], set[str]]:
    """(torchvision file names, Hugging Face repo folder prefixes) of the published weights of the zoo's nets."""
    from ..models.hub import weights_source
    from ..models.registry import list_models

    files: set[str] = set()
    repos: set[str] = set()
    for name in list_models():
        src = weights_source(name)
        if src is None:
            continue
        if src[0] == "torchvision":
            from torchvision.models import get_model_weights

            files |= {os.path.basename(w.url.split("?")[0]) for w in get_model_weights(src[1])}
        else:
            repos.add(f"models--timm--{src[1]}.")
    return files, repos


def owned_files(kind: str, data_dir: str | None = None) -> list[Path]:
    """The files ``cnnzoo cache --clear KIND`` removes: only those cnnzoo wrote (decode entries, the listing
    caches) or its loaders fetched for zoo models (torchvision weight files by their published names, Hugging
    Face ``timm/ARCH.TAG`` repo folders of the zoo's timm nets)."""
    out: list[Path] = []
    if kind == "decoded":
        for d in _decoded_dirs(data_dir):
            out += [p for p in _files(d) if _DECODED.fullmatch(p.name)]
    elif kind == "listing":
        from ..utils.diskcache import cache_dir

        out += [p for p in _files(cache_dir()) if _LISTING.fullmatch(p.name)]
    elif kind == "weights":
        tv, hf = _weights_dirs()
        files, repos = _zoo_weight_names()
        out += [p for p in _files(tv) if p.name in files]
        out += [p for p in (sorted(hf.iterdir()) if hf.is_dir() else []) if p.is_dir() and not p.is_symlink()
                and p.name.startswith(tuple(repos))]
    return out


def _files(folder: Path) -> list[Path]:
    """Regular files directly in ``folder`` (no symlinks followed, nothing below)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())


def _weights_dirs() -> list[Path]:
    torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "torch"
    hf_home = os.environ.get("HF_HUB_CACHE") or Path(
        os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface") / "hub"
    return [Path(torch_home).expanduser() / "hub" / "checkpoints", Path(hf_home).expanduser()]


def _listing_files() -> list[Path]:
    return owned_files("listing")


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
    import shutil

    entries = cache_entries(args.data_dir)
    for kind in entries:
        if args.clear not in (kind, "all"):
            continue
        gone = owned_files(kind, args.data_dir)
        for p in gone:  # a Hugging Face repo folder is the one folder removed: timm's download of a zoo net
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        where = ", ".join(str(p) for p in entries[kind]) or "nothing there"
        print(f"cleared {kind}: {len(gone)} file(s) cnnzoo wrote or fetched, in {where}")
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
