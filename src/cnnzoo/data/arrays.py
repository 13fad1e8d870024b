"""Whole-set operations on uint8 image arrays in bounded memory: chunked, never a full-size temporary.

A decoded photo folder can be larger than RAM (it is a memory-mapped ``.npy`` then), so everything that touches
every image (pixel statistics, channel conversion, subsets) walks it in chunks of about ``CHUNK_BYTES`` and
writes large results into a scratch memory map on disk rather than into the process's memory.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CHUNK_BYTES = 32 << 20  # rows handled at once by every chunked pass
IN_MEMORY_BYTES = 256 << 20  # results up to this size stay in RAM; larger ones go to a scratch memory map
NPY_HEADER_BYTES = 128  # the fixed .npy header size of the files written here (a multiple of 64, as numpy's)


def chunk_rows(row_bytes: int) -> int:
    """How many rows of ``row_bytes`` one chunk holds (at least one)."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def row_chunks(n: int, row_bytes: int) -> Iterator[slice]:
    """Slices of ``range(n)`` of :func:`chunk_rows` rows each."""
    step = chunk_rows(row_bytes)
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version 1.0 ``.npy`` header of exactly :data:`NPY_HEADER_BYTES` bytes for a C-order array."""
    body = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = body.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"
    if len(body) != NPY_HEADER_BYTES - 10:
        raise ValueError(f"shape {shape} does not fit a {NPY_HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def scratch_dir(preferred: Path | None = None) -> Path:
    """Where scratch memory maps go: ``preferred`` when it is a writable folder, else the system temp dir."""
    if preferred is not None and preferred.is_dir() and os.access(preferred, os.W_OK):
        return preferred
    return Path(tempfile.gettempdir())


def empty_rows(shape: tuple[int, ...], where: Path | None = None) -> np.ndarray:
    """A writable uint8 array of ``shape``: in RAM when small, else a memory map of an unlinked file on disk
    (the pages live in the page cache, and the file goes away with the last reference)."""
    nbytes = int(np.prod(shape, dtype=np.int64))
    if nbytes <= IN_MEMORY_BYTES:
        return np.empty(shape, dtype=np.uint8)
    fd, name = tempfile.mkstemp(prefix=".cnnzoo-scratch-", suffix=".npy", dir=scratch_dir(where))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(npy_header(shape))
            f.truncate(NPY_HEADER_BYTES + nbytes)
        return np.load(name, mmap_mode="r+")
    finally:
        os.unlink(name)


def take_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for a uint8 (N, ...) tensor, copied chunk by chunk (into a scratch map when large)."""
    index = torch.as_tensor(index, dtype=torch.long)
    row = int(np.prod(x.shape[1:], dtype=np.int64))
    if index.numel() * row <= IN_MEMORY_BYTES:
        return x.index_select(0, index)
    out = torch.from_numpy(empty_rows((index.numel(), *x.shape[1:])))
    for s in row_chunks(index.numel(), row):
        out[s] = x.index_select(0, index[s])
    return out


def pixel_stats(x: Tensor | np.ndarray, max_images: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (sample) std in [0, 1] of uint8 (N, C, H, W) images, on a fixed, evenly spaced
    subset of ``max_images`` for large sets. Exact: integer per-channel histograms summed chunk by chunk."""
    a = x.numpy() if isinstance(x, Tensor) else x
    n, c = a.shape[0], a.shape[1]
    pick = np.arange(n) if n <= max_images else np.linspace(0, n - 1, max_images).round().astype(np.int64)
    hist = np.zeros((c, 256), dtype=np.int64)
    for s in row_chunks(len(pick), int(np.prod(a.shape[1:], dtype=np.int64)) * 8):
        block = a[pick[s]] if n > max_images else a[s]
        for ch in range(c):
            hist[ch] += np.bincount(block[:, ch].reshape(-1), minlength=256)
    v = np.arange(256, dtype=np.float64) / 255.0
    count = hist.sum(axis=1).astype(np.float64)
    mean = (hist * v).sum(axis=1) / count
    var = ((hist * (v[None, :] - mean[:, None]) ** 2).sum(axis=1)) / np.maximum(count - 1, 1)
    std = np.maximum(np.sqrt(var), 1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def convert_channels(x: Tensor, in_chans: int, where: Path | None = None) -> Tensor:
    """Grey <-> RGB for uint8 (N, C, H, W) images (ITU-R 601 luma for RGB -> grey, as Pillow's ``L``), chunk
    by chunk into a new array (a scratch memory map when large)."""
    from .images import match_channels

    n, c, h, w = x.shape
    if c == in_chans:
        return x
    out = empty_rows((n, in_chans, h, w), where)
    a = x.numpy()
    for s in row_chunks(n, (c + in_chans) * h * w * 4):
        block = a[s]
        if c == 1:
            out[s] = np.repeat(block, in_chans, axis=1)
        else:
            out[s] = np.stack([match_channels(img, in_chans) for img in block])
    return torch.from_numpy(out)
