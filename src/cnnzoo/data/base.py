"""The in-memory image set every loader returns, and where data sets and caches live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

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


@dataclass
class ImageSet:
    """A labelled image set held as one uint8 tensor, the form the training engine wants.

    ``images`` is ``(N, C, H, W)`` uint8 (for large folders a copy-on-write memory map of the decode cache,
    so it pages in lazily); ``labels`` int64 ``(N,)``. ``mean``/``std`` are per channel in [0, 1] and are
    the *training* split's, so both splits normalise the same way. ``hflip`` says whether a horizontal flip
    is a label-preserving augmentation (not for digits). ``skipped`` lists unreadable files as
    ``(path, reason)``; ``ignored`` files without an image extension.
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str
    hflip: bool = True
    source: str = ""
    paths: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("one label per image expected")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def img_size(self) -> int:
        """Side of the (square) stored images."""
        return int(self.images.shape[-1])

    def subset(self, index: Tensor | list[int] | slice) -> ImageSet:
        """The images at ``index`` (e.g. a seeded random subset for a quick run)."""
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(index, dtype=torch.long)
        paths = [self.paths[i] for i in idx.tolist()] if self.paths is not None else None
        return replace(self, images=self.images[idx], labels=self.labels[idx], paths=paths)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def report(self, max_paths: int = 10) -> str:
        """A short, human report of what was skipped while reading (empty string if nothing was)."""
        lines = []
        if self.skipped:
            lines.append(f"{self.name} {self.split}: skipped {len(self.skipped)} unreadable image file(s):")
            lines += [f"  {p}: {why}" for p, why in self.skipped[:max_paths]]
            if len(self.skipped) > max_paths:
                lines.append(f"  ... and {len(self.skipped) - max_paths} more")
        if self.ignored:
            lines.append(f"{self.name} {self.split}: ignored {len(self.ignored)} file(s) without an image "
                         f"extension (e.g. {self.ignored[0]})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (f"ImageSet({self.name!r}, split={self.split!r}, n={len(self)}, shape={c}x{h}x{w}, "
                f"classes={self.num_classes}, skipped={len(self.skipped)})")
