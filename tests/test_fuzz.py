"""Hypothesis fuzz of the CLI and of the file readers.

The only allowed outcomes of ``cnnzoo ARGS`` are success (0), argparse's error (``SystemExit(2)``, one line;
0 for ``--help``) or a :class:`CnnzooError` turned into one line and exit status 2. Any other
exception escaping ``main`` is a bug. Commands that would train get a budget of one step on a 32-image subset (the
last ``--max-steps``/``--train-subset`` on the line wins in argparse), so an example costs well under a second.
Byte-level fuzz of the IDX parser and the image decoder is in ``test_data.py``/``test_data_folder.py``; here the
file-level readers (``read_idx`` with gzip, ``load_image`` as predict uses it).
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnzoo.cli import main
from cnnzoo.data.idx import read_idx
from cnnzoo.data.images import load_image
from cnnzoo.errors import CnnzooError

# Small nets only (a fuzz example must stay cheap), plus names that are not models at all.
MODELS = ["lenet5", "lenet5_relu", "resnet20_cifar", "LeNet-5", "nin_cifar"], ["resnet18x", "", "vgg"]
DATASETS = ["digits", "Digits", "mnist", "fashion-mnist"], ["mnist2", "folder:", "folder:/nonexistent"]
COUNTS = ["1", "2", "16"], ["0", "-1", "1.5", "abc", ""]
FLOATS = ["0", "0.01", "0.5", "1", "1e9"], ["-1", "nan", "inf", "x"]
SMALL_SIZES = ["8", "27", "28", "32", "36"], ["0", "-3", "x"]  # never huge: 10^5 px would only test RAM
DEVICES = ["cpu", "cpu"], ["cuda", "cuda:7", "mps", "tpu", "meta", ""]


def _opt(flag: str, values: tuple[list[str], list[str]] | list[str]):
    """``[flag, value]``; with (good, bad) lists a bad value comes about one time in five, so most
    examples get past argparse into the code behind it."""
    if isinstance(values, tuple):
        good, bad = values
        values = good * max(1, (4 * len(bad) + len(good) - 1) // len(good)) + bad
    return st.sampled_from(values).map(lambda v: [flag, v])


def _flags(options: list) -> st.SearchStrategy[list[str]]:
    return st.lists(st.one_of(*options), max_size=5).map(lambda parts: [a for p in parts for a in p])


TRAIN_OPTS = [
    _opt("--model", MODELS), _opt("--dataset", DATASETS), _opt("--epochs", COUNTS), _opt("--batch-size", COUNTS),
    _opt("--lr", FLOATS), _opt("--optimizer", (["sgd", "adamw"], ["adam"])),
    _opt("--schedule", (["cosine", "step", "onecycle", "constant"], ["linear"])),
    _opt("--warmup-epochs", FLOATS), _opt("--weight-decay", FLOATS),
    _opt("--label-smoothing", (["0", "0.1", "0.99", "1"], ["2", "-1"])),
    _opt("--seed", (["0", "-5", "123456789012"], ["x"])), _opt("--img-size", SMALL_SIZES),
    _opt("--device", DEVICES), _opt("--pretrained", ["/nonexistent.pth", "/etc/hostname", "/dev/null"]),
    _opt("--time-budget", FLOATS), _opt("--format", (["text", "json"], ["xml"])),
    _opt("--data-dir", ["/nonexistent", "/etc", "/dev/null"]),
    st.just(["--freeze-backbone"]), st.just(["--resume"]), st.just(["--overwrite"]), st.just(["--no-amp"]),
    st.just(["--sync-bn"]), st.just(["--bogus-flag"]),
]
MODEL_OPTS = [_opt("--input-size", (["1 28 28", "3 32 32", "1 64 48"], ["3 8 8", "0 0 0", "3 -1 5", "x y z"])).map(
    lambda a: [a[0], *a[1].split()]), _opt("--format", (["table", "json"], ["csv"])), _opt("--depth", COUNTS)]
CKPTS = ["/nonexistent", "/etc/hostname", "/dev/null", "/tmp"]


@st.composite
def argvs(draw) -> list[str]:
    cmd = draw(st.sampled_from(["train", "list", "summary", "rf", "eval", "predict", "export", "nothing"]))
    if cmd == "train":
        argv = ["train", *draw(_flags(TRAIN_OPTS)), "--max-steps", "1", "--train-subset", "32", "--no-progress"]
    elif cmd == "list":
        argv = ["list", *draw(st.sampled_from([[], ["resnet*"], ["[!"], ["zzz"]])),
                *draw(_flags([_opt("--format", (["table", "json"], ["yaml"]))]))]
    elif cmd in ("summary", "rf"):
        argv = [cmd, draw(st.sampled_from(MODELS[0] + MODELS[1])), *draw(_flags(MODEL_OPTS))]
    elif cmd == "eval":
        argv = ["eval", draw(st.sampled_from(CKPTS)), *draw(_flags([
            _opt("--dataset", DATASETS), _opt("--split", (["test", "train"], ["val"])),
            _opt("--batch-size", COUNTS), _opt("--device", DEVICES)]))]
    elif cmd == "predict":
        argv = ["predict", draw(st.sampled_from(CKPTS)), *draw(st.lists(st.sampled_from(CKPTS), max_size=2)),
                *draw(_flags([_opt("--topk", COUNTS), _opt("--batch-size", COUNTS)]))]
    elif cmd == "export":
        argv = ["export", draw(st.sampled_from(CKPTS)), *draw(_flags([
            _opt("--format", (["onnx", "torchscript"], ["tflite"])), _opt("--opset", COUNTS)]))]
    else:
        argv = draw(st.sampled_from([[], ["--help"], ["frobnicate"], ["--debug"], ["train", "--help"]]))
    return argv


def _outcome(argv: list[str]) -> int:
    """main's exit status; SystemExit (argparse) becomes its code. Anything else propagates: a failure."""
    try:
        return main(argv)
    except SystemExit as e:
        return 0 if e.code is None else e.code


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=argvs())
def test_cli_fuzz_only_success_usage_error_or_one_line_error(argv, capsys, monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        monkeypatch.setenv("CNNZOO_CACHE", str(Path(tmp) / "cache"))
        monkeypatch.chdir(tmp)  # train's default runs/ folder and any other output land in the temp dir
        if argv[:1] == ["train"]:
            # an empty data root first (a fuzzed --data-dir overrides it): mnist & co. then stop at the
            # missing-files error instead of loading and evaluating 70,000 images per example
            (Path(tmp) / "nodata").mkdir()
            argv = ["train", "--data-dir", str(Path(tmp) / "nodata"), *argv[1:]]
            if "--out" not in argv:
                argv += ["--out", str(Path(tmp) / "run")]
        code = _outcome(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err, (argv, err[-2000:])
    if code == 2:  # a CnnzooError or a bad flag: exactly one line, naming the command, no usage dump first
        assert len(err.strip().splitlines()) == 1 and err.startswith(("cnnzoo ", "cnnzoo:")), (argv, err)
        assert "usage:" not in err, (argv, err)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200), gz=st.booleans(),
       head=st.sampled_from([b"", b"\x00\x00\x08\x01", b"\x00\x00\x08\x03", b"\x1f\x8b", b"\x00\x00\x0d\x04"]))
