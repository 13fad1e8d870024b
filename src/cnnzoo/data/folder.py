"""ImageFolder trees (``PATH/train/<class>/*``, ``PATH/val|test/<class>/*``, or ``PATH/<class>/*``).

Images are decoded once by a worker pool, resized to ``img_size``, and cached as one ``.npy`` per split
(keyed by the folder, the size and every file's name, size and mtime), so the second run starts in a
second. Unreadable files are skipped and reported; a class with no readable image is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from ..errors import CnnzooError
from .base import ImageSet, cache_dir
from .images import decode_files, header_size, is_image_name

CACHE_VERSION = 1
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
    """Image files (any depth, sorted) and other files under one class folder; hidden files are left out."""
    images, other = [], []
    for dirpath, dirnames, filenames in os.walk(class_dir):
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
            h.update(os.fsencode(p) + f"\0{y}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:  # os.fsencode: a name that is not valid UTF-8 hashes as its bytes (no UnicodeEncodeError)
            h.update(os.fsencode(p) + f"\0{y}\0missing\n".encode())
    return h.hexdigest()[:20]


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


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

    ``mean``/``std`` default to the split's own pixel statistics; the training engine always normalises with
    the training split's. ``in_chans`` forces 1 or 3 channels; by default a folder is grey (1 channel)
    only if every readable image is grey.
    """
    root = Path(path).expanduser().resolve()
    name = name or f"folder:{root}"
    classes, items, other, how = scan_folder(root, split)
    size = int(img_size) if img_size else default_size(root)
    if size < 1:
        raise CnnzooError(f"img_size must be >= 1, got {size}")
    key = f"v{CACHE_VERSION}|{root}|{split}|{size}|{how}"
    sig = _signature(items, key)
    cdir = cache_dir(data_root)
    stem = f"{root.name}-{split}-{size}-{sig}"
    npy, meta_path = cdir / f"{stem}.npy", cdir / f"{stem}.json"
    meta = None
    if use_cache and npy.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(npy, mmap_mode="c")  # copy-on-write map: pages in lazily, no full read
            if images.shape[0] != len(meta["labels"]):
                meta = None
        except (OSError, ValueError, KeyError):
            meta = None
    if meta is None:
        results = decode_files([str(p) for p, _ in items], size, progress=progress,
                               desc=f"decoding {root.name}/{split}")
        ok = [i for i, r in enumerate(results) if r[0] is not None]
        skipped = [(str(items[i][0]), results[i][2]) for i, r in enumerate(results) if r[0] is None]
        gray = bool(ok) and all(results[i][1] for i in ok)
        chans = 1 if gray else 3
        images = np.empty((len(ok), chans, size, size), dtype=np.uint8)
        for j, i in enumerate(ok):
            arr = results[i][0]
            images[j] = arr if arr.shape[0] == chans else np.repeat(arr, 3, axis=0)
        meta = {"labels": [items[i][1] for i in ok], "paths": [str(items[i][0]) for i in ok],
                "skipped": skipped, "ignored": [str(p) for p in other], "classes": classes, "split_from": how}
        if use_cache:
            try:
                cdir.mkdir(parents=True, exist_ok=True)
                _write_atomic(npy, lambda p: _save_npy(p, images))
                _write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta)))
            except OSError:
                pass  # a read-only cache location only costs speed
    labels = torch.tensor(meta["labels"], dtype=torch.int64)
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
    x = torch.from_numpy(images)
    if in_chans is not None and in_chans != x.shape[1]:
        if in_chans == 3:
            x = x.repeat(1, 3, 1, 1)
        else:  # ITU-R 601 luma, as Pillow's "L"
            luma = x[:, :1].float() * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114
            x = luma.round().clamp(0, 255).to(torch.uint8)
    if mean is None or std is None:
        mean, std = pixel_stats(x)
    return ImageSet(images=x, labels=labels, classes=classes, mean=tuple(mean), std=tuple(std), name=name,
                    split=split, hflip=True, source=str(root), paths=meta["paths"],
                    skipped=[tuple(s) for s in meta["skipped"]], ignored=meta["ignored"])


def pixel_stats(x: torch.Tensor, max_images: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] of a uint8 (N, C, H, W) tensor (on a fixed subset of large sets)."""
    if x.shape[0] > max_images:
        x = x[torch.linspace(0, x.shape[0] - 1, max_images).long()]
    xf = x.to(torch.float64) / 255.0
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
