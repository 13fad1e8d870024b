"""ImageFolder trees (``PATH/train/<class>/*``, ``PATH/val|test/<class>/*``, or ``PATH/<class>/*``).

Images are decoded once by a worker pool, resized to ``img_size``, and cached as one ``.npy`` per split
(keyed by the folder, the size and every file's name, size and mtime), so the second run starts in a
second. Unreadable files are skipped and reported; a class with no readable image is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import CnnzooError
from ..utils.files import atomic_write, atomic_write_text
from .arrays import NPY_HEADER_BYTES, chunk_rows, convert_channels, npy_header, pixel_stats, row_chunks, scratch_dir
from .base import ImageSet, cache_dir
from .images import DECODE_CHUNK, header_size, is_image_name, iter_decoded

CACHE_VERSION = 2
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "val", "valid", "validation")
SPLIT_SEED, SPLIT_TEST_FRACTION = 0, 0.2


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise CnnzooError(f"cannot list {path}: {e.strerror or e}") from e


def _split_dirs(root: Path) -> tuple[Path | None, Path | None]:
    """The train and test/val folders of ``root`` (names matched case-insensitively), if it has them."""
    by_name = {p.name.lower(): p for p in _subdirs(root)}
    train = next((by_name[n] for n in TRAIN_NAMES if n in by_name), None)
    tests = [by_name[n] for n in TEST_NAMES if n in by_name]
    if train is not None and len(tests) > 1:  # say which one is held out, once per folder and process
        import warnings

        from ..errors import CnnzooWarning

        others = ", ".join(f"{t.name}/" for t in tests[1:])
        warnings.warn(f"{root} has both {tests[0].name}/ and {others}: {tests[0].name}/ is the held-out split, "
                      f"{others} is not read (rename it to use it instead)", CnnzooWarning, stacklevel=2)
    return train, (tests[0] if tests else None)


def _class_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """Image files (any depth, sorted) and other files under one class folder; hidden files are left out.
    Symlinked sub-folders are followed, each real folder once (a link back up the tree is not a loop)."""
    images, other = [], []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            (images if is_image_name(f) else other).append(Path(dirpath) / f)
    return images, other


def scan_folder(path: str | os.PathLike,
                split: str) -> tuple[list[str], list[tuple[Path, int]], list[Path], str]:
    """List ``(file, label)`` pairs of one split, the class names and the non-image files.

    With ``train/`` and ``val/`` (or ``test/``) folders they are the splits; with class folders only, a
    fixed seeded stratified 80/20 split is made (the same every run, whatever the machine).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CnnzooError(f"image folder {str(root)!r} not found: give folder:PATH with PATH/<class>/*.jpg "
                          f"or PATH/train/<class>/*.jpg and PATH/val/<class>/*.jpg")
    train_dir, test_dir = _split_dirs(root)
    if split not in ("train", "test", "val"):
        raise CnnzooError(f"unknown split {split!r}: use train or test")
    if train_dir is not None:
        classes = [d.name for d in _subdirs(train_dir)]
        if test_dir is not None:
            split_dir = train_dir if split == "train" else test_dir
            how = f"{split_dir.name}/"
        else:
            split_dir, how = train_dir, f"seeded {split} part of {train_dir.name}/"
    elif test_dir is not None:
        raise CnnzooError(f"{root} has a {test_dir.name}/ folder but no train/ folder next to it")
    else:
        classes = [d.name for d in _subdirs(root)]
        split_dir, how = root, f"seeded {split} part"
    if len(classes) < 2:
        raise CnnzooError(f"{split_dir} has {len(classes)} class folder(s): an image folder needs one "
                          f"sub-folder per class (at least two), e.g. {split_dir}/cat/1.jpg, "
                          f"{split_dir}/dog/2.jpg")
    index = {c: i for i, c in enumerate(classes)}
    items: list[tuple[Path, int]] = []
    other: list[Path] = []
    for d in _subdirs(split_dir):
        if d.name not in index:
            raise CnnzooError(f"class folder {d} is not among the training classes "
                              f"({', '.join(classes[:5])}...): rename or remove it")
        imgs, rest = _class_files(d)
        items += [(p, index[d.name]) for p in imgs]
        other += rest
    if how.startswith("seeded"):
        items = _stratified_part(items, len(classes), train=(split == "train"))
    return classes, items, other, how


