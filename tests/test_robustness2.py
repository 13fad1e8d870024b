"""Issue 19, robustness second round: each class of failure fixed where every command passes through it.

Section -> where:
1. a run folder belongs to one run: ``tests/test_rundir.py`` (the lock and the resume/overwrite plan, alone);
2. a checkpoint validated as a whole (``training/ckpt_check.py``): here, every edited field through
   ``predict``, ``eval`` and ``export``, which leaves no file behind;
3. the OS says no (full disk, FIFOs, non-UTF-8 names, a missing ``$CNNZOO_DATA``): here;
4. every command checks its arguments the same way (``cnnzoo.utils.ranges`` flags, one-line argparse errors): here;
5. data sets say what they did (class names matched by name, unique CSV ids, too small to split, val/test): here.
Each case must give exit status 2 and one line on stderr (or a reported skip), and leave nothing half-written.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(argv: list[str]) -> int:
    """``main``'s exit status, argparse's ``SystemExit`` included."""
    try:
        return main(argv)
    except SystemExit as e:
        return 0 if e.code is None else int(e.code)


def one_line(capsys, rc: int, needle: str) -> str:
    """The command failed with status 2 and exactly one line on stderr holding ``needle``, nothing on stdout."""
    out, err = capsys.readouterr()
    err = err.strip()
    assert rc == 2, (rc, out[-500:], err[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert out == "", out[-500:]
    return err


# ------------------------------------------------------------------- 2. a checkpoint validated as a whole
META = {"model": "lenet5", "model_kwargs": {}, "num_classes": 10, "in_chans": 1, "img_size": 32,
        "mean": [0.3055], "std": [0.3237], "classes": [str(i) for i in range(10)], "dataset": "digits",
        "resize": "shorter-side+center-crop", "data_img_size": 32, "data_in_chans": 1}


def write_ckpt(root: Path, meta: dict | None = None, weights: dict | None = None) -> Path:
    """A checkpoint written directly (no training: only its consistency matters here)."""
    torch.manual_seed(0)
    if weights is None:
        weights = cnnzoo.create_model("lenet5").state_dict()
    ck.write_checkpoint(root, "best", weights, META if meta is None else meta)
    return root


def _nan(sd: dict) -> dict:
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}


# (name, meta changes (None: drop the field), weights transform, words the one line must hold)
BAD_CKPTS = [
    ("fewer class names than outputs", {"classes": ["a", "b", "c"]}, None, "'classes' lists 3 names but"),
    ("class count vs head", {"num_classes": 7, "classes": list("abcdefg")}, None,
     "'num_classes' is 7 (and 7 class names) but the head's weights"),
    ("duplicate class names", {"classes": ["0"] * 10}, None, "'classes' names '0' twice"),
    ("mean as a string", {"mean": "0.5"}, None, "'mean' must be a list of 1 finite numbers"),
    ("mean of the wrong length", {"mean": [0.1, 0.2]}, None, "'mean' must be a list of 1"),
    ("std zero", {"std": [0.0]}, None, "'std' must be a list of 1 positive finite numbers"),
    ("std NaN", {"std": [float("nan")]}, None, "'std'"),
    ("img_size 0", {"img_size": 0}, None, "'img_size' must be a whole number >= 1 (got 0)"),
    ("img_size negative", {"img_size": -32}, None, "'img_size' must be a whole number >= 1 (got -32)"),
    ("img_size below the minimum", {"img_size": 8}, None, "'img_size' is 8, below lenet5's minimum input 28"),
    ("img_size as text", {"img_size": "32"}, None, "'img_size' must be a whole number"),
    ("img_size missing", {"img_size": None}, None, "'img_size' is missing"),
    ("data_img_size 0", {"data_img_size": 0}, None, "'data_img_size' must be"),
    ("in_chans vs the first conv", {"in_chans": 3}, None,
     "'in_chans' is 3 but the first conv's weights (features.c1.weight) take 1 channel(s): set in_chans to 1"),
    ("in_chans zero", {"in_chans": 0}, None, "'in_chans' must be a whole number >= 1"),
    ("unknown model_kwargs", {"model_kwargs": {"bogus": 1}}, None, "'model_kwargs' {'bogus': 1} does not fit"),
    ("model_kwargs not a mapping", {"model_kwargs": "x"}, None, "'model_kwargs' must be a mapping"),
    ("unknown model", {"model": "lenet6"}, None, "'model' names no registered model"),
    ("num_classes as text", {"num_classes": "ten"}, None, "'num_classes' must be a whole number"),
    ("crop zero (published weights' transform)", {"resize": 36, "crop": 0}, None, "'crop' must be a whole number"),
    ("all-NaN weights", {}, _nan, "the weights are not finite (NaN or inf in"),
    ("one inf weight", {}, lambda sd: {**sd, "classifier.f6.bias": torch.full_like(sd["classifier.f6.bias"],
                                                                                    float("inf"))},
     "the weights are not finite (NaN or inf in classifier.f6.bias)"),
]


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "seven.png"
    Image.new("L", (28, 28), 90).save(p)
    return p


@pytest.mark.parametrize("name,change,wt,words", BAD_CKPTS, ids=[c[0] for c in BAD_CKPTS])
def test_an_edited_checkpoint_is_one_line_in_predict_eval_export(tmp_path, capsys, png, name, change, wt,
                                                                  words):
    meta = {k: v for k, v in {**META, **change}.items() if v is not None}
    weights = cnnzoo.create_model("lenet5").state_dict()
    if wt is not None:
        if "f6" in str(words) and "classifier.f6.bias" not in weights:
            pytest.skip("lenet5's head is named differently")
        weights = wt(weights)
    run = write_ckpt(tmp_path / "run", meta, weights)
    before = sorted(os.listdir(run))
    for argv in (["predict", str(run), str(png)], ["eval", str(run)], ["export", str(run)],
                 ["export", str(run), "--format", "torchscript"]):
        err = one_line(capsys, cli(argv), words)
        assert err.startswith(f"cnnzoo {argv[0]}: error: ") and "model.safetensors" in err, err
    assert sorted(os.listdir(run)) == before  # export left no .onnx/.pt and no temp file
    with pytest.raises(CnnzooError, match="checkpoint field|not finite"):
        load_checkpoint(run)


def test_a_consistent_checkpoint_still_loads_and_exports(tmp_path, capsys, png):
    run = write_ckpt(tmp_path / "run")
    model, meta = load_checkpoint(run)
    assert meta["num_classes"] == 10
    assert main(["predict", str(run), str(png)]) == 0
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert (run / "lenet5.pt").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("opset,words", [("99", "the ONNX opset (--opset) must be a whole number in [17, "),
                                         ("16", "must be a whole number in [17, "),
                                         ("0", "--opset: must be a whole number >= 1, got 0")])
def test_export_opset_out_of_range_is_one_line_and_nothing_on_stdout(tmp_path, capsys, opset, words):
    run = write_ckpt(tmp_path / "run")
    one_line(capsys, cli(["export", str(run), "--opset", opset]), words)
    assert not any(n.endswith(".onnx") or n.startswith(".tmp") for n in os.listdir(run))


def test_export_that_fails_verification_leaves_no_file(tmp_path, monkeypatch, capsys):
    from cnnzoo.deploy import exporting

    run = write_ckpt(tmp_path / "run")
    monkeypatch.setattr(exporting, "_run_torchscript", lambda path, x: torch.full((3, 10), float("nan")))
    one_line(capsys, cli(["export", str(run), "--format", "torchscript"]), "differs from PyTorch by nan")
    assert sorted(os.listdir(run)) == ["best"]


# ------------------------------------------------------------------------------------ 3. the OS says no
@pytest.fixture
def full_disk(tmp_path):
    """A real 200 KiB tmpfs (CI runs as root) as a factory: ``full_disk(kib)`` mounts one and returns it."""
    mounted: list[Path] = []

    def mount(kib: int = 200) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs",
                                                str(where)], capture_output=True).returncode != 0:
            pytest.skip("mounting a small tmpfs needs root (CI has it); the write path is simulated in "
                        "test_checkpoint_write_on_a_full_disk_simulated")
        mounted.append(where)
        return where

    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)


def _leftovers(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.startswith((".tmp", ".part")) or n.endswith(".old"))


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(full_disk):
    disk = full_disk(400)  # room for one LeNet-5 checkpoint (244 KB), not for its next version beside it
    net = cnnzoo.create_model("lenet5")
    ck.write_checkpoint(disk / "run", "last", net.state_dict(), META)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    with pytest.raises(OSError) as e:  # SafetensorError("No space left on device") as the OSError it is
        ck.write_checkpoint(disk / "run", "last", net.state_dict(), META)
    assert e.value.errno == 28 and "model.safetensors" in e.value.filename
    model, _ = load_checkpoint(disk / "run", prefer="last")
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())  # the previous one, intact
    assert _leftovers(disk / "run") == []


def test_checkpoint_write_on_a_full_disk_simulated(tmp_path, monkeypatch):
    """The same without root: safetensors' own error for a full disk becomes an OSError with the path."""
    import safetensors.torch
    from safetensors import SafetensorError

    ck.write_checkpoint(tmp_path / "run", "last", cnnzoo.create_model("lenet5").state_dict(), META)

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match="No space left on device"):
        ck.write_checkpoint(tmp_path / "run", "last", {}, META)
    assert load_checkpoint(tmp_path / "run", prefer="last")[1]["model"] == "lenet5"
    assert _leftovers(tmp_path / "run") == []


