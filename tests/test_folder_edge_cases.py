"""Image folders and data roots at their edges: FIFOs, sockets and devices are skipped and reported, file
names that are not UTF-8 round-trip, a missing data root or a failed download leaves nothing behind, class
folders are matched to a model's classes by name, and a folder too small to split (or with both val/ and
test/) says so."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from helpers import META, cli, one_line, write_ckpt
from helpers import one_line_error as _one_line_error


def _class_folder(root: Path, n: int = 6, classes=("cat", "dog")) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (20, 20), (30 * i, 100 if c == "dog" else 0, 0)).save(root / c / f"{i}.png")
    return root


class _Alarm:
    """Fail after 60 s instead of hanging: opening a FIFO for reading blocks until a writer comes."""

    def __enter__(self):
        signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("hung on a FIFO")))
        signal.alarm(60)

    def __exit__(self, *exc):
        signal.alarm(0)


def test_fifos_sockets_and_devices_in_an_image_folder_are_skipped_and_reported(tmp_path, monkeypatch):
    import socket

    from cnnzoo.data import load_folder
    from cnnzoo.data.folder import default_size

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    root = _class_folder(tmp_path / "f")
    os.mkfifo(root / "cat" / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "dog" / "sock.jpg"))
    os.symlink("/dev/zero", root / "dog" / "zero.png")  # a device behind an image name
    with _Alarm():
        assert default_size(root) == 20  # header reads skip them too
        ds = load_folder(root, "train", img_size=16)
        held_out = load_folder(root, "test", img_size=16)
    sock.close()
    why = {Path(p).name: w for p, w in ds.skipped + held_out.skipped}  # the seeded split shares them out
    assert why == {"pipe.png": "not a regular file (a FIFO)", "sock.jpg": "not a regular file (a socket)",
                   "zero.png": "not a regular file (a character device)"}
    assert f"skipped {len(ds.skipped)} unreadable image file(s)" in ds.report()


def test_predict_calls_a_fifo_not_a_regular_file(tmp_path, capsys, png):
    run = write_ckpt(tmp_path / "run")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with _Alarm():
        one_line(capsys, cli(["predict", str(run), str(fifo)]), "pipe.png: not a regular file (a FIFO)")
        assert cli(["predict", str(run), str(fifo), str(png)]) == 0  # with a real image: skipped, reported
    out, err = capsys.readouterr()
    assert f"warning: skipped {fifo}: not a regular file (a FIFO)" in err and "seven.png" in out


def test_file_names_that_are_not_utf8_never_raise(tmp_path, monkeypatch, capsys):
    from cnnzoo.data import load_folder

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    root = _class_folder(tmp_path / "f")
    raw = os.fsencode(root / "cat") + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not valid UTF-8
    with open(raw, "wb") as f:
        f.write((root / "cat" / "0.png").read_bytes())
    os.mkfifo(os.fsencode(root / "dog") + b"/bad\xff.png")  # ... and reported in a skip line
    ds = load_folder(root, "train", img_size=16)
    assert any("caf" in p for p in ds.paths) and len(ds.skipped) == 1
    assert load_folder(root, "train", img_size=16).paths == ds.paths  # the decode cache round-trips it
    run = write_ckpt(tmp_path / "run")
    assert cli(["predict", str(run), str(root / "cat"), str(root / "dog"), "--csv", str(tmp_path / "s.csv")]) == 0
    out, err = capsys.readouterr()
    assert "caf\\xe9-\\xff.png" in out and "bad\\xff.png" in err  # escaped, not UnicodeEncodeError
    assert b"cat/caf\xe9-\xff.png" in (tmp_path / "s.csv").read_bytes()  # the name's own bytes
    assert cli(["predict", str(run), str(root / "cat"), "--format", "json"]) == 0
    assert "caf\\udce9" in capsys.readouterr().out


def test_cnnzoo_data_pointing_at_a_missing_folder_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nowhere" / "data"
    monkeypatch.setenv("CNNZOO_DATA", str(missing))
    monkeypatch.setenv("CNNZOO_OFFLINE", "0")  # a download would be tried (and fail: no network here) ...
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("a download was tried")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "--dataset", "mnist", "--out", str(tmp_path / "run")],
                 ["eval", str(write_ckpt(tmp_path / "ck", {**META, "dataset": "cifar10", "in_chans": 3,
                                                           "mean": [0.5] * 3, "std": [0.2] * 3},
                                         cnnzoo.create_model("lenet5", in_chans=3).state_dict()))]):
        one_line(capsys, cli(argv), f"$CNNZOO_DATA is '{missing}', which is not an existing folder")
    assert not (tmp_path / "nowhere").exists()
    # the embedded digits need no data root at all
    assert cnnzoo.load_dataset("digits", "test").num_classes == 10


def test_missing_data_directory_says_where_files_go(tmp_path, capsys):
    # an existing but empty root is in test_train.py; here the root itself is missing
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, f"{tmp_path / 'nowhere' / 'mnist'}/train-images-idx3-ubyte.gz")


def test_a_failed_download_leaves_no_folder_and_no_partial_file(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.error
    import urllib.request

    from cnnzoo.data import datasets

    base, files = datasets._MNIST_URLS["mnist"]
    first = next(iter(files))
    body = b"first file"
    monkeypatch.setitem(datasets._MNIST_URLS, "mnist", (base, {**files, first: hashlib.md5(body).hexdigest()}))

    def flaky(url, timeout=None):  # the first file arrives, the second does not
        if url.endswith(first):
            return io.BytesIO(body)
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    (tmp_path / "root").mkdir()
    with pytest.raises(CnnzooError, match="could not download mnist"):
        cnnzoo.load_dataset("mnist", "train", data_dir=tmp_path / "root", download=True)
    assert os.listdir(tmp_path / "root") == []  # neither mnist/ nor the first file nor a .part file


def _colour_ckpt(root: Path, classes: list[str]) -> Path:
    meta = {**META, "classes": classes, "num_classes": len(classes), "dataset": "folder:x", "in_chans": 3,
            "mean": [0.5] * 3, "std": [0.25] * 3, "model": "lenet5_relu", "data_in_chans": 3}
    torch.manual_seed(0)
    net = cnnzoo.create_model("lenet5_relu", num_classes=len(classes), in_chans=3)
    with torch.no_grad():  # a head that tells the classes apart: red -> its first class
        net.classifier[-1].weight.normal_(0, 1)
    return write_ckpt(root, meta, net.state_dict())


def test_eval_on_a_folder_matches_class_names_not_positions(tmp_path, capsys, monkeypatch):
    from cnnzoo.deploy.inference import predict
    from cnnzoo.training import evaluate

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "pets"
    _class_folder(data / "train", n=4)  # folders sort as cat, dog
    _class_folder(data / "val", n=4)
    # the model's classes in another order than the folder's: matched by name, and said
    run = _colour_ckpt(tmp_path / "run", ["dog", "cat"])
    with pytest.warns(cnnzoo.errors.CnnzooWarning, match="class folders are in another order: matched to the "
                                                         "model's classes by name"):
        r = evaluate(run, dataset=f"folder:{data}", split="train")
    truth = predict(run, data / "train", warn=None).predictions  # the same net, labels by the folder's name
    want = sum(p.label == Path(p.path).parent.name for p in truth) / len(truth)
    assert r["top1"] == pytest.approx(want) and r["classes"] == ["dog", "cat"]
    assert [c["support"] for c in r["per_class"]] == [4, 4]
    # a subset of the model's classes (no fox in this folder): matched by name
    run3 = _colour_ckpt(tmp_path / "run3", ["cat", "dog", "fox"])
    with pytest.warns(cnnzoo.errors.CnnzooWarning, match="class folders are 2 of the model's 3"):
        r3 = evaluate(run3, dataset=f"folder:{data}", split="train")
    assert [c["support"] for c in r3["per_class"]] == [4, 4, 0]
    # names the model does not know: refused, both sets listed (they used to be matched by position: 0.00 %)
    other = tmp_path / "other"
    _class_folder(other / "train", n=2, classes=("ant", "bee"))
    _class_folder(other / "val", n=2, classes=("ant", "bee"))
    err = one_line(capsys, cli(["eval", str(run), "--dataset", f"folder:{other}"]),
                   "has classes the model does not know (2 of 2, e.g. 'ant'): its classes are ant, bee; the "
                   "model's are dog, cat")
    assert err.startswith("cnnzoo eval: error:")


def test_predict_csv_ids_are_unique_across_class_folders(tmp_path, capsys):
    run = write_ckpt(tmp_path / "run")
    root = _class_folder(tmp_path / "imgs", n=3)
    csv_path = tmp_path / "sub.csv"
    assert cli(["predict", str(run), str(root / "cat"), str(root / "dog"), "--csv", str(csv_path)]) == 0
    ids = [line.split(",")[0] for line in csv_path.read_text().splitlines()[1:]]
    assert ids == sorted(f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3)), ids  # no duplicate ids
    assert cli(["predict", str(run), str(root / "cat"), "--csv", str(csv_path)]) == 0  # unique stems: stems
    assert [line.split(",")[0] for line in csv_path.read_text().splitlines()[1:]] == ["0", "1", "2"]
    capsys.readouterr()


def test_a_folder_too_small_to_split_says_so(tmp_path, monkeypatch, capsys):
    from cnnzoo.data import load_folder

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    root = _class_folder(tmp_path / "tiny", n=1)
    assert len(load_folder(root, "train", img_size=8)) == 2
    with pytest.raises(CnnzooError, match=r"is too small to split: its classes hold 1 to 1 image\(s\) .* add "
                                          r"images \(5 or more per class\), or give separate train/ and val/"):
        load_folder(root, "test", img_size=8)


def test_with_both_val_and_test_the_one_used_is_named(tmp_path, monkeypatch):
    from cnnzoo.data import load_folder

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "both"
    for split in ("train", "val", "test"):
        _class_folder(root / split, n=2)
    with pytest.warns(cnnzoo.errors.CnnzooWarning, match=r"has both test/ and val/: test/ is the held-out split, "
                                                         r"val/ is not read"):
        ds = load_folder(root, "test", img_size=8)
    assert all("/test/" in p for p in ds.paths)
