"""Photo folders in bounded memory: chunked decoding straight into the cache, streamed whole-set passes, the
memory and disk checks, and the folder edge cases (symlinked sub-folders, rewritten files, missing classes)."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data import arrays, load_folder
from cnnzoo.data import folder as folder_mod
from cnnzoo.data.images import decode_file, match_channels
from cnnzoo.errors import CnnzooError, CnnzooWarning

SIDE = 64


def _make_folder(root, n_per_class=60, classes=("a", "b", "c"), grey=False):
    for c_i, c in enumerate(classes):
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(n_per_class):
            a = np.random.default_rng(c_i * 1000 + i).integers(0, 256, (SIDE + 8, SIDE + 4, 3), dtype=np.uint8)
            im = Image.fromarray(a)
            (im.convert("L") if grey else im).save(d / f"{i:04d}.png")
        v = root / "val" / c
        v.mkdir(parents=True)
        Image.fromarray(np.full((SIDE, SIDE, 3), 40 * c_i, dtype=np.uint8)).save(v / "v.png")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 images and results over 8 images in a scratch memory map."""
    row = 3 * SIDE * SIDE
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 4 * row)
    monkeypatch.setattr(arrays, "IN_MEMORY_BYTES", 8 * row)
    return row


def test_decode_and_stats_never_hold_the_whole_set(tmp_path, cache, small_chunks):
    load_folder(_make_folder(tmp_path / "warm", n_per_class=2), "train", img_size=SIDE)  # imports done
    root = _make_folder(tmp_path / "big")
    whole = 180 * small_chunks
    tracemalloc.start()
    try:
        ds = load_folder(root, "train", img_size=SIDE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.images.shape == (180, 3, SIDE, SIDE) and ds.mapped
    assert peak < whole / 3, f"peak traced allocation {peak} B for a {whole} B set"
    # the same pixels and statistics as decoding every file on its own
    ref = np.stack([decode_file(p, SIDE)[0] for p in ds.paths])
    assert np.array_equal(ds.images.numpy(), ref)
    f = ref.astype(np.float64) / 255
    assert ds.mean == tuple(round(float(v), 4) for v in f.mean(axis=(0, 2, 3)))
    assert ds.std == tuple(round(float(v), 4) for v in f.std(axis=(0, 2, 3), ddof=1))


def test_cache_file_is_a_plain_npy_and_reloads_mapped(tmp_path, cache):
    root = _make_folder(tmp_path / "f", n_per_class=5)
    first = load_folder(root, "train", img_size=SIDE)
    (npy,) = [p for p in cache.rglob("*.npy")]
    assert np.array_equal(np.load(npy), first.images.numpy())
    again = load_folder(root, "train", img_size=SIDE)
    assert again.mapped and torch.equal(again.images, first.images)


def test_grey_then_colour_upgrades_the_rows_written_so_far(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(folder_mod, "DECODE_CHUNK", 2)
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 4 * SIDE * SIDE)  # the in-place RGB rewrite moves one row at a time
    root = _make_folder(tmp_path / "g", n_per_class=4, grey=True)
    Image.fromarray(np.full((SIDE, SIDE, 3), (200, 10, 10), dtype=np.uint8)).save(root / "train" / "c" / "z.png")
    ds = load_folder(root, "train", img_size=SIDE)
    assert ds.in_chans == 3 and len(ds) == 13
    for i, p in enumerate(ds.paths[:-1]):  # every grey row, moved in place, is its file's pixels three times
        assert torch.equal(ds.images[i], torch.from_numpy(decode_file(p, SIDE)[0]).expand(3, -1, -1))
    assert ds.images[-1, :, 0, 0].tolist() == [200, 10, 10]
    assert load_folder(_make_folder(tmp_path / "h", n_per_class=3, grey=True), "train", img_size=SIDE).in_chans == 1


def test_chunked_channel_conversion_and_subset_match_whole_set_ops(small_chunks):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (30, 3, SIDE, SIDE), dtype=np.uint8))
    grey = arrays.convert_channels(x, 1)
    assert torch.equal(grey, torch.from_numpy(np.stack([match_channels(a, 1) for a in x.numpy()])))
    rgb = arrays.convert_channels(grey, 3)
    assert isinstance(rgb.numpy().base, np.memmap) or rgb.numpy().base is not None
    assert torch.equal(rgb, grey.repeat(1, 3, 1, 1))
    idx = torch.tensor([29, 0, 7, 7, 12, 3, 5, 9, 11, 2, 1])
    assert torch.equal(arrays.take_rows(x, idx), x[idx])