def _stratified_part(items: list[tuple[Path, int]], num_classes: int, train: bool) -> list[tuple[Path, int]]:
    """The train or the test part of a seeded per-class split (at least one test image per class of >= 2)."""
    g = np.random.default_rng(SPLIT_SEED)
    keep: list[tuple[Path, int]] = []
    for c in range(num_classes):
        members = [it for it in items if it[1] == c]
        order = g.permutation(len(members))
        n_test = int(round(len(members) * SPLIT_TEST_FRACTION))
        if len(members) >= 2:
            n_test = max(1, n_test)
        chosen = order[n_test:] if train else order[:n_test]
        keep += [members[i] for i in sorted(chosen)]
    return keep


def default_size(path: str | os.PathLike, max_size: int = 224, sample: int = 200) -> int:
    """A default square size for a folder: the median shorter side of up to ``sample`` training images
    (read from headers only), capped at ``max_size`` (CIFAR-10 as JPEG -> 32, photos -> 224)."""
    _, items, _, _ = scan_folder(path, "train")
    if not items:
        return max_size
    step = max(1, len(items) // sample)
    sides = [min(s) for s in (header_size(p) for p, _ in items[::step]) if s]
    return int(min(max_size, statistics.median(sides))) if sides else max_size


def _signature(items: list[tuple[Path, int]], key: str) -> str:
    h = hashlib.sha256(os.fsencode(key))
    for p, y in items:
        try:
            st = p.stat()
            # ctime and inode too: a rewrite that keeps the size and restores the mtime still changes them
            h.update(os.fsencode(p) + f"\0{y}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n"
                     .encode())
        except OSError:  # os.fsencode: a name that is not valid UTF-8 hashes as its bytes (no UnicodeEncodeError)
            h.update(os.fsencode(p) + f"\0{y}\0missing\n".encode())
    return h.hexdigest()[:20]


class _NpyAppender:
    """Decoded images appended, in order, to a ``.npy`` file whose header is written when the count is known.

    The channel count is that of the first readable image's chunk: 3 if any image in it is in colour, else 1;
    a colour image after an all-grey start rewrites the rows so far as RGB, chunk by chunk (a folder is grey
    only if every readable image is).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size, self.n, self.chans = path, size, 0, 0
        self.f = open(path, "wb")  # noqa: SIM115 - closed in finish()/close()
        self.f.write(b"\0" * NPY_HEADER_BYTES)

    def append(self, results: list[tuple[np.ndarray | None, bool, str]]) -> None:
        good = [r for r in results if r[0] is not None]
        if not good:
            return
        colour = any(not gray for _, gray, _ in good)
        if self.chans == 0:
            self.chans = 3 if colour else 1
        elif self.chans == 1 and colour:
            self._grey_to_rgb()
        for arr, _, _ in good:
            self.f.write((arr if arr.shape[0] == self.chans else np.repeat(arr, 3, axis=0)).tobytes())
        self.n += len(good)

    def _grey_to_rgb(self) -> None:
        """Rewrite the grey rows so far as RGB in place: the file grows to three times the rows, and rows move
        from the last to the first, so no row is overwritten before it is read."""
        self.f.flush()
        row = self.size * self.size
        if self.n:
            self.f.truncate(NPY_HEADER_BYTES + 3 * self.n * row)
            arr = np.memmap(self.path, dtype=np.uint8, mode="r+", offset=NPY_HEADER_BYTES,
                            shape=(3 * self.n * row,))
            for s in reversed(list(row_chunks(self.n, 4 * row))):
                grey = np.array(arr[s.start * row:s.stop * row]).reshape(-1, 1, row)
                arr[3 * s.start * row:3 * s.stop * row] = np.repeat(grey, 3, axis=1).reshape(-1)
            arr.flush()
            del arr
        self.f.seek(0, os.SEEK_END)
        self.chans = 3

    def finish(self) -> None:
        """Write the header for the rows appended and make the file durable."""
        self.f.seek(0)
        self.f.write(npy_header((self.n, self.chans or 3, self.size, self.size)))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()

    def close(self) -> None:
        self.f.close()


def _decode_to_npy(items: list[tuple[Path, int]], size: int, path: Path, progress: bool,
                   desc: str) -> tuple[list[int], list[tuple[str, str]]]:
    """Decode ``items`` straight into the ``.npy`` at ``path`` (never all in memory): the kept indices and the
    skipped ``(path, reason)`` pairs."""
    out = _NpyAppender(path, size)
    ok: list[int] = []
    skipped: list[tuple[str, str]] = []
    chunk = max(1, min(DECODE_CHUNK, chunk_rows(3 * size * size)))
    try:
        i = 0
        for res in iter_decoded([str(p) for p, _ in items], size, progress=progress, desc=desc, chunk=chunk):
            out.append(res)
            for arr, _, why in res:
                if arr is None:
                    skipped.append((str(items[i][0]), why))
                else:
                    ok.append(i)
                i += 1
        out.finish()
    except BaseException:
        out.close()
        path.unlink(missing_ok=True)
        raise
    return ok, skipped


def _decode_cached(root: Path, items: list[tuple[Path, int]], other: list[Path], classes: list[str], how: str,
                   size: int, npy: Path, meta_path: Path, use_cache: bool, progress: bool, desc: str
                   ) -> tuple[np.ndarray, dict]:
    """Decode a split into the cache (atomically, :func:`cnnzoo.utils.files.atomic_write`) or, when the cache
    cannot be written, into an unlinked scratch file; returns the memory-mapped images and their metadata."""
    done: dict = {}

    def write(tmp: Path) -> None:
        _check_disk(tmp.parent, len(items) * 3 * size * size, len(items), size, tmp.parent == npy.parent)
        done["ok"], done["skipped"] = _decode_to_npy(items, size, tmp, progress, desc)

    images = None
    if use_cache:
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            images = np.load(atomic_write(npy, write, overwrite=True, what="the decode cache"), mmap_mode="c")
        except OSError:  # a read-only cache location only costs speed: decode into a scratch file
            images = None
    if images is None:
        fd, name = tempfile.mkstemp(prefix=".cnnzoo-decode-", suffix=".npy", dir=scratch_dir(None))
        os.close(fd)
        try:
            write(Path(name))
            images = np.load(name, mmap_mode="c")
        finally:
            os.unlink(name)  # the memory map keeps the data while it is in use
        use_cache = False
    ok = done["ok"]
    meta = {"labels": [items[i][1] for i in ok], "paths": [str(items[i][0]) for i in ok],
            "skipped": done["skipped"], "ignored": [str(p) for p in other], "classes": classes, "split_from": how}
    if len(images):  # one chunked pass while the pages are hot; a cached start then reads them from meta
        meta["mean"], meta["std"] = pixel_stats(images)
    if use_cache:
        try:
            atomic_write_text(meta_path, json.dumps(meta), overwrite=True, what="the decode cache")
        except OSError:
            pass  # the map stays valid: only the next run's speed is lost
    return images, meta


def _check_disk(where: Path, need: int, n: int, size: int, cache: bool) -> None:
    """Refuse to decode when the folder's decoded images (at most ``need`` bytes) cannot fit on the disk."""
    from ..utils.fmt import human

    free = shutil.disk_usage(where).free
    if need > free:
        what = "the decode cache" if cache else "scratch space"
        raise CnnzooError(f"{n:,} images decoded at {size}x{size} need up to {human(need, 'B')} of {what} in "
                          f"{where}, where {human(free, 'B')} is free: free space there, set CNNZOO_CACHE to a "
                          f"folder on a larger disk, or use a smaller --img-size")


def _load_cached(npy: Path, meta_path: Path) -> tuple[np.ndarray, dict] | None:
    """A split's decode cache, memory-mapped copy-on-write (pages in lazily), or None when absent or broken."""
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(npy, mmap_mode="c")
        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] != len(meta["labels"]):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return images, meta


