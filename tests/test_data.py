"""Named data sets read from the real files in $CNNZOO_DATA: shapes, labels, counts, value ranges, stats;
the IDX and CIFAR readers on hostile input; the on-device batch augmentation."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnzoo.data import DATASETS, load_dataset, parse_idx, read_idx
from cnnzoo.data.augment import CropFlipTable, crop_flip, normalize
from cnnzoo.data.base import data_root
from cnnzoo.data.datasets import _digits_arrays, compute_stats, stratified_split
from cnnzoo.data.folder import scan_folder
from cnnzoo.errors import CnnzooError

MNIST_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Decode caches of this module go to a temporary folder (the shared data root is read-only)."""
    import os

    d = tmp_path_factory.mktemp("decoded")
    old = os.environ.get("CNNZOO_CACHE")
    os.environ["CNNZOO_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("CNNZOO_CACHE", None)
    else:
        os.environ["CNNZOO_CACHE"] = old


def _check_common(ds, n, shape, num_classes):
    assert len(ds) == n and tuple(ds.images.shape) == (n, *shape)
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert ds.num_classes == num_classes == len(ds.classes)
    assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == num_classes - 1
    assert int(ds.images.max()) == 255 and int(ds.images.min()) == 0  # full 8-bit range used


def test_mnist(data_dir):
    tr, te = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    _check_common(tr, 60000, (1, 28, 28), 10)
    _check_common(te, 10000, (1, 28, 28), 10)
    assert tr.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert te.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert tr.class_counts() == MNIST_COUNTS
    assert compute_stats(tr) == ((0.1307,), (0.3081,)) == (tr.mean, tr.std)
    assert not tr.hflip  # a mirrored digit is another symbol
    assert tr.images[0, 0, 0].sum() == 0 and tr.images[0].float().mean() > 20  # blank border, ink inside


def test_fashion_mnist(data_dir):
    tr, te = load_dataset("Fashion_MNIST", "train"), load_dataset("fashion-mnist", "test")
    _check_common(tr, 60000, (1, 28, 28), 10)
    _check_common(te, 10000, (1, 28, 28), 10)
    assert tr.class_counts() == [6000] * 10 and te.class_counts() == [1000] * 10
    assert tr.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert tr.classes[9] == "Ankle boot" and tr.hflip
    assert compute_stats(tr) == ((0.286,), (0.353,))


def test_digits_embedded():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    _check_common(tr, 1438, (1, 32, 32), 10)
    _check_common(te, 359, (1, 32, 32), 10)
    assert tr.class_counts() == [142, 146, 142, 146, 145, 146, 145, 143, 139, 144]
    assert te.class_counts() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]  # stratified 80/20
    assert compute_stats(tr) == (DATASETS["digits"].mean, DATASETS["digits"].std)
    again = load_dataset("digits", "test")  # the split is fixed
    assert torch.equal(again.images, te.images)
    images, target = _digits_arrays()  # scikit-learn's file, 1,797 digits
    idx_train, idx_test = stratified_split(target, 0.2, seed=0)
    assert len(set(idx_train) | set(idx_test)) == 1797 and not set(idx_train) & set(idx_test)
    assert torch.equal(tr.labels, torch.from_numpy(target[idx_train]))
    # the 4x bilinear upscale keeps the 8x8 content: pooling 4x4 blocks gives back the original closely
    back = F.avg_pool2d(tr.images[:50].float(), 4)[:, 0].flatten() * 16 / 255
    orig = torch.from_numpy(images[idx_train[:50]]).flatten()
    assert torch.corrcoef(torch.stack([back, orig]))[0, 1] > 0.95


