"""Batch augmentation on the device, airbench style: whole batches, tensor ops, no per-image Python.

A random crop with padding is the same as a random translation of the image by up to ``pad`` pixels with
the border filled; here the border is filled by reflection (as airbench does). Two implementations give
the same bytes: :func:`crop_flip` works on any batch as one gather with reflected indices (no padded copy
of the batch is made), and :class:`CropFlipTable` lays a whole in-memory data set out once so that every
row of every crop, mirrored or not, is one contiguous run of bytes: a batch is then one row copy per image
row, faster than the per-pixel gather on the CPU (figures: docs/speed.md, crops and flips from a table).

For fine-tuning on photos, :func:`random_resized_crop` is torchvision's ``RandomResizedCrop`` on a whole
batch: boxes of random area and aspect drawn as torchvision draws them (:func:`sample_crop_boxes`), each
resampled to the output size by one ``roi_align`` call (box averaging, so large crops shrunk to the output
are not aliased).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _reflect(i: Tensor, n: int) -> Tensor:
    """Reflect indices into [0, n) without repeating the edge pixel (numpy's/torch's 'reflect')."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def crop_flip(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None, pad: int) -> Tensor:
    """Translate each image of ``x`` (N, C, H, W) by (dy - pad, dx - pad) pixels, reflect-filled, and mirror
    those with ``flip`` set. ``dy``/``dx`` are integers in [0, 2 * pad] per image (0 = the top-left crop
    of the padded image, ``pad`` = no shift), the parameters of torchvision's RandomCrop(padding=pad)."""
    n, c, h, w = x.shape
    if pad == 0 and flip is None:
        return x
    rows = _reflect(torch.arange(h, device=x.device)[None, :] + (dy - pad)[:, None], h)  # (N, H)
    cols = _reflect(torch.arange(w, device=x.device)[None, :] + (dx - pad)[:, None], w)  # (N, W)
    if flip is not None:
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    # one gather over the flattened plane (twice as fast on CPU as a row gather followed by a column gather)
    src = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, src).view(n, c, h, w)


class CropFlipTable:
    """A data set's rows, reflect-padded and mirrored, so that random crops + flips are whole-row copies.

    Row ``r`` of image ``n`` is stored padded by ``pad`` reflected pixels on each side (width ``W + 2 pad``)
    and, right after it, the same padded row mirrored. A crop's row at column offset ``dx`` is then the
    ``W`` bytes starting at ``dx`` in the first half, its mirror image the ``W`` bytes starting at
    ``2 pad - dx`` in the second; rows are picked by reflected row index as in :func:`crop_flip`. So a batch
    is a single ``index_select`` of ``W``-byte windows (an ``unfold`` view of the table, no per-pixel
    indices), equal to ``crop_flip(images[idx], ...)`` bit for bit. The table costs ``2 (W + 2 pad) / W``
    times the images' bytes (half that without flips; CIFAR-10: 384 MB) and is built once per run.
    """

    def __init__(self, images: Tensor, pad: int, hflip: bool) -> None:
        n, c, h, w = images.shape
        self.pad, self.hflip, self.shape = int(pad), bool(hflip), (c, h, w)
        wp = w + 2 * self.pad
        self.row_len = 2 * wp if hflip else wp
        table = torch.empty((n, c, h, self.row_len), dtype=images.dtype, device=images.device)
        cols = torch.arange(wp, device=images.device)
        border = torch.cat([cols[:self.pad], cols[self.pad + w:]])
        table[..., self.pad:self.pad + w].copy_(images)  # plain strided copies; only the border is gathered
        table[..., border] = images.index_select(3, _reflect(border - self.pad, w))
        if hflip:
            table[..., wp:].copy_(table[..., :wp].flip(3))
        self.table = table
        self._windows = table.view(-1).unfold(0, w, 1)  # (positions, W): every W-byte window, as a view
        self._rows = torch.arange(h, device=images.device)
        self._chan_off = torch.arange(c, device=images.device) * (h * self.row_len)

    @staticmethod
    def nbytes_for(images: Tensor, pad: int, hflip: bool) -> int:
        """What the table of ``images`` would take, to decide whether to build it."""
        n, c, h, w = images.shape
        return n * c * h * (w + 2 * pad) * (2 if hflip else 1) * images.element_size()

    def __call__(self, idx: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None) -> Tensor:
        """The crops of images ``idx`` (``dy``/``dx``/``flip`` as :func:`crop_flip`'s), uint8 (B, C, H, W)."""
        c, h, w = self.shape
        rows = _reflect(self._rows[None, :] + (dy - self.pad)[:, None], h)  # (B, H)
        col0 = dx if flip is None or not self.hflip else torch.where(flip, self.row_len // 2 + 2 * self.pad - dx,
                                                                      dx)
        base = idx * (c * h * self.row_len) + col0  # (B,)
        starts = base[:, None, None] + self._chan_off[None, :, None] + (rows * self.row_len)[:, None, :]
        return self._windows.index_select(0, starts.view(-1)).view(-1, c, h, w)


