"""Image files -> uint8 tensors: decoding every common mode, resizing, and a worker pool for folders.

Decoding uses Pillow (torchvision's own decoders are deprecated from 0.29 on). Every file goes through
:func:`decode_file`, which either returns a ``(C, S, S)`` uint8 array or a one-line reason why the file is
unreadable; folder loading skips unreadable files and reports them instead of crashing mid-epoch.
``predict`` uses :func:`load_image`, the same function, so images are prepared exactly as in training.

Resizing policy (stored in checkpoints as ``"resize": "shorter-side+center-crop"``): scale the shorter
side to ``S`` with Pillow's antialiased bilinear filter, then crop the centre ``S x S``.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import CnnzooError
from ..utils.files import file_kind

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                              ".pgm", ".pbm", ".jfif"})
RESIZE_POLICY = "shorter-side+center-crop"
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_name(name: str) -> bool:
    """True for a file name with an image extension, in any case (``.JPG`` too)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS



class NotRegularFile(OSError):
    """A path that is a FIFO, socket, device or folder: never read (reading a FIFO blocks for ever)."""


def not_regular(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a regular file (``"a FIFO"`` ...), or ``None`` if it is one (or is missing)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return file_kind(mode)


def open_regular(path: str | os.PathLike):
    """Open ``path`` for reading only if it is a regular file. The open itself never blocks (``O_NONBLOCK``:
    a FIFO with no writer would hang ``open``), and the check is on the opened file (no race with a swap)."""
    why = not_regular(path)  # a socket cannot even be opened (ENXIO): say what it is
    if why is not None:
        raise NotRegularFile(f"not a regular file ({why})")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"not a regular file ({file_kind(mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _to_rgb_or_gray(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Pixels as uint8 HxWx3 (colour) or HxW (grey), whatever the file's mode.

    16-bit and 32-bit grey are scaled to 8 bits (``/ 257`` maps 65535 to 255); images with transparency are
    composited onto white, which is how a viewer shows them; palette, CMYK, YCbCr, LAB go through RGB.
    """
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode != "F" and a.max(initial=0) > 255 else 255.0
        if mode == "F":
            lo, hi = float(a.min(initial=0)), float(a.max(initial=1))
            a = (a - lo) / max(hi - lo, 1e-12) * 255.0
            top = 255.0
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), True
    if mode == "1":
        return np.asarray(im.convert("L")), True
    if mode == "L":
        return np.asarray(im), True
    if mode in ("LA", "La", "PA") or mode == "RGBA" or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(bg, rgba).convert("RGB")
        if mode in ("LA", "La"):
            return np.asarray(rgb.convert("L")), True
        return np.asarray(rgb), False
    return np.asarray(im.convert("RGB")), False


def _resize(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode_file(path: str | os.PathLike, size: int | None) -> tuple[np.ndarray | None, bool, str]:
    """Decode one image file and resize it to ``size`` x ``size`` (``None``: keep its size).

    Returns ``(array, is_gray, "")`` with a ``(C, S, S)`` uint8 array (C = 1 for grey files, else 3) or
    ``(None, False, reason)`` for an unreadable file. Never raises for a bad file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF, palette transparency, big images
            with open_regular(path) as fh, Image.open(fh) as im:
                if size is not None and im.format == "JPEG":
                    im.draft(im.mode if im.mode in ("L", "RGB") else None, (size, size))  # fast DCT downscale
                im.load()
                im = ImageOps.exif_transpose(im) or im
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N") and size is not None:
                    im = im.convert("I")  # Pillow resizes 32-bit grey, not the raw 16-bit modes
                if size is not None and im.mode not in ("P", "PA", "1"):
                    im = _resize(im, size)
                arr, gray = _to_rgb_or_gray(im)
                if size is not None and arr.shape[:2] != (size, size):  # palette/bilevel: resize after
                    arr = np.asarray(_resize(Image.fromarray(arr), size))
    except Image.DecompressionBombError as e:
        return None, False, f"too large to decode safely ({e})"
    except NotRegularFile as e:
        return None, False, str(e)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.UnidentifiedImageError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, Image.UnidentifiedImageError) or "cannot identify" in msg:
            msg = "not an image Pillow can read (empty, corrupt, or another format)"
        return None, False, msg
    except Exception as e:  # a decoder bug on hostile bytes must not stop a 60,000-image scan
        return None, False, f"{type(e).__name__}: {e}"
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), gray, ""