def test_cifar10_jpeg_folder(data_dir, cache):
    te = load_dataset("cifar10", "test")
    _check_common(te, 10000, (3, 32, 32), 10)
    assert te.classes[:3] == ["airplane", "automobile", "bird"] and te.class_counts() == [1000] * 10
    assert te.skipped == [] and te.hflip
    assert te.mean == DATASETS["cifar10"].mean  # the published train statistics, not the split's own
    m, s = compute_stats(te)  # JPEG (q75) pixels are close to, not equal to, the original batches
    assert np.allclose(m, DATASETS["cifar10"].mean, atol=0.01)
    assert np.allclose(s, DATASETS["cifar10"].std, atol=0.01)
    again = load_dataset("cifar10", "test")  # second load comes from the decode cache
    assert torch.equal(again.images, te.images) and len(list(cache.glob("*.npy"))) == 1
    classes, items, _, how = scan_folder(data_dir / "cifar10-jpg", "train")  # listed, not decoded
    assert len(items) == 50000 and classes == te.classes and how == "train/"


def _write_cifar_tree(root, key, n=6, classes=10):
    rng = np.random.default_rng(0)
    if key == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir()
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     b"labels": [int(v) for v in rng.integers(0, classes, n)]}
            (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    else:
        d = root / "cifar-100-python"
        d.mkdir()
        for name in ("train", "test"):
            batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     b"fine_labels": [int(v) for v in rng.integers(0, 100, n)]}
            (d / name).write_bytes(pickle.dumps(batch, protocol=2))
        (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    return d


def test_cifar_python_archives(tmp_path):
    d10 = _write_cifar_tree(tmp_path, "cifar10")
    _write_cifar_tree(tmp_path, "cifar100")
    tr = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert tuple(tr.images.shape) == (30, 3, 32, 32) and tr.classes[-1] == "truck"
    raw = pickle.loads((d10 / "data_batch_1").read_bytes())
    assert torch.equal(tr.images[:6].reshape(6, -1), torch.from_numpy(raw[b"data"]))  # CHW order kept
    te = load_dataset("cifar-100", "test", data_dir=tmp_path)
    assert te.num_classes == 100 and te.classes[0] == "c0" and tuple(te.images.shape) == (6, 3, 32, 32)


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    d = _write_cifar_tree(tmp_path, "cifar10")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(CnnzooError, match="not a readable CIFAR batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()


def test_missing_data_says_where_files_go(tmp_path):
    with pytest.raises(CnnzooError, match=f"{tmp_path}/mnist"):
        load_dataset("mnist", data_dir=tmp_path)
    with pytest.raises(CnnzooError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(CnnzooError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(CnnzooError, match="did you mean cifar10"):
        load_dataset("cifar11")
    with pytest.raises(CnnzooError, match="unknown split"):
        load_dataset("digits", "dev")


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    (tmp_path / "x").mkdir()
    assert data_root(tmp_path / "x") == (tmp_path / "x").resolve()
    monkeypatch.delenv("CNNZOO_DATA")
    assert str(data_root()).endswith(".cache/cnnzoo")


def test_idx_reader_gz_and_plain(tmp_path, data_dir):
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    plain = tmp_path / "labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert np.array_equal(read_idx(plain), labels) and labels.shape == (10000,)
    header = b"\x00\x00\x0b\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")  # int16, 2x3
    arr = parse_idx(header + np.arange(6, dtype=">i2").tobytes())
    assert arr.tolist() == [[0, 1, 2], [3, 4, 5]] and arr.dtype == np.int16
    with pytest.raises(CnnzooError, match="header"):
        parse_idx(header + b"\x00" * 11)  # one byte short
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"12345")[:-6])
    with pytest.raises(CnnzooError, match="damaged gzip|truncated|header"):
        read_idx(bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_idx_reader_fuzz_only_raises_cnnzoo_error(data):
    try:
        parse_idx(data)
    except CnnzooError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=4, max_size=40).map(lambda b: b"\x00\x00" + b[2:]))
def test_idx_reader_fuzz_valid_magic(data):
    try:
        arr = parse_idx(data)
    except CnnzooError:
        return
    assert arr.size * arr.itemsize == len(data) - 4 - 4 * arr.ndim


