"""The registry and CLI contract that every family relies on."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError, UnknownModelError
from cnnzoo.models.pretrained import load_pretrained, read_state_dict
from cnnzoo.models.registry import InputCheck


def test_unknown_model_suggests_nearest_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'resnet5'.*did you mean .*resnet50"):
        cnnzoo.create_model("resnet5")


def test_names_are_case_and_dash_insensitive():
    assert cnnzoo.model_info("ResNet-50").name == "resnet50"


def test_list_models_filters_with_shell_patterns():
    names = cnnzoo.list_models("vgg*")
    assert names == ["vgg11", "vgg11_bn", "vgg11_bn_cifar", "vgg13", "vgg13_bn", "vgg13_bn_cifar", "vgg16",
                     "vgg16_bn", "vgg16_bn_cifar", "vgg19", "vgg19_bn", "vgg19_bn_cifar"]
    assert cnnzoo.list_models("vgg*_cifar") == ["vgg11_bn_cifar", "vgg13_bn_cifar", "vgg16_bn_cifar",
                                                "vgg19_bn_cifar"]
    assert "resnet50b" not in cnnzoo.list_models("resnet50*")
    assert "resnet50b" in cnnzoo.list_models("resnet50*", include_aliases=True)


def test_create_model_sets_classes_and_channels():
    m = cnnzoo.create_model("resnet18", num_classes=7, in_chans=1)
    assert m.fc.out_features == 7 and m.conv1.in_channels == 1
    assert m.default_cfg["input_size"] == (1, 224, 224)


def test_input_check_names_minimum_and_channels():
    hook = InputCheck("net", in_chans=3, min_size=32)
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 32x32"):
        hook(nn.Identity(), (torch.zeros(1, 3, 31, 40),))
    with pytest.raises(cnnzoo.InputSizeError, match="in_chans=1"):
        hook(nn.Identity(), (torch.zeros(1, 1, 32, 32),))
    hook(nn.Identity(), (torch.zeros(1, 3, 32, 32),))  # fine: no exception
    pickle.dumps(hook)  # models with the hook still pickle/deepcopy


def test_cli_list_json_and_table(capsys):
    assert main(["list", "efficientnet_b*", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [f"efficientnet_b{i}" for i in range(8)]
    b0 = rows[0]
    assert b0["params"] == 5_288_548 and b0["macs"] == 385_814_752 and b0["input_size"] == [3, 224, 224]
    assert main(["list", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "resnet50" in out and "25.56M" in out and "4.09G" in out


def test_cli_unknown_model_is_one_line_exit_2(capsys):
    assert main(["summary", "resnet5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean" in err


def test_load_pretrained_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"fc.weight": Evil()}, f, protocol=2)
    with pytest.raises(CnnzooError, match="refused to load"):
        read_state_dict(bad)
    assert not marker.exists()


def test_load_pretrained_rejects_wrong_architecture(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(cnnzoo.create_model("resnet18").state_dict(), path)
    with pytest.raises(CnnzooError, match="does not fit this model|wrong shape"):
        load_pretrained(cnnzoo.create_model("resnet50"), path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CnnzooError, match="not a readable"):
        read_state_dict(tmp_path / "junk.pth")