def test_train_on_a_full_disk_is_one_line_with_the_free_space(full_disk, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    disk = full_disk(200)
    rc = cli(["train", "--model", "lenet5", "--dataset", "digits", "--max-steps", "1", "--out",
              str(disk / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "No space left on device" in err[0] and "free there" in err[0] and str(disk) in err[0], err
    assert _leftovers(disk / "run") == []


@pytest.mark.parametrize("cmd", ["export", "predict --csv", "eval --out"])
def test_outputs_on_a_full_disk_are_one_line_and_leave_no_file(full_disk, tmp_path, capsys, png, cmd):
    run = write_ckpt(tmp_path / "run")
    disk = full_disk(64)
    with open(disk / "filler", "wb", buffering=0) as f:  # fill it: not even a small CSV fits
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    argv = {"export": ["export", str(run), "--out", str(disk / "m.onnx")],
            "predict --csv": ["predict", str(run), str(png), "--csv", str(disk / "s.csv")],
            "eval --out": ["eval", str(run), "--out", str(disk / "ev")]}[cmd]
    rc = cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err
    left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.name != "filler" and p.is_file())
    assert left in ([], ["ev/confusion.png"], ["ev/eval.json"]) if cmd == "eval --out" else left == [], left
    assert not [p for p in disk.rglob(".tmp*")]


def _class_folder(root: Path, n: int = 6, classes=("cat", "dog")) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (20, 20), (30 * i, 100 if c == "dog" else 0, 0)).save(root / c / f"{i}.png")
    return root


class _Alarm:
    """Fail instead of hanging for ever (what a FIFO opened for reading used to do)."""

    def __enter__(self):
        import signal

        signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("hung on a FIFO")))
        signal.alarm(60)

    def __exit__(self, *exc):
        import signal

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