def load_folder(
    path: str | os.PathLike,
    split: str = "train",
    img_size: int | None = None,
    name: str | None = None,
    data_root: Path | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    in_chans: int | None = None,
    progress: bool = False,
    use_cache: bool = True,
) -> ImageSet:
    """One split of an image folder as an :class:`ImageSet` at ``img_size`` (default: :func:`default_size`).

    The images are a memory map of the decode cache, so a folder larger than RAM trains: the page cache, not
    the process, holds them. ``mean``/``std`` default to the split's own pixel statistics; the training engine
    always normalises with the training split's. ``in_chans`` forces 1 or 3 channels; by default a folder is
    grey (1 channel) only if every readable image is grey.
    """
    root = Path(path).expanduser().resolve()
    name = name or f"folder:{root}"
    classes, items, other, how = scan_folder(root, split)
    size = int(img_size) if img_size else default_size(root)
    if size < 1:
        raise CnnzooError(f"img_size must be >= 1, got {size}")
    key = f"v{CACHE_VERSION}|{root}|{split}|{size}|{how}"
    stem = f"{root.name}-{split}-{size}-{_signature(items, key)}"
    cdir = cache_dir(data_root)
    npy, meta_path = cdir / f"{stem}.npy", cdir / f"{stem}.json"
    cached = _load_cached(npy, meta_path) if use_cache else None
    images, meta = cached if cached is not None else _decode_cached(
        root, items, other, classes, how, size, npy, meta_path, use_cache, progress, f"decoding {root.name}/{split}")
    labels = torch.tensor(meta["labels"], dtype=torch.int64)
    _check_split(root, split, how, items, classes, labels, meta)
    x = torch.from_numpy(images)
    stats = (meta.get("mean"), meta.get("std"))
    if in_chans is not None and in_chans != x.shape[1]:
        x, stats = convert_channels(x, in_chans, cdir), (None, None)
    if mean is None or std is None:
        mean, std = stats if None not in stats else pixel_stats(x)
    return ImageSet(images=x, labels=labels, classes=classes, mean=tuple(mean), std=tuple(std), name=name,
                    split=split, hflip=True, source=str(root), paths=meta["paths"],
                    skipped=[tuple(s) for s in meta["skipped"]], ignored=meta["ignored"], mapped=True)


