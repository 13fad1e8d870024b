"""Named data sets: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` and ``folder:PATH``.

Layout under the data root (``--data-dir`` > ``$CNNZOO_DATA`` > ``~/.cache/cnnzoo``), as ``shared/data``:

- ``mnist/``, ``fashion-mnist/``: the four original IDX files, ``.gz`` or not (torchvision's
  ``MNIST/raw/`` and ``FashionMNIST/raw/`` are accepted too);
- ``cifar-10-batches-py/`` (the official python archive, read without unpickling code) or an ImageFolder
  copy ``cifar10-jpg/{train,test}/<class>/``; CIFAR-100 likewise (``cifar-100-python/``, ``cifar100-jpg/``).

``digits`` is scikit-learn's bundled 8x8 digits (1,797 images, no download), upscaled to 32x32.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CnnzooError
from .arrays import pixel_stats
from .base import ImageSet, data_root, downloads_allowed
from .folder import load_folder
from .idx import read_idx

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a named data set (what ``cnnzoo`` needs before reading it)."""

    name: str
    num_classes: int
    in_chans: int
    img_size: int  # stored size; the engine resizes per batch when a model needs another
    train_size: int
    test_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool  # a horizontal flip keeps the label (not for digits)
    description: str


# mean/std: the training split's, the published figures (tests/test_data.py recomputes them).
DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, 1, 32, 1438, 359, (0.3055,), (0.3237,), False,
                          "scikit-learn's 8x8 handwritten digits upscaled to 32x32 (embedded, no download)"),
    "mnist": DatasetInfo("mnist", 10, 1, 28, 60000, 10000, (0.1307,), (0.3081,), False,
                         "MNIST handwritten digits, 28x28 grey"),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, 60000, 10000, (0.2860,), (0.3530,), True,
                                 "Fashion-MNIST (Zalando) clothing, 28x28 grey"),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, 50000, 10000, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), True, "CIFAR-10, 32x32 colour"),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, 50000, 10000, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), True, "CIFAR-100 (fine labels), 32x32 colour"),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100",
            "sklearn-digits": "digits"}

# Official sources and MD5s (the same lists torchvision checks).
_MNIST_URLS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
}
_CIFAR_URLS = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}