# ------------------------------------------------------------------- 4. arguments checked the same way
# (argv, the one line's words): every numeric flag of predict/eval/export/summary/rf/erf through cnnzoo.utils.ranges
BAD_FLAGS = [
    (["predict", "RUN", "IMG", "--batch-size", "0"],
     "cnnzoo predict: error: --batch-size: must be a whole number >= 1, got 0 (see cnnzoo predict --help)"),
    (["predict", "RUN", "IMG", "--topk", "-1"], "--topk: must be a whole number >= 1, got -1"),
    (["predict", "RUN", "IMG", "--topk", "1.5"], "--topk: expected a whole number >= 1, got '1.5'"),
    (["eval", "RUN", "--batch-size", "0"], "cnnzoo eval: error: --batch-size: must be a whole number >= 1, got 0"),
    (["export", "RUN", "--opset", "x"], "--opset: expected a whole number >= 1, got 'x'"),
    (["summary", "resnet18", "--input-size", "0", "0", "0"],
     "cnnzoo summary: error: --input-size: must be a whole number >= 1, got 0"),
    (["summary", "resnet18", "--depth", "-1"], "--depth: must be a whole number >= 0, got -1"),
    (["rf", "resnet18", "--input-size", "3", "-1", "5"],
     "cnnzoo rf: error: --input-size: must be a whole number >= 1, got -1"),
    (["erf", "resnet18", "--input-size", "0", "32", "32", "--out", "x.png"],
     "cnnzoo erf: error: --input-size: must be"),
    (["erf", "resnet18", "--n", "0", "--out", "x.png"], "--n: must be a whole number >= 1, got 0"),
    (["predict", "RUN"],
     "cnnzoo predict: error: the following arguments are required: images (see cnnzoo predict --help)"),
    (["list", "--format", "yaml"], "cnnzoo list: error: --format: invalid choice 'yaml': choose from table, json"),
    (["frobnicate"], "cnnzoo: error: COMMAND: invalid choice 'frobnicate': choose from list, "),
    (["trian"], "cnnzoo: error: COMMAND: invalid choice 'trian': did you mean train? choose from list, "),
    (["train", "--bogus-flag"], "cnnzoo: error: unrecognized arguments: --bogus-flag"),
]


