"""The in-memory image set every loader returns (where data sets and caches live: :mod:`cnnzoo.utils.paths`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..utils.paths import DEFAULT_ROOT, cache_dir, data_root, downloads_allowed
from .arrays import take_rows

__all__ = ["DEFAULT_ROOT", "ImageSet", "cache_dir", "data_root", "downloads_allowed"]


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
    mapped: bool = False  # images are a memory map of a file (a decoded folder): never copy them whole

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
        return replace(self, images=take_rows(self.images, idx), labels=self.labels[idx], paths=paths)

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