def canonical_name(name: str) -> str:
    """``"Fashion_MNIST"`` -> ``"fashion-mnist"``; ``folder:PATH`` is returned as is."""
    if name.startswith("folder:"):
        return name
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        import difflib

        near = difflib.get_close_matches(key, list(DATASETS), n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise CnnzooError(f"unknown data set {name!r}: {hint}use one of {', '.join(DATASETS)} or folder:PATH")
    return key


def list_datasets() -> list[str]:
    return list(DATASETS)


def dataset_info(name: str, data_dir: str | os.PathLike | None = None,
                 img_size: int | None = None) -> DatasetInfo:
    """Facts about a named data set; for ``folder:PATH`` the classes and default size are read from disk."""
    key = canonical_name(name)
    if key in DATASETS:
        return DATASETS[key]
    from .folder import default_size, scan_folder

    path = key[len("folder:"):]
    classes, items, _, _ = scan_folder(path, "train")
    _, test_items, _, _ = scan_folder(path, "test")
    return DatasetInfo(key, len(classes), 3, img_size or default_size(path), len(items), len(test_items),
                       (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True, f"image folder {path}")


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    img_size: int | None = None,
    download: bool | None = None,
    progress: bool = False,
) -> ImageSet:
    """Load one split (``"train"`` or ``"test"``; ``"val"`` = ``"test"``) of a named data set.

    ``img_size`` only applies to image folders (decoded at that size); the tensor data sets stay at their
    native size and the training engine resizes batches when a model needs another size. Missing files
    are downloaded from the official source with MD5 checks when ``download`` (default: unless
    ``$CNNZOO_OFFLINE`` is set) and the network allow; otherwise the error says where to put them.
    """
    split = {"val": "test", "valid": "test", "validation": "test"}.get(split, split)
    if split not in ("train", "test"):
        raise CnnzooError(f"unknown split {split!r}: use train or test")
    key = canonical_name(name)
    download = downloads_allowed() if download is None else download
    if key.startswith("folder:"):
        path = key[len("folder:"):]
        if not path:
            raise CnnzooError("folder: needs a path, e.g. --dataset folder:~/data/pets")
        try:
            cache_root = data_root(data_dir)
        except CnnzooError:  # the data root only places the decode cache of a folder
            cache_root = None
        return load_folder(path, split, img_size=img_size, name=key, data_root=cache_root, progress=progress)
    if key == "digits":  # embedded: no data root needed
        return _load_digits(split)
    root = data_root(data_dir)
    if key in ("mnist", "fashion-mnist"):
        return _load_mnist_like(key, split, root, download)
    return _load_cifar(key, split, root, download, progress)


# --------------------------------------------------------------------------------------------- digits
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (8x8, values 0..16) read from its data file, without importing
    scikit-learn (which takes seconds); falls back to ``sklearn.datasets.load_digits``."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            a = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return a[:, :-1].reshape(-1, 8, 8), a[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise CnnzooError("the digits data set comes with scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Sorted train and test indices of a seeded per-class split (each class split in the same ratio)."""
    g = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[g.permutation(len(members))]
        n_test = int(round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_digits(split: str) -> ImageSet:
    images, target = _digits_arrays()
    x = torch.from_numpy(images * (255.0 / 16.0))[:, None]  # 0..16 -> 0..255
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)  # 8x8 -> 32x32, 4x upscale
    x = x.round().clamp(0, 255).to(torch.uint8)
    idx_train, idx_test = stratified_split(target, 0.2, seed=0)
    idx = torch.from_numpy(idx_train if split == "train" else idx_test)
    info = DATASETS["digits"]
    return ImageSet(images=x[idx].contiguous(), labels=torch.from_numpy(target)[idx], classes=MNIST_CLASSES,
                    mean=info.mean, std=info.std, name="digits", split=split, hflip=False,
                    source="scikit-learn digits")


# ------------------------------------------------------------------------------------ MNIST-like (IDX)
def _find_idx(folder_candidates: list[Path], stem: str) -> Path | None:
    for folder in folder_candidates:
        for fname in (stem, stem + ".gz"):
            if (folder / fname).is_file():
                return folder / fname
    return None


def _read_idx_cached(path: Path) -> np.ndarray:
    """``read_idx`` with a small in-process cache (the gunzip costs a second; test suites and ``compare``
    load the same files many times). A changed file (size or mtime) is read again; callers get a copy."""
    st = path.stat()
    return _read_idx_key(str(path), st.st_size, st.st_mtime_ns).copy()


@functools.lru_cache(maxsize=4)
def _read_idx_key(path: str, size: int, mtime_ns: int) -> np.ndarray:
    arr = read_idx(path)
    arr.setflags(write=False)
    return arr


def _load_mnist_like(key: str, split: str, root: Path, download: bool) -> ImageSet:
    folders = [root / key, root / {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[key] / "raw"]
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(folders, s) for s in stems]
    if None in paths:
        base, files = _MNIST_URLS[key]
        if download:
            _download_files(base, files, root / key, key)
            paths = [_find_idx(folders, s) for s in stems]
        if None in paths:
            raise CnnzooError(
                f"{key} not found: put {', '.join(files)} (from {base}) into {root / key}/, or point "
                f"--data-dir / $CNNZOO_DATA at a folder that has {key}/")
    images, labels = _read_idx_cached(paths[0]), _read_idx_cached(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0] or images.dtype != np.uint8:
        raise CnnzooError(
            f"{paths[0]} and {paths[1]} do not hold matching uint8 images and labels; re-download them")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CnnzooError(f"{paths[1]} has labels outside 0..9; re-download it")
    info = DATASETS[key]
    return ImageSet(images=torch.from_numpy(images)[:, None].contiguous(),
                    labels=torch.from_numpy(labels.astype(np.int64)),
                    classes=MNIST_CLASSES if key == "mnist" else FASHION_CLASSES, mean=info.mean,
                    std=info.std, name=key, split=split, hflip=info.hflip, source=str(paths[0].parent))


# ------------------------------------------------------------------------------------------- CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python batches (dicts of numpy arrays, lists, bytes) and nothing else.

    The official CIFAR archive is a pickle; a plain ``pickle.load`` would run any code a tampered file
    names. Only numpy's array reconstruction is allowed through.
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            OSError) as e:
        raise CnnzooError(f"{path} is not a readable CIFAR batch ({e}); re-download the archive") from e
    if not isinstance(d, dict):
        raise CnnzooError(f"{path} is not a CIFAR batch; re-download the archive")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _load_cifar(key: str, split: str, root: Path, download: bool, progress: bool) -> ImageSet:
    url, md5, folder = _CIFAR_URLS[key]
    info = DATASETS[key]
    py_dir, jpg_dir = root / folder, root / f"{key}-jpg"
    if not py_dir.is_dir() and jpg_dir.is_dir():
        ds = load_folder(jpg_dir, split, img_size=32, name=key, data_root=root, mean=info.mean, std=info.std,
                         in_chans=3, progress=progress)
        ds.hflip = True
        return ds
    if not py_dir.is_dir() and download:
        _download_archive(url, md5, root, key)
    if not py_dir.is_dir():
        raise CnnzooError(
            f"{key} not found: extract {url} into {root}/ (giving {py_dir}/), or put an ImageFolder copy "
            f"in {jpg_dir}/train/<class>/ and {jpg_dir}/test/<class>/, or point --data-dir at a folder "
            f"with either")
    if key == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, classes = "labels", CIFAR10_CLASSES
    else:
        names, label_key = ["train" if split == "train" else "test"], "fine_labels"
        meta = _read_cifar_batch(py_dir / "meta")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("fine_label_names", [])]
    xs, ys = [], []
    for n in names:
        d = _read_cifar_batch(py_dir / n)
        try:
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        except (KeyError, ValueError) as e:
            raise CnnzooError(f"{py_dir / n} lacks CIFAR data/labels ({e}); re-download the archive") from e
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(classes) != info.num_classes or len(x) != len(y):
        raise CnnzooError(f"{py_dir} does not look like {key}; re-download the archive")
    return ImageSet(images=torch.from_numpy(x), labels=torch.from_numpy(y), classes=classes, mean=info.mean,
                    std=info.std, name=key, split=split, hflip=True, source=str(py_dir))


# ---------------------------------------------------------------------------------------- downloads
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _new_dirs(folder: Path) -> list[Path]:
    """The folders ``folder.mkdir(parents=True)`` would create, deepest first (to remove them on failure)."""
    made = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        made.append(p)
    return made


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created, deepest first, if they are still empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break


def _fetch(url: str, dest: Path, md5: str, what: str) -> None:
    """Download ``url`` to ``dest`` through a temporary file, keeping it only if the MD5 matches; on failure
    nothing is left behind (no partial file, no folders created on the way)."""
    from ..utils.files import atomic_write

    made = _new_dirs(dest.parent)
    ok = False

    def download(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
        if _md5(tmp) != md5:
            raise CnnzooError(f"{url} downloaded with the wrong MD5 (expected {md5}); try again later")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url}", flush=True)
        atomic_write(dest, download, overwrite=True, what="download")
        ok = True
    except OSError as e:  # URLError, timeouts, DNS failure, read-only root
        raise CnnzooError(f"could not download {what} ({getattr(e, 'reason', e)}): put the files into "
                          f"{dest.parent}/ by hand, or point --data-dir / $CNNZOO_DATA at a folder that has "
                          f"them") from e
    finally:
        if not ok:
            _remove_empty(made)


def _download_files(base: str, files: dict[str, str], folder: Path, what: str) -> None:
    """All of ``files`` or none: a failure removes the files this call fetched and the folders it made."""
    made, fetched = _new_dirs(folder), []
    try:
        for fname, md5 in files.items():
            if not (folder / fname).is_file():
                _fetch(base + fname, folder / fname, md5, what)
                fetched.append(folder / fname)
    except BaseException:
        for f in fetched:
            f.unlink(missing_ok=True)
        _remove_empty(made)
        raise


def _download_archive(url: str, md5: str, root: Path, what: str) -> None:
    archive = root / url.rsplit("/", 1)[1]
    if not archive.is_file() or _md5(archive) != md5:
        _fetch(url, archive, md5, what)
    # extracted beside, then renamed in: a full disk mid-extraction leaves no half data set that looks whole
    part = root / f".part-{os.getpid()}-{what}"
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(part, filter="data")  # "data" filter: no absolute paths, links out of root, devices
        for entry in part.iterdir():
            os.replace(entry, root / entry.name)
    except (tarfile.TarError, OSError) as e:
        from ..utils.oserr import os_error_line

        why = os_error_line(e) if isinstance(e, OSError) else str(e)
        raise CnnzooError(f"could not extract {archive.name} into {root} ({why}): free space there, or extract "
                          f"it by hand") from e
    finally:
        shutil.rmtree(part, ignore_errors=True)
        archive.unlink(missing_ok=True)


def compute_stats(ds: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of an image set in [0, 1] (what the DATASETS table holds for the train splits)."""
    return pixel_stats(ds.images, max_images=len(ds))
