"""Summary and MACs: equal to torchinfo's parameters, FlopCounterMode's total / 2, torchinfo's mult-adds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torchinfo
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.analysis import count_macs, resolve_model, summary
from cnnzoo.analysis._common import _MetaShortcuts
from cnnzoo.cli import main

NETS = Path(__file__).with_name("analysis_nets.py")
ZOO = cnnzoo.list_models()

# The figures the issue quotes (torchvision's _ops at 224x224).
PUBLISHED_MACS = {"resnet50": 4_089_184_256, "mobilenet_v2": 300_774_272, "vgg16": 15_470_264_320,
                  "efficientnet_b0": 385_814_752}

# torchinfo's mult-adds = conv/linear MACs + one add per output of a biased conv/linear + BatchNorm's
# parameter count (it multiplies parameters by output positions). That keeps it within 0.1 % of ours for
# nets with BN, not for nets with biased convs (NiN, the paper's GoogLeNet, LeNet: up to 1.6 %). LeNet-5's
# C3 keeps the paper's 60 connections as parameters but runs a dense 16x6 convolution with the absent
# kernels zeroed (and its subsampling layers multiply outside any conv): torchinfo counts the parameters,
# FlopCounterMode the convolution that runs. Figures and discussion: docs/analysis.md.
TORCHINFO_DIFFERS = {"lenet5": (333_082, 416_520)}


def _torchinfo_extra(net: torch.nn.Module, size: tuple[int, ...]) -> int:
    """What torchinfo adds to MACs: bias adds (one per output) and BN parameters, for modules that run."""
    ran: dict[torch.nn.Module, torch.Size] = {}
    kinds = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm)
    hooks = [m.register_forward_hook(lambda m, a, o: ran.__setitem__(m, o.shape))
             for m in net.modules() if isinstance(m, kinds)]
    with _MetaShortcuts(), torch.no_grad():
        net(torch.zeros((1, *size), device="meta"))
    for h in hooks:
        h.remove()
    return sum(sum(p.numel() for p in m.parameters()) if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               else (shape.numel() if m.bias is not None else 0) for m, shape in ran.items())


def _flop_counter_macs(model: torch.nn.Module, size: tuple[int, ...]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros((1, *size), device="meta"))
    return fc.get_total_flops() // 2


@pytest.mark.parametrize("name", ZOO)
def test_zoo_params_and_macs_match_torchinfo(name):
    info = cnnzoo.model_info(name)
    net = resolve_model(name, device="meta").eval()
    s = summary(net, info.input_size, depth=1)
    with _MetaShortcuts():  # torchinfo runs the meta forward too; this only skips slow meta kernels
        ti = torchinfo.summary(net, input_size=(1, *info.input_size), device="meta", verbose=0, mode="eval")
    assert s.total_params == ti.total_params == info.params
    assert s.trainable_params == ti.trainable_params
    assert s.macs == info.macs  # the registry's figure is FlopCounterMode's total / 2 (tests/test_zoo.py)
    assert s.flops == 2 * s.macs
    if name in TORCHINFO_DIFFERS:
        assert (ti.total_mult_adds, s.macs) == TORCHINFO_DIFFERS[name]
    else:  # exactly the terms torchinfo adds
        assert ti.total_mult_adds == s.macs + _torchinfo_extra(net, info.input_size)
    if name in PUBLISHED_MACS or name.startswith(("resnet", "efficientnet", "mobilenet", "vgg16")):
        assert abs(ti.total_mult_adds - s.macs) <= 1e-3 * s.macs
    # the depth-1 rows add up to the totals (no MACs or parameters outside a top-level module)
    top = [r for r in s.rows if r.depth == 1]
    assert sum(r.params for r in top) == s.total_params and sum(r.macs for r in top) == s.macs


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "vgg16", "efficientnet_b0", "googlenet", "lenet5",
                                  "mobilenet_v3_small", "resnet50d", "nin_cifar"])
def test_macs_equal_flop_counter_mode(name):
    info = cnnzoo.model_info(name)
    net = resolve_model(name, device="meta").eval()
    expected = _flop_counter_macs(net, info.input_size)
    assert count_macs(net, info.input_size) == expected
    if name in PUBLISHED_MACS:
        assert expected == PUBLISHED_MACS[name]


def test_torchvision_nets_too():
    with torch.device("meta"):
        net = torchvision.models.resnet50()
    s = summary(net, (3, 224, 224))
    assert (s.total_params, s.macs) == (25_557_032, 4_089_184_256)
    assert s.model == "ResNet"


def test_rows_resnet50():
    s = summary("resnet50")  # depth 3 by default
    conv1 = s.row("conv1")
    assert (conv1.type, conv1.output_shape, conv1.params, conv1.macs) == ("Conv2d", [64, 112, 112], 9408,
                                                                          118_013_952)  # 64*3*49 * 112^2
    assert s.row("layer1").output_shape == [256, 56, 56] and s.row("layer4").output_shape == [2048, 7, 7]
    assert s.row("layer1.0").macs == sum(r.macs for r in s.rows if r.name.startswith("layer1.0.")) == 231_211_008
    assert s.row("fc").macs == 2048 * 1000
    assert s.row("").depth == 0 and s.row("").macs == s.macs
    assert max(r.depth for r in s.rows) == 3 and summary("resnet50", depth=1).rows[-1].name == "fc"
    assert s.param_bytes == 4 * 25_557_032


def test_memory_of_a_small_net_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
                              torch.nn.Conv2d(8, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    s = summary(net, (3, 16, 16))
    assert s.macs == 8 * 27 * 16 * 16 + 4 * 72 * 8 * 8 + 256 * 10
    assert s.total_params == 8 * 27 + 8 + 4 * 72 + 4 + 256 * 10 + 10
    # leaf outputs, one image, float32: the in-place ReLU reuses the conv's tensor; Flatten is a view but a
    # separate tensor object and is counted
    assert s.activation_bytes == 4 * (8 * 16 * 16 + 4 * 8 * 8 + 4 * 8 * 8 + 256 + 10)
    assert s.input_bytes == 4 * 3 * 16 * 16
    assert s.row("1").output_shape == [8, 16, 16]


def test_modules_that_do_not_run_are_noted():
    s = summary("googlenet", depth=1)  # eval mode: no auxiliary heads
    assert s.row("aux1").output_shape is None and s.row("aux1").macs == 0
    assert any("did not run" in n for n in s.notes)


def test_str_and_json():
    s = summary("mobilenet_v2", depth=1)
    text = str(s)
    assert "300,774,272" in text and "601,548,544" in text and "= 2 x MACs" in text
    d = json.loads(json.dumps(s.to_dict()))
    assert d["macs"] == 300_774_272 and d["flops"] == 601_548_544 and d["total_params"] == 3_504_872
    assert d["conventions"]["flops"] == "2 x macs"


def test_cli_summary_json_and_user_file(capsys):
    assert main(["summary", "resnet18", "--depth", "1", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_params"] == 11_689_512 and d["macs"] == 1_814_073_344
    assert [r["name"] for r in d["rows"]][:3] == ["", "conv1", "bn1"]
    assert main(["summary", f"{NETS}:res_dil_net", "--input-size", "3", "64", "64"]) == 0
    out = capsys.readouterr().out
    assert "block" in out and "ResidualDilated" in out and "MACs" in out
    assert main(["summary", "lenet5", "--input-size", "1", "28", "28"]) == 0  # padded into the 32x32 field
    assert "60,850" in capsys.readouterr().out


def test_cli_summary_in_chans_from_input_size(capsys):
    assert main(["summary", "resnet18", "--input-size", "1", "64", "64", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rows"][1]["params"] == 64 * 1 * 49  # conv1 built for one channel


def test_cli_summary_efficientnet_b7_600_within_budget(capsys):
    main(["summary", "resnet18", "--depth", "0"])  # warm-up
    t = time.process_time()
    assert main(["summary", "efficientnet_b7", "--input-size", "3", "600", "600"]) == 0
    assert time.process_time() - t < 5.0
    out = capsys.readouterr().out
    assert "66,347,960" in out and f"{cnnzoo.model_info('efficientnet_b7').macs:,}" in out


def test_cli_summary_bad_name(capsys):
    assert main(["summary", "efficientnet_b9"]) == 2
    assert "did you mean" in capsys.readouterr().err