def _decode_chunk(args: tuple[list[str], int | None]) -> list[tuple[np.ndarray | None, bool, str]]:
    paths, size = args
    return [decode_file(p, size) for p in paths]


DECODE_CHUNK = 256  # files per worker task: small enough to bound memory, large enough to amortise pickling


def iter_decoded(paths: Sequence[str], size: int | None, workers: int | None = None, progress: bool = False,
                 desc: str = "decoding", chunk: int = DECODE_CHUNK
                 ) -> Iterator[list[tuple[np.ndarray | None, bool, str]]]:
    """Decode ``paths`` in order, yielding one list of :func:`decode_file` results per chunk of files, with a
    progress bar that shows images/s and the time left."""
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    tasks = ((list(paths[i:i + chunk]), size) for i in range(0, len(paths), chunk))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=desc, unit="img", leave=False, dynamic_ncols=True)
    try:
        serial = workers <= 1 or len(paths) < 2000
        for res in map(_decode_chunk, tasks) if serial else _pool_decoded(tasks, workers):
            if bar is not None:
                bar.update(len(res))
            yield res
    finally:
        if bar is not None:
            bar.close()


def _pool_decoded(tasks: Iterator[tuple[list[str], int | None]],
                  workers: int) -> Iterator[list[tuple[np.ndarray | None, bool, str]]]:
    """:func:`_decode_chunk` of each task on a process pool, in order, with at most two tasks per worker in
    flight, so memory holds a few chunks whatever the folder's size. Fork start: the workers only run Pillow
    and numpy, so start-up is instant."""
    import multiprocessing as mp
    from collections import deque

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() in a multi-threaded process"
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            pending: deque = deque()
            for t in tasks:
                pending.append(ex.submit(_decode_chunk, t))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def decode_files(paths: Sequence[str], size: int, workers: int | None = None,
                 progress: bool = False, desc: str = "decoding") -> list[tuple[np.ndarray | None, bool, str]]:
    """Decode a (small) list of files into one list: :func:`iter_decoded` for folders that may be large."""
    return [r for res in iter_decoded(paths, size, workers, progress, desc) for r in res]


def load_image(path: str | os.PathLike, size: int, in_chans: int = 3) -> np.ndarray:
    """One image file as a ``(in_chans, size, size)`` uint8 array, prepared as in training (for predict).

    Raises :class:`CnnzooError` for an unreadable file.
    """
    arr, _, why = decode_file(path, size)
    if arr is None:
        raise CnnzooError(f"cannot read image {str(path)!r}: {why}")
    return match_channels(arr, in_chans)


def match_channels(arr: np.ndarray, in_chans: int) -> np.ndarray:
    """Grey <-> RGB for a ``(C, H, W)`` uint8 array (ITU-R 601 luma for RGB -> grey, as Pillow's ``L``)."""
    c = arr.shape[0]
    if c == in_chans:
        return arr
    if c == 1 and in_chans == 3:
        return np.repeat(arr, 3, axis=0)
    if c == 3 and in_chans == 1:
        luma = arr[0] * 0.299 + arr[1] * 0.587 + arr[2] * 0.114
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[None]
    raise CnnzooError(f"cannot turn a {c}-channel image into {in_chans} channels")


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding, or ``None`` if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_regular(path) as fh, Image.open(fh) as im:
                return im.size
    except Exception:
        return None