def sample_crop_boxes(n: int, h: int, w: int, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
                      tries: int = 10) -> Tensor:
    """``n`` random crop boxes ``(x0, y0, x1, y1)`` in pixels (float, integer-valued) of an ``h`` x ``w`` image.

    torchvision's ``RandomResizedCrop.get_params``, for all images at once: an area fraction uniform in
    ``scale`` and an aspect ``w/h`` log-uniform in ``ratio``, rounded to whole pixels; the first of
    ``tries`` draws that fits the image is kept, and an image with none gets the centred crop of the whole
    image clamped to ``ratio``. Offsets are uniform over the positions that fit. Drawn on ``generator``'s
    device (the CPU by default) so a seed gives the same boxes everywhere.
    """
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale and ratio must be increasing positive pairs (got {scale}, {ratio})")
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((4, n, tries), generator=generator, device=dev, dtype=torch.float64)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1]
    aspect = torch.exp(log_r)
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first draw that fits (0 if none does)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    # no fit in ``tries`` draws: the whole image, cut to the nearest allowed aspect (torchvision's fallback)
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = float(w), float(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(h * ratio[1])), float(h)
    else:
        fw, fh = float(w), float(h)
    none = ~fits.any(1)
    cw, ch = torch.where(none, fw, cw), torch.where(none, fh, ch)
    x0 = torch.where(none, (w - cw) // 2, torch.floor(u[2, :, 0] * (w - cw + 1)).clamp_max(w - cw))
    y0 = torch.where(none, (h - ch) // 2, torch.floor(u[3, :, 0] * (h - ch + 1)).clamp_max(h - ch))
    return torch.stack([x0, y0, x0 + cw, y0 + ch], 1).float()


def random_resized_crop(x: Tensor, out_size: int | tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
                        flip: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
    """Crop a random box of each image of ``x`` (N, C, H, W) and resize it to ``out_size``: torchvision's
    ``RandomResizedCrop`` (+ ``RandomHorizontalFlip`` where ``flip`` is set), per batch on ``x``'s device.

    ``boxes`` (N, 4) ``(x0, y0, x1, y1)`` from :func:`sample_crop_boxes` fixes the crops (for example drawn
    once per epoch from a seed); otherwise they are drawn here from ``generator``. The resampling is
    ``torchvision.ops.roi_align`` (aligned, adaptive sampling): bilinear at each output pixel's centre,
    averaged over the pixels it covers when the crop is larger than the output, so a box the output's size
    is copied exactly. Returns float32 (uint8 input is converted, not scaled; normalise before or after,
    the two commute since every output is a weighted mean of inputs).
    """
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    if boxes is None:
        boxes = sample_crop_boxes(n, h, w, scale, ratio, generator)
    boxes = boxes.to(x.device, torch.float32, non_blocking=True)  # no host sync when already on the device
    rois = torch.cat([torch.arange(n, dtype=torch.float32, device=x.device)[:, None], boxes], 1)
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = roi_align(xf, rois.to(xf.dtype), (oh, ow), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if flip is not None:
        out = torch.where(flip.to(out.device)[:, None, None, None], out.flip(3), out)
    return out


def center_crop(x: Tensor, size: int) -> Tensor:
    """The centre ``size`` x ``size`` of each image of ``x`` (N, C, H, W), as a view: torchvision's
    ``CenterCrop`` offsets. After a resize of the shorter side to ``resize`` this is the evaluation
    transform published weights were scored with."""
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"cannot centre-crop {size}x{size} from {h}x{w} images")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def normalize(x: Tensor, mean: Tensor, std: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (N, C, H, W) -> float ``(x / 255 - mean) / std``; ``mean``/``std`` are (C,) tensors in [0, 1]."""
    scale = (1.0 / (255.0 * std)).to(dtype)
    shift = (mean / std).to(dtype)
    if x.dtype == dtype:  # .to would return x itself: never modify the caller's tensor
        return x * scale.view(1, -1, 1, 1) - shift.view(1, -1, 1, 1)
    out = x.to(dtype)  # a fresh float copy, scaled in place: one allocation, not three
    if out.shape[1] <= 4 and out.device.type == "cpu" and scale.device.type == "cpu":
        # one channel at a time with Python scalars (the dtype's own values, so the result is the same as the
        # broadcast): faster on the CPU than broadcasting a (1, C, 1, 1) tensor (docs/speed.md; on CUDA .tolist() would
        # wait for the device, so it keeps the broadcast)
        for c, (a, b) in enumerate(zip(scale.tolist(), shift.tolist(), strict=True)):
            out[:, c].mul_(a).sub_(b)
        return out
    return out.mul_(scale.view(1, -1, 1, 1)).sub_(shift.view(1, -1, 1, 1))
