"""Training batches from a uint8 data set on the device: the epoch's plan and the batch preparation.

:func:`epoch_plan` draws an epoch's sample order, crop offsets and flips on the CPU from ``(seed, epoch)``, so
the same seed gives the same run on any device, in one process or several, and a resumed run continues
exactly. :class:`BatchPrep` turns a uint8 batch into the model's float input (crop, flip, normalise, resize,
memory format) with tensor ops on whole batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CnnzooError
from . import ImageSet
from .augment import CropFlipTable, crop_flip, normalize, random_resized_crop, sample_crop_boxes

TABLE_MAX_BYTES = 2 << 30  # a CropFlipTable up to 2 GiB (CIFAR-10/100: 384 MB, MNIST: 107 MB)


class BatchPrep:
    """uint8 batch -> augmented, normalised float batch at the model's size and channel count."""

    def __init__(self, data: ImageSet, img_size: int, in_chans: int, device: torch.device, pad: int,
                 hflip: bool, channels_last: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        c = data.in_chans
        if c != in_chans and not (c == 1 and in_chans == 3):
            raise CnnzooError(f"the model takes {in_chans}-channel images but {data.name} has {c} channels: "
                              f"train a model with in_chans={c} or use a {in_chans}-channel data set")
        self.expand = c == 1 and in_chans == 3  # grey data into an RGB net (e.g. ImageNet weights): repeat
        self.mean = torch.tensor(mean[:c], dtype=torch.float32, device=device)
        self.std = torch.tensor(std[:c], dtype=torch.float32, device=device)
        self.native, self.size, self.pad, self.hflip = data.img_size, img_size, pad, hflip
        self.channels_last, self.device = channels_last, device
        self.mapped = data.mapped  # a memory-mapped folder: gather per batch, never lay the whole set out again
        self.table: CropFlipTable | None = None
        self._table_of: Tensor | None = None

    def build_table(self, images: Tensor, max_bytes: int = TABLE_MAX_BYTES) -> bool:
        """Lay ``images`` out as a :class:`CropFlipTable` for :meth:`sample` if it takes at most ``max_bytes``
        (the small in-memory data sets; a large memory-mapped folder keeps the per-batch gather)."""
        if (self.pad == 0 and not self.hflip) or self.mapped:
            return False
        if CropFlipTable.nbytes_for(images, self.pad, self.hflip) > max_bytes:
            return False
        self.table, self._table_of = CropFlipTable(images, self.pad, self.hflip), images
        return True

    def sample(self, images: Tensor, idx: Tensor, dy: Tensor, dx: Tensor, flip: Tensor,
               boxes: Tensor | None = None) -> Tensor:
        """The training batch ``images[idx]``, cropped, flipped, normalised: from the table when one was built
        for ``images``, else index + :func:`crop_flip` (the same bytes either way); with ``boxes`` (from
        :func:`epoch_boxes`) random-resized crops of those boxes instead."""
        if boxes is not None:
            x = normalize(self._gather(images, idx), self.mean, self.std)
            x = random_resized_crop(x, self.size, boxes=boxes, flip=flip if self.hflip else None)
            if self.expand:
                x = x.expand(-1, 3, -1, -1)
            return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.table is not None and images is self._table_of:
            return self._finish(self.table(idx, dy, dx, flip if self.hflip else None))
        return self(self._gather(images, idx), dy, dx, flip)

    def _gather(self, images: Tensor, idx: Tensor) -> Tensor:
        """``images[idx]`` on the model's device; a set kept on the CPU (memory-mapped) is gathered there and
        sent over from pinned memory."""
        if images.device == idx.device:
            return images.index_select(0, idx)
        x = images.index_select(0, idx.to(images.device))
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def __call__(self, x: Tensor, dy: Tensor | None = None, dx: Tensor | None = None,
                 flip: Tensor | None = None) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if dy is not None and dx is not None:
            x = crop_flip(x, dy, dx, flip if self.hflip else None, self.pad)
        return self._finish(x)

    def _finish(self, x: Tensor) -> Tensor:
        x = normalize(x, self.mean, self.std)
        if self.expand:
            x = x.expand(-1, 3, -1, -1)
        if self.size != self.native:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=self.size < self.native)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def epoch_plan(seed: int, epoch: int, n: int, pad: int, hflip: bool,
               device: torch.device, flip: str = "random") -> tuple[Tensor, ...]:
    """The epoch's sample order ``perm``, and the crop offsets and flips of its positions (those of images
    ``perm``), drawn on the CPU from ``(seed, epoch)``; ``flip="alternate"``: :func:`alternating_flips`
    instead of a fresh draw."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flips = torch.rand(n, generator=g) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    if hflip and flip == "alternate":
        flips = alternating_flips(seed, epoch, n).index_select(0, perm)
    return tuple(t.to(device, non_blocking=True) for t in (perm, dy, dx, flips))


def alternating_flips(seed: int, epoch: int, n: int) -> Tensor:
    """airbench's alternating flip: image ``i`` is flipped in epoch 0 with probability 1/2 (a draw from
    ``seed`` alone, its own stream) and from then on in every other epoch, i.e. ``first[i] xor (epoch odd)``:
    every image is seen both ways in any two consecutive epochs. A pure function of ``(seed, epoch, i)``, so a
    run resumed mid-epoch continues exactly."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + (1 << 41))
    first = torch.rand(n, generator=g) < 0.5
    return first ^ bool(int(epoch) % 2)


def epoch_boxes(seed: int, epoch: int, n: int, h: int, w: int, min_scale: float,
                device: torch.device) -> Tensor:
    """The epoch's random-resized crop boxes (one per image, in sample order of the images themselves), from
    their own seeded stream: :func:`epoch_plan`'s draws, and so runs without these crops, stay as they were."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) + (1 << 40))
    return sample_crop_boxes(n, h, w, scale=(float(min_scale), 1.0), generator=g).to(device, non_blocking=True)