def test_crop_flip_matches_reflect_pad_and_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 9, 7), dtype=torch.uint8, generator=g)
    pad = 3
    dy = torch.randint(0, 2 * pad + 1, (6,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (6,), generator=g)
    flip = torch.tensor([True, False, True, False, False, True])
    out = crop_flip(x, dy, dx, flip, pad)
    padded = F.pad(x.float(), (pad,) * 4, mode="reflect")  # RandomCrop(padding_mode="reflect")
    for i in range(6):
        ref = padded[i, :, dy[i]:dy[i] + 9, dx[i]:dx[i] + 7]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i].float(), ref), i
    assert out.dtype == torch.uint8
    centre = crop_flip(x, torch.full((6,), pad), torch.full((6,), pad), None, pad)
    assert torch.equal(centre, x)


@pytest.mark.parametrize("shape,pad,hflip", [((20, 3, 9, 7), 3, True), ((20, 1, 28, 28), 2, False),
                                             ((20, 3, 32, 32), 4, True), ((20, 1, 5, 5), 7, True),
                                             ((20, 2, 6, 6), 0, True), ((20, 3, 8, 8), 1, False)])
def test_crop_flip_table_gives_the_same_bytes_as_the_gather(shape, pad, hflip):
    g = torch.Generator().manual_seed(sum(shape) + pad)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    table = CropFlipTable(images, pad, hflip)
    assert table.table.numel() * table.table.element_size() == CropFlipTable.nbytes_for(images, pad, hflip)
    for _ in range(3):
        idx = torch.randint(0, shape[0], (13,), generator=g)  # repeats allowed, as across epochs
        dy = torch.randint(0, 2 * pad + 1, (13,), generator=g)
        dx = torch.randint(0, 2 * pad + 1, (13,), generator=g)
        flip = torch.rand(13, generator=g) < 0.5
        want = crop_flip(images[idx], dy, dx, flip if hflip else None, pad)
        got = table(idx, dy, dx, flip if hflip else None)
        assert got.dtype == torch.uint8 and got.shape == (13, *shape[1:])
        assert torch.equal(got, want)


def test_batch_prep_sample_uses_the_table_and_matches_the_plain_path():
    from cnnzoo.data import ImageSet
    from cnnzoo.data.batches import BatchPrep

    g = torch.Generator().manual_seed(1)
    data = ImageSet(torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8, generator=g),
                    torch.zeros(50, dtype=torch.long), ["a"], (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "t", "train")
    prep = BatchPrep(data, 16, 3, torch.device("cpu"), 2, True, False, data.mean, data.std)
    assert prep.build_table(data.images)
    assert not BatchPrep(data, 16, 3, torch.device("cpu"), 2, True, False, data.mean,
                         data.std).build_table(data.images, max_bytes=1000)  # too big: per-batch gather
    idx, dy, dx = torch.tensor([3, 7, 7, 49]), torch.tensor([0, 4, 2, 1]), torch.tensor([4, 0, 3, 2])
    flip = torch.tensor([True, False, True, False])
    assert torch.equal(prep.sample(data.images, idx, dy, dx, flip), prep(data.images[idx], dy, dx, flip))
    other = data.images.clone()  # not the tensor the table was built from: the plain path
    assert torch.equal(prep.sample(other, idx, dy, dx, flip), prep(other[idx], dy, dx, flip))


def test_normalize():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    y = normalize(x, torch.tensor([0.5]), torch.tensor([0.25]))
    assert torch.allclose(y, torch.tensor([[[[-2.0, 2.0]]]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_normalize_per_channel_equals_the_broadcast_formula(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8, generator=g)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    scale, shift = (1.0 / (255.0 * std)).to(dtype).view(1, -1, 1, 1), (mean / std).to(dtype).view(1, -1, 1, 1)
    want = x.to(dtype) * scale - shift
    got = normalize(x, mean, std, dtype)
    assert got.dtype == dtype and torch.equal(got, want)
    xf = x.to(dtype)
    assert torch.equal(normalize(xf, mean, std, dtype), want) and torch.equal(xf, x.to(dtype))  # input kept