def _check_split(root: Path, split: str, how: str, items: list[tuple[Path, int]], classes: list[str],
                 labels: Tensor, meta: dict) -> None:
    """Refuse a training split with an empty class and a split with no readable image, saying what to do;
    warn when the held-out split lacks some training classes."""
    counts = torch.bincount(labels, minlength=len(classes)).tolist()
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if split == "train" and empty:
        raise CnnzooError(f"class {empty[0]!r} has no readable image in the training split of {root} "
                          f"({len(empty)} such class(es)): add images to it or remove the folder")
    if len(labels) == 0:
        if how.startswith("seeded") and items == [] and split != "train":
            _, all_items, _, _ = scan_folder(root, "train")
            per_class = torch.bincount(torch.tensor([y for _, y in all_items] or [0]), minlength=len(classes))
            raise CnnzooError(
                f"{root} is too small to split: its classes hold {int(per_class.min())} to {int(per_class.max())} "
                f"image(s) and the seeded 80/20 split holds one out only from a class of 2 or more; add images "
                f"(5 or more per class), or give separate train/ and val/ folders")
        raise CnnzooError(f"no readable image in the {split} split of {root}: add images to it (the "
                          f"{len(meta.get('skipped') or [])} file(s) there are unreadable or missing)")
    if split != "train" and empty:
        import warnings

        from ..errors import CnnzooWarning

        warnings.warn(f"the held-out split of {root} ({how}) has no image of {len(empty)} training class(es) "
                      f"({', '.join(empty[:5])}): its accuracy does not cover them", CnnzooWarning, stacklevel=3)