@pytest.mark.parametrize("argv,words", BAD_FLAGS, ids=[" ".join(a[:4]) for a, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_with_the_useful_line_first(tmp_path, capsys, png, argv, words):
    argv = [str(tmp_path / "run") if a == "RUN" else str(png) if a == "IMG" else a for a in argv]
    rc = cli(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert words in err and "usage:" not in err, err


def test_python_api_takes_the_same_ranges(tmp_path, png):
    from cnnzoo.deploy.inference import predict
    from cnnzoo.training import evaluate

    run = write_ckpt(tmp_path / "run")
    for kw, words in [({"batch_size": 0}, "batch_size (--batch-size) must be a whole number >= 1 (got 0)"),
                      ({"topk": True}, "topk (--topk) must be a whole number >= 1 (got True)")]:
        with pytest.raises(CnnzooError, match=words.replace("(", r"\(").replace(")", r"\)")):
            predict(run, png, **kw)
    with pytest.raises(CnnzooError, match="batch_size"):
        evaluate(run, batch_size=-3)


def test_no_arguments_still_prints_the_help(capsys):
    assert cli([]) == 0
    assert "usage: cnnzoo" in capsys.readouterr().out


@pytest.mark.parametrize("models", ["", " ", ",,", " , "])
def test_compare_with_an_empty_model_list_is_an_error(tmp_path, capsys, models):
    from cnnzoo.comparing.run import resolve_models

    with pytest.raises(CnnzooError, match="--models is empty"):
        resolve_models(models)
    one_line(capsys, cli(["compare", "--models", models, "--out", str(tmp_path / "c")]), "--models is empty")
    assert not (tmp_path / "c").exists()


def test_erf_unknown_layer_lists_the_nearest_names(tmp_path, capsys):
    err = one_line(capsys, cli(["erf", "resnet20_cifar", "--layer", "layer1.0.conv", "--n", "1",
                                "--out", str(tmp_path / "e.png")]), "resnet20_cifar has no layer 'layer1.0.conv'")
    assert "the nearest are layer1.0.conv" in err and "layer1.0.conv1" in err
    from cnnzoo.analysis import effective_receptive_field

    with pytest.raises(KeyError):  # still a KeyError for callers that caught one
        effective_receptive_field("resnet20_cifar", n=1, layer="nosuch.layer")
    assert not (tmp_path / "e.png").exists()


# ------------------------------------------------------------------------- 5. data sets say what they did
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
