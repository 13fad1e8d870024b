"""Image-folder data sets: every kind of bad or odd file, splits, the decode cache, real iChallenge-PM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnzoo.data import folder as folder_mod
from cnnzoo.data import load_dataset, load_folder, load_image
from cnnzoo.data.images import decode_file
from cnnzoo.errors import CnnzooError

RNG = np.random.default_rng(0)


def _rgb(h=40, w=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_messy_tree(root):
    """cat/ and dog/ with one file of each odd kind; returns {name: expected outcome}."""
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    cat.mkdir(parents=True)
    dog.mkdir(parents=True)
    (root / "val" / "cat").mkdir(parents=True)
    (root / "val" / "dog").mkdir(parents=True)
    _rgb().save(cat / "ok.jpg", quality=90)
    good = (cat / "ok.jpg").read_bytes()
    (cat / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "notes.jpg").write_bytes(b"this is text, not a JPEG")
    (cat / "readme.txt").write_text("not an image extension: ignored")
    (cat / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: not even listed
    _rgb(seed=1).convert("L").save(cat / "gray.png")
    Image.fromarray(np.full((20, 20, 4), (10, 200, 30, 0), dtype=np.uint8)).save(cat / "transparent.png")
    _rgb(seed=2).convert("P").save(dog / "palette.png")
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(dog / "white16.png")  # 16-bit grey
    _rgb(seed=3).convert("CMYK").save(dog / "cmyk.jpg")
    _rgb(seed=4).save(dog / "UPPER.JPG")
    _rgb(seed=5).save(dog / "Mixed.PnG")
    (dog / "nested").mkdir()
    _rgb(seed=6).save(dog / "nested" / "deep.webp")
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (2400, 3200, 3), dtype=np.uint8)).save(
        dog / "large.jpg", quality=70)  # 7.7 MP photo: decoded at reduced scale (JPEG draft)
    _rgb(seed=8).save(root / "val" / "cat" / "v1.jpg")
    _rgb(seed=9).save(root / "val" / "dog" / "v2.bmp")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_messy_folder_skips_and_converts(tmp_path, cache):
    root = tmp_path / "pets"
    make_messy_tree(root)
    ds = load_dataset(f"folder:{root}", "train", img_size=24)
    names = sorted(p.split("/")[-1] for p in ds.paths)
    assert names == sorted(["ok.jpg", "gray.png", "transparent.png", "palette.png", "white16.png", "cmyk.jpg",
                            "UPPER.JPG", "Mixed.PnG", "deep.webp", "large.jpg"])
    assert tuple(ds.images.shape) == (10, 3, 24, 24) and ds.classes == ["cat", "dog"]
    assert ds.class_counts() == [3, 7]
    skipped = {p.split("/")[-1]: why for p, why in ds.skipped}
    assert set(skipped) == {"truncated.jpg", "empty.jpg", "notes.jpg"}
    assert "truncated" in skipped["truncated.jpg"] and "not an image" in skipped["empty.jpg"]
    assert [p.split("/")[-1] for p in ds.ignored] == ["readme.txt"]
    report = ds.report()
    assert "skipped 3 unreadable" in report and "truncated.jpg" in report and "readme.txt" in report
    by_name = {p.split("/")[-1]: ds.images[i] for i, p in enumerate(ds.paths)}
    g = by_name["gray.png"]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # grey -> RGB by repetition
    assert (by_name["white16.png"] == 255).all()  # 16-bit 65535 -> 8-bit 255
    assert (by_name["transparent.png"] == 255).all()  # fully transparent -> white background
    val = load_dataset(f"folder:{root}", "test", img_size=24)
    assert len(val) == 2 and val.labels.tolist() == [0, 1] and val.classes == ds.classes


def test_empty_class_folder_is_a_clear_error(tmp_path, cache):
    root = tmp_path / "pets"
    make_messy_tree(root)
    (root / "train" / "bird").mkdir()
    with pytest.raises(CnnzooError, match="class 'bird' has no readable image"):
        load_dataset(f"folder:{root}", "train", img_size=16)
    (root / "train" / "bird" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(CnnzooError, match="class 'bird' has no readable image"):
        load_dataset(f"folder:{root}", "train", img_size=16)


def test_folder_without_split_dirs_gets_a_fixed_stratified_split(tmp_path, cache):
    root = tmp_path / "shapes"
    for c, n in (("a", 10), ("b", 5), ("c", 2)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    tr = load_dataset(f"folder:{root}", "train", img_size=8)
    te = load_dataset(f"folder:{root}", "test", img_size=8)
    assert tr.class_counts() == [8, 4, 1] and te.class_counts() == [2, 1, 1]
    assert not set(tr.paths) & set(te.paths) and len(tr) + len(te) == 17
    assert tr.in_chans == 1  # every image grey -> a 1-channel data set
    assert load_dataset(f"folder:{root}", "test", img_size=8).paths == te.paths


def test_decode_cache_is_used_and_invalidated(tmp_path, cache, monkeypatch):
    root = tmp_path / "pets"
    make_messy_tree(root)
    first = load_folder(root, "train", img_size=16)
    calls = []
    real = folder_mod.iter_decoded
    monkeypatch.setattr(folder_mod, "iter_decoded", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = load_folder(root, "train", img_size=16)
    assert calls == [] and torch.equal(first.images, again.images) and again.skipped == first.skipped
    _rgb(seed=11).save(root / "train" / "cat" / "new.png")  # a new file changes the cache key
    third = load_folder(root, "train", img_size=16)
    assert calls == [1] and len(third) == len(first) + 1


def test_load_image_for_predict_matches_training_pixels(tmp_path, cache):
    root = tmp_path / "pets"
    make_messy_tree(root)
    ds = load_folder(root, "train", img_size=20)
    i = next(i for i, p in enumerate(ds.paths) if p.endswith("cmyk.jpg"))
    assert np.array_equal(load_image(ds.paths[i], 20, 3), ds.images[i].numpy())
    assert load_image(ds.paths[i], 20, 1).shape == (1, 20, 20)
    with pytest.raises(CnnzooError, match="cannot read image"):
        load_image(root / "train" / "cat" / "empty.jpg", 20)


def test_resize_is_shorter_side_then_centre_crop(tmp_path):
    a = np.zeros((40, 80, 3), dtype=np.uint8)
    a[:, 12:68] = 255  # white in the middle of a 2:1 image, black at both ends
    Image.fromarray(a).save(tmp_path / "wide.png")
    arr, gray, why = decode_file(tmp_path / "wide.png", 10)
    assert why == "" and not gray and arr.shape == (3, 10, 10)
    assert (arr == 255).all()  # the centre 40x40 was kept, the black ends were cropped away


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), ext=st.sampled_from([".jpg", ".png", ".gif", ".bmp", ".webp", ".tif"]),
       header=st.sampled_from([b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF"]))
def test_decoder_fuzz_never_raises(tmp_path, data, ext, header):
    p = tmp_path / f"fuzz{ext}"
    p.write_bytes(header + data)
    arr, _, why = decode_file(p, 8)
    assert (arr is None) == bool(why)
    if arr is not None:
        assert arr.dtype == np.uint8 and arr.shape[1:] == (8, 8)


def test_ichallenge_pm_real_folder(data_dir, cache):
    tr = load_dataset(f"folder:{data_dir / 'ichallenge-pm'}", "train", img_size=32)
    te = load_dataset(f"folder:{data_dir / 'ichallenge-pm'}", "val", img_size=32)
    assert tr.classes == ["normal", "pm"]
    assert tr.class_counts() == [187, 213] and te.class_counts() == [189, 211]
    assert tuple(tr.images.shape) == (400, 3, 32, 32) and tr.skipped == [] and tr.hflip
    assert 0.2 < tr.mean[0] < 0.35 and tr.mean[0] > tr.mean[1] > tr.mean[2]  # fundus photos are red
    assert folder_mod.default_size(data_dir / "ichallenge-pm") == 224
    assert folder_mod.default_size(data_dir / "cifar10-jpg") == 32
