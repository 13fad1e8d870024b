"""One declaration per training option: train's and compare's flags, help texts, checks
and the recipe merge all come from ``cnnzoo.training.config``. Torch-free and fast."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from cnnzoo.cli import compare_cmd, train_cmd
from cnnzoo.errors import CnnzooError
from cnnzoo.training.config import (
    DEMO,
    RECIPES,
    CompareOptions,
    RunOptions,
    TrainConfig,
    resolve,
    validate,
    warmup_steps,
)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    train_cmd.register(sub)
    compare_cmd.register(sub)
    return dict(sub.choices)


def _flags(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


def test_compare_takes_every_recipe_option_train_takes():
    parsers = _parsers()
    train, compare = _flags(parsers["train"]), _flags(parsers["compare"])
    recipe = [f for f in fields(TrainConfig) if f.metadata.get("cli", True) and f.name != "model"]
    for f in recipe:
        flag = "--" + f.name.replace("_", "-")
        assert flag in train and flag in compare, flag
        assert train[flag].help == compare[flag].help  # one declaration, one help text
    for flag in ("--optimizer", "--weight-decay", "--schedule", "--warmup-epochs", "--label-smoothing",
                 "--pretrained", "--freeze-backbone", "--amp", "--pad", "--no-hflip", "--hflip"):
        assert flag in compare, flag


def test_every_flag_says_its_default():
    for name, p in _parsers().items():
        for a in p._actions:
            if a.option_strings and a.help != argparse.SUPPRESS and "-h" not in a.option_strings:
                assert "default" in (a.help or "") or (a.help or "").startswith("same as"), (name, a.option_strings)


@pytest.mark.parametrize("argv,words", [
    (["--epochs", "0"], "whole number >= 1"),
    (["--lr", "-1"], ">= 0"),
    (["--label-smoothing", "1"], "[0, 1)"),
    (["--batch-size", "2.5"], "whole number"),
])
def test_both_commands_refuse_the_same_values_the_same_way(argv, words, capsys):
    parsers = _parsers()
    errors = []
    for name in ("train", "compare"):
        with pytest.raises(SystemExit):
            parsers[name].parse_args(argv)
        errors.append(capsys.readouterr().err.strip().splitlines()[-1].split("error: ", 1)[1])
    assert errors[0] == errors[1] and words in errors[0]
    key = argv[0][2:].replace("-", "_")
    with pytest.raises(CnnzooError, match=key):  # the Python API: the same range
        resolve({key: float(argv[1]) if "." in argv[1] else int(argv[1])})


def test_recipe_merge_and_the_visible_demo_override():
    digits = resolve({"dataset": "digits"})
    assert (digits.optimizer, digits.lr, digits.epochs) == ("adamw", 2e-3, RECIPES["digits"]["epochs"])
    demo = resolve({"dataset": "digits"}, demo=True)
    assert all(getattr(demo, k) == v for k, v in DEMO["digits"].items())
    # the user's values win over both layers; another optimizer drops the demo's optimizer settings
    mine = resolve({"dataset": "digits", "epochs": 5, "optimizer": "sgd"}, demo=True)
    assert (mine.epochs, mine.optimizer, mine.lr, mine.img_size) == (5, "sgd", TrainConfig.lr, 8)
    assert mine.weight_decay == TrainConfig.weight_decay  # AdamW's settings are not carried over to SGD
    assert resolve({"dataset": "digits", "optimizer": "sgd", "lr": 0.1}).lr == 0.1
    assert resolve({"dataset": "folder:/x"}).optimizer == "adamw"
    assert resolve({"dataset": "folder:/x", "pretrained": "w.pth"}).epochs == RECIPES["folder+pretrained"]["epochs"]
    with pytest.raises(CnnzooError, match="unknown training option"):
        resolve({"epoch": 3})
    with pytest.raises(CnnzooError, match="unknown optimizer 'adam'"):
        validate(TrainConfig(optimizer="adam"))
    assert validate(TrainConfig(amp=True)).amp == "auto" and validate(TrainConfig(optimizer="SGD")).optimizer == "sgd"


def test_warmup_is_at_most_a_quarter_of_the_run():
    one_epoch = TrainConfig(epochs=1, warmup_epochs=1.0)
    assert warmup_steps(one_epoch, 100) == 25
    assert warmup_steps(TrainConfig(epochs=20, warmup_epochs=1.0), 100) == 100  # 5 %: unchanged
    assert warmup_steps(TrainConfig(epochs=3, schedule="onecycle", warmup_epochs=0), 100) == 0


def test_run_and_compare_options_are_declared_once():
    shared = ("data_dir", "device", "progress")
    for name in shared:
        a, b = RunOptions.__dataclass_fields__[name], CompareOptions.__dataclass_fields__[name]
        assert a.metadata == b.metadata and a.default == b.default


def test_init_choices_are_the_schemes():
    from cnnzoo.training.config import INIT_NAMES
    from cnnzoo.training.init_schemes import init_names

    assert tuple(init_names()) == INIT_NAMES
