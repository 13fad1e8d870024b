"""Arguments at every door: numeric flags share one range check in the CLI and the Python API, argparse errors
are one line with the useful part first, devices and sizes are checked against what this machine has before
anything is allocated, and ``--debug`` brings the traceback back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from helpers import ENV, cli, one_line, write_ckpt
from helpers import one_line_error as _one_line_error

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


@pytest.mark.parametrize("opset,words", [("99", "the ONNX opset (--opset) must be a whole number in [17, "),
                                         ("16", "must be a whole number in [17, "),
                                         ("0", "--opset: must be a whole number >= 1, got 0")])
def test_export_opset_out_of_range_is_one_line_and_nothing_on_stdout(tmp_path, capsys, opset, words):
    run = write_ckpt(tmp_path / "run")
    one_line(capsys, cli(["export", str(run), "--opset", opset]), words)
    assert not any(n.endswith(".onnx") or n.startswith(".tmp") for n in os.listdir(run))


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


API = [  # (call, words of the one CnnzooError)
    (lambda: cnnzoo.create_model(None), "a model name must be text, got None"),
    (lambda: cnnzoo.create_model(5), "a model name must be text, got 5"),
    (lambda: cnnzoo.model_info(None), "a model name must be text"),
    (lambda: cnnzoo.list_models(5), "list_models takes a shell-style pattern"),
    (lambda: cnnzoo.create_model("lenet5", num_classes=10.5), "num_classes must be a whole number >= 1"),
    (lambda: cnnzoo.create_model("lenet5", num_classes=True), "num_classes must be a whole number >= 1"),
    (lambda: cnnzoo.create_model("lenet5", drop_rate=0.5), "lenet5 takes no argument drop_rate"),
    (lambda: cnnzoo.create_model("resnet18", depth=99), "resnet18 takes no argument depth: its arguments are"),
    (lambda: cnnzoo.create_model("resnet20_cifar", depth=99), "resnet20_cifar cannot be built with depth=99"),
    (lambda: cnnzoo.create_model("lenet5", in_chans=2**40), "GiB of weights, more than the"),
    (lambda: cnnzoo.create_model("resnet18", num_classes=10**9), "GiB of weights, more than the"),
    (lambda: cnnzoo.create_model("resnet18").reset_classifier(10**9),
     "reset_classifier(1000000000): a 512 x 1000000000 classifier's weights take 1911.1 GiB"),
]


@pytest.mark.parametrize("call,words", API, ids=[w for _, w in API])
def test_the_python_api_checks_its_arguments(call, words):
    with pytest.raises(CnnzooError) as e:
        call()
    assert words in str(e.value) and "\n" not in str(e.value)


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


@pytest.mark.parametrize("argv", [
    ["train", "--model", "lenet5", "--dataset", "digits", "--device", "mps", "--out", "{tmp}/r"],
    ["train", "--model", "lenet5", "--dataset", "digits", "--device", "cuda:7", "--out", "{tmp}/r"],
    ["eval", "{run}", "--device", "xla"],
    ["predict", "{run}", "{png}", "--device", "mps"],
])
def test_only_devices_that_work_here_are_accepted(tmp_path, capsys, run_dir, png, argv):
    if torch.backends.mps.is_available() or torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run_dir)).replace("{png}", str(png))
            for a in argv]
    one_line(capsys, cli(argv), "does not work here: use cpu")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,words", [
    (["benchmark", "lenet5", "--batch-size", "100000", "--runs", "1"], "--batch-size 100000 at 32x32"),
    (["erf", "resnet18", "--input-size", "3", "4000", "4000", "--out", "{tmp}/e.png"], "--input-size 3 4000 4000"),
])
def test_size_flags_are_checked_against_free_memory_before_allocating(tmp_path, capsys, monkeypatch, argv, words):
    from cnnzoo.utils import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 1 << 30)  # 1 GiB free
    rc = cli([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert "more than the 1.0 GiB free" in one_line(capsys, rc, words)


@pytest.mark.parametrize("flag", [{"batch_size": 1}, {"train_subset": 1}, {"precise_bn": 1}],
                         ids=["batch-size 1", "train-subset 1", "precise-bn 1"])
def test_batchnorm_with_one_value_per_channel_is_one_line(tmp_path, flag):
    """Class 5: resnet18 at 32 px ends in a 1x1 map, so one image per batch leaves BatchNorm one value per
    channel: one CnnzooError naming the flags (compare records the same line as the reason)."""
    opts = {"batch_size": 16, "train_subset": 32, **flag}
    with pytest.raises(CnnzooError, match="BatchNorm got one value per channel") as e:
        cnnzoo.train("resnet18", "digits", img_size=32, epochs=1, max_steps=1, out=tmp_path / "r", progress=False,
                     verbose=False, **opts)
    assert "\n" not in str(e.value) and "--" + next(iter(flag)).replace("_", "-") in str(e.value)


def test_train_refuses_an_img_size_whose_batch_or_folder_cannot_fit_in_memory(tmp_path, monkeypatch, capsys):
    """A huge --img-size fails at once with one line that names the figure and the fix, before any decoding
    or epoch (instead of the OOM killer partway through), and leaves no run behind; within the memory the
    same run trains."""
    from cnnzoo.training import setup

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(setup, "available_memory", lambda device: 1 << 30)  # 1 GiB free
    # resnet18_cifar at 256 px: 9.4 GiB of layer outputs per batch of 32 (cnnzoo summary: 301 MiB an image)
    rc = main(["train", "--model", "resnet18_cifar", "--dataset", "digits", "--img-size", "256", "--batch-size",
               "32", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "--img-size 256 with --batch-size 32: resnet18_cifar needs about" in err
    assert "more than the 1.0 GiB free on cpu: use a smaller --img-size or --batch-size" in err
    assert not (tmp_path / "r" / "last").exists()
    # the same net at a size that fits trains
    res = cnnzoo.train("resnet18_cifar", "digits", img_size=8, batch_size=32, epochs=1, train_subset=64,
                       test_subset=32, out=None, progress=False, verbose=False)
    assert res.steps == 2
    # a folder decoded at 300 px: 2 training images x 3 x 300^2 bytes = 540 KB of cache on a disk with 100 KB free,
    # refused before decoding (the cache is memory-mapped, so it is checked against the disk, not RAM)
    from cnnzoo.data import folder

    monkeypatch.setattr(setup, "available_memory", lambda device: 1 << 40)
    monkeypatch.setattr(folder.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 10**5})())
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "f" / split / cls).mkdir(parents=True)
            Image.new("RGB", (20, 20), (10 * len(cls), 0, 0)).save(tmp_path / "f" / split / cls / "x.png")
    with pytest.raises(CnnzooError, match=r"2 images decoded at 300x300 need up to 540\.00KB of the decode cache"):
        cnnzoo.train("resnet18_cifar", f"folder:{tmp_path / 'f'}", img_size=300, epochs=1, out=None,
                     progress=False, verbose=False)
    assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing was decoded


def test_debug_shows_the_traceback(capsys):
    assert main(["train", "--model", "resnet18x"]) == 2
    _one_line_error(capsys, "did you mean resnet18")
    with pytest.raises(CnnzooError, match="did you mean resnet18"):
        main(["--debug", "train", "--model", "resnet18x"])


def test_a_real_process_exits_2_with_one_line(tmp_path):
    # one process start is enough: the in-process cases above and in test_train.py share the same main()
    for argv, needle in [
        (["train", "--model", "resnet18x", "--out", str(tmp_path / "a")], "did you mean resnet18"),
    ]:
        p = subprocess.run([sys.executable, "-m", "cnnzoo", *argv], env=ENV, capture_output=True, text=True,
                           timeout=120)
        err = p.stderr.strip()
        assert p.returncode == 2 and p.stdout == "", (argv, p.stdout, err)
        assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