def test_read_idx_file_fuzz_only_raises_cnnzoo_error(tmp_path_factory, data, gz, head):
    raw = head + data
    p = tmp_path_factory.mktemp("idx") / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    try:
        arr = read_idx(p)
    except CnnzooError as e:
        assert "\n" not in str(e)
        return
    assert arr.ndim >= 1 and arr.nbytes == len(raw) - 4 - 4 * arr.ndim  # parsed: the header accounts for all


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), ext=st.sampled_from([".jpg", ".png", ".gif", ".bmp", ".webp", ".tif", ".ppm"]),
       head=st.sampled_from([b"", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n", b"GIF89a",
                             b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00", b"P6\n4 4\n255\n"]),
       in_chans=st.sampled_from([1, 3]))
def test_load_image_fuzz_only_raises_cnnzoo_error(tmp_path_factory, data, ext, head, in_chans):
    p = tmp_path_factory.mktemp("img") / f"x{ext}"
    p.write_bytes(head + data)
    try:
        arr = load_image(p, 16, in_chans)
    except CnnzooError as e:
        assert "\n" not in str(e) and str(p) in str(e)
        return
    assert arr.shape == (in_chans, 16, 16) and arr.dtype.name == "uint8"


def test_documented_reader_errors_for_plain_cases(tmp_path):
    """The fuzzers' fixed points: an empty file, a directory, a missing file."""
    (tmp_path / "empty.png").write_bytes(b"")
    for bad in [tmp_path / "empty.png", tmp_path / "missing.jpg", tmp_path]:
        with pytest.raises(CnnzooError, match="cannot read image"):
            load_image(bad, 8)
        with pytest.raises(CnnzooError):
            read_idx(bad)