def test_pixel_stats_subsample_is_evenly_spaced():
    x = torch.from_numpy(np.arange(10, dtype=np.uint8).repeat(3 * 4).reshape(10, 3, 2, 2) * 25)
    mean, _ = arrays.pixel_stats(x, max_images=2)  # images 0 and 9
    assert mean == (round(9 * 25 / 2 / 255, 4),) * 3


def test_not_enough_disk_is_one_line_before_decoding(tmp_path, cache, monkeypatch):
    root = _make_folder(tmp_path / "d", n_per_class=3)
    decoded = []
    monkeypatch.setattr(folder_mod, "iter_decoded", lambda *a, **k: decoded.append(1) or iter(()))
    monkeypatch.setattr(folder_mod.shutil, "disk_usage", lambda p: os.statvfs_result((0,) * 10)
                        if False else type("U", (), {"free": 1000})())
    with pytest.raises(CnnzooError, match=r"need up to .*B of the decode cache .* CNNZOO_CACHE"):
        load_folder(root, "train", img_size=SIDE)
    assert decoded == [] and not list(cache.rglob("*.npy")) and not list(cache.rglob(".tmp-*"))


def test_unwritable_cache_decodes_into_scratch(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CNNZOO_CACHE", str(ro / "cache"))
    root = _make_folder(tmp_path / "s", n_per_class=3)
    ds = load_folder(root, "train", img_size=SIDE)
    assert len(ds) == 9 and ds.mapped and not list(tmp_path.rglob(".cnnzoo-decode-*"))


def test_symlinked_subfolders_are_followed_once(tmp_path, cache):
    root = _make_folder(tmp_path / "l", n_per_class=3)
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    for i in range(4):
        Image.fromarray(np.full((SIDE, SIDE, 3), i, dtype=np.uint8)).save(extra / f"x{i}.png")
    os.symlink(extra, root / "train" / "a" / "more")
    os.symlink(root / "train" / "a", root / "train" / "a" / "loop")  # a link back up: no endless walk
    ds = load_folder(root, "train", img_size=SIDE)
    assert ds.class_counts() == [3 + 4, 3, 3]


def test_rewritten_file_with_same_size_and_mtime_invalidates_the_cache(tmp_path, cache):
    root = _make_folder(tmp_path / "r", n_per_class=3)
    first = load_folder(root, "train", img_size=SIDE)
    target = root / "train" / "b" / "0000.png"
    st = target.stat()
    a = np.asarray(Image.open(target)).copy()
    a[SIDE // 2, SIDE // 2] ^= 0xFF  # a centre pixel, new content; then the old size and mtime back
    Image.fromarray(a).save(target)
    with open(target, "r+b") as f:
        f.truncate(st.st_size)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = load_folder(root, "train", img_size=SIDE)
    i = first.paths.index(str(target))
    assert second.paths == first.paths and second.skipped == []
    assert not torch.equal(first.images[i], second.images[i])


def test_val_without_a_training_class_warns(tmp_path, cache):
    root = _make_folder(tmp_path / "v", n_per_class=3)
    for f in (root / "val" / "c").iterdir():
        f.unlink()
    with pytest.warns(CnnzooWarning, match="no image of 1 training class"):
        load_folder(root, "test", img_size=SIDE)


def test_memory_check_counts_weights_optimizer_and_activations(monkeypatch):
    from cnnzoo.training import setup

    small = setup.run_peak_bytes("resnet18", 3, 224, 8, "sgd")
    adam = setup.run_peak_bytes("resnet18", 3, 224, 8, "adamw")
    params = 11_689_512 * 4
    assert adam - small == params  # AdamW keeps a second moment per weight
    assert small > params * 3 + 8 * 2 * 3 * 224 * 224 * 4
    monkeypatch.setattr(setup, "available_memory", lambda dev: small - 1)
    with pytest.raises(CnnzooError, match=r"resnet18 needs about .* GiB to train"):
        setup.check_memory("resnet18", 3, 224, 8, torch.device("cpu"), optimizer="sgd")
    monkeypatch.setattr(setup, "available_memory", lambda dev: small + 1)
    setup.check_memory("resnet18", 3, 224, 8, torch.device("cpu"), optimizer="sgd")
