"""MobileNet V1/V2/V3: same functions as timm's / torchvision's, published sizes, paper tables, loading.

Equivalence runs in float64 at 32x32 (the smallest input, = the total stride), where a forward pass is
cheap. (The zoo-wide registered params/MACs/min-size checks are in test_zoo.py.)
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.models.efficientnet import _gen_mobilenet_v1
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.layers import InvertedResidual, SqueezeExcitation
from cnnzoo.models.mobilenet_v1 import MobileNetV1
from cnnzoo.models.mobilenet_v3 import V3_LARGE, V3_SMALL
from equivalence import assert_same_function


@pytest.fixture(autouse=True)
def one_thread():
    """Float64 depthwise convs run group by group; with 2 threads on a busy 2-core machine (xdist) each tiny
    parallel region waits on the other worker and a 32x32 forward takes seconds instead of milliseconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Published parameter counts (torchvision weights metadata; timm's models at their defaults; the paper's
# Table 6 gives 4.2M / 2.6M / 1.3M / 0.5M for alpha 1, 0.75, 0.5, 0.25)
PUBLISHED = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v1_075": 2_585_560,
    "mobilenet_v1_050": 1_331_592,
    "mobilenet_v1_025": 470_072,
    "mobilenet_v1_125": 6_270_840,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_small": 2_542_856,
    "mobilenet_v3_large": 5_483_032,
}


def _meta_macs(name: str, **kwargs) -> tuple[int, int]:
    """(params, MACs at the default input) without computing anything: the meta device."""
    info = cnnzoo.model_info(name)
    with torch.device("meta"):
        m = cnnzoo.create_model(name, **kwargs).eval()
        with FlopCounterMode(display=False) as fc:
            out = m(torch.empty(1, *info.input_size))
    assert out.shape == (1, m.classifier[-1].out_features)
    return sum(p.numel() for p in m.parameters()), fc.get_total_flops() // 2


# MACs known from elsewhere: torchvision's "_ops" (GFLOPS, meaning GMACs) and the paper's Table 6
KNOWN_MACS = {
    "mobilenet_v2": 300_774_272,  # torchvision 0.301
    "mobilenet_v1": 568_740_352,  # the paper: 569 million mult-adds
    "mobilenet_v1_075": 325_400_448,  # 325
    "mobilenet_v1_050": 149_497_088,  # 149
    "mobilenet_v1_025": 41_030_272,  # 41
    "mobilenet_v3_large": 216_589_760,  # torchvision 0.217
    "mobilenet_v3_small": 56_510_400,  # torchvision 0.057
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_macs(name):
    params, macs = _meta_macs(name)
    info = cnnzoo.model_info(name)
    assert params == PUBLISHED[name] == info.params
    assert macs == info.macs == KNOWN_MACS.get(name, macs)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_equal_to_torchvision(name):
    theirs = getattr(torchvision.models, name)()
    diff = assert_same_function(cnnzoo.create_model(name), theirs, (3, 32, 32))
    assert diff < 1e-9


def test_mobilenet_v1_equal_to_timm_through_key_map():
    ours = cnnzoo.create_model("mobilenetv1_100")  # timm's name is an alias
    theirs = timm.create_model("mobilenetv1_100")
    assert_same_function(ours, theirs, (3, 32, 32), key_map=ours.convert_state_dict)


@pytest.mark.parametrize("name,alpha", [("mobilenet_v1_025", 0.25), ("mobilenet_v1_050", 0.5),
                                        ("mobilenet_v1_075", 0.75), ("mobilenet_v1_125", 1.25)])
def test_mobilenet_v1_width_multipliers_equal_to_timm(name, alpha):
    theirs = _gen_mobilenet_v1(f"mobilenetv1_{int(alpha * 100):03d}", alpha)
    ours = cnnzoo.create_model(name)
    assert_same_function(ours, theirs, (3, 32, 32), key_map=MobileNetV1.convert_state_dict, batch=1)
    assert ours.num_features == int(1024 * alpha)


def test_mobilenet_v1_structure_is_the_papers_table():
    m = cnnzoo.create_model("mobilenet_v1")
    blocks = list(m.features)[1:]
    assert len(blocks) == 13
    assert [b.dw[0].stride[0] for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert all(b.dw[0].groups == b.dw[0].in_channels for b in blocks)  # depthwise
    assert [b.pw[0].out_channels for b in blocks][-1] == 1024
    assert isinstance(m.features[0][2], nn.ReLU6)
    paper = cnnzoo.create_model("mobilenet_v1", act="relu")  # the paper's ReLU, same weights
    assert isinstance(paper.features[0][2], nn.ReLU) and not isinstance(paper.features[0][2], nn.ReLU6)
    assert sum(p.numel() for p in paper.parameters()) == 4_231_976
    half = cnnzoo.create_model("mobilenet_v1", width_mult=0.5)
    assert sum(p.numel() for p in half.parameters()) == 1_331_592


def test_mobilenet_v1_convert_state_dict_is_idempotent():
    m = cnnzoo.create_model("mobilenet_v1")
    sd = m.state_dict()
    conv = m.convert_state_dict(sd)
    assert list(conv) == list(sd) and all(conv[k] is sd[k] for k in sd)


def test_mobilenet_v3_tables_match_the_paper():
    # SE in 8 of Large's 15 bnecks and 9 of Small's 11; hard-swish from Large's 7th and Small's 4th block
    assert sum(r.se for r in V3_LARGE) == 8 and sum(r.se for r in V3_SMALL) == 9
    assert [r.nl for r in V3_LARGE].index("HS") == 6 and [r.nl for r in V3_SMALL].index("HS") == 3
    m = cnnzoo.create_model("mobilenet_v3_large")
    blocks = [b for b in m.features if isinstance(b, InvertedResidual)]
    ses = [s for b in blocks for s in b.block if isinstance(s, SqueezeExcitation)]
    assert len(ses) == 8
    # squeeze = make_divisible(exp / 4): 72 -> 24 (18 rounded up to a multiple of 8), 960 -> 240
    assert [s.fc1.out_channels for s in ses] == [24, 32, 32, 120, 168, 168, 240, 240]
    assert all(isinstance(s.scale_activation, nn.Hardsigmoid) for s in ses)
    assert isinstance(blocks[-1].block[0][2], nn.Hardswish) and isinstance(blocks[0].block[0][2], nn.ReLU)
    assert [b.use_res_connect for b in blocks].count(True) == 10
    assert m.features[-1][0].out_channels == 960 and m.classifier[0].out_features == 1280


@pytest.mark.parametrize("name", sorted(PUBLISHED) + ["mobilenet_v2_cifar"])
def test_forward_at_default_size(name):
    info = cnnzoo.model_info(name)
    m = cnnzoo.create_model(name).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = m(torch.randn(1, *info.input_size))
    assert out.shape == (1, info.num_classes) and torch.isfinite(out).all()
    assert out.std() > 0  # a real, input-dependent output after the random init


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v2_cifar"])
def test_one_channel_ten_classes_and_size_check(name):
    m = cnnzoo.create_model(name, in_chans=1, num_classes=10).eval()
    s = cnnzoo.model_info(name).min_size
    with torch.no_grad():
        assert m(torch.randn(2, 1, s, s)).shape == (2, 10)
    assert m.features[0][0].weight.shape[1] == 1
    with pytest.raises(cnnzoo.InputSizeError, match=f"minimum is {s}x{s}"):
        m(torch.randn(1, 1, s - 1, s - 1))


def test_mobilenet_v2_cifar_is_torchvisions_net_with_two_strides_set_to_one():
    info = cnnzoo.model_info("mobilenet_v2_cifar")
    assert info.input_size == (3, 32, 32) and info.num_classes == 10 and info.min_size == 8
    ours = cnnzoo.create_model("mobilenet_v2_cifar", num_classes=1000)
    theirs = torchvision.models.mobilenet_v2()
    theirs.features[0][0].stride = (1, 1)  # stem
    theirs.features[2].conv[1][0].stride = (1, 1)  # first block of the first stride-2 row (c=24)
    assert_same_function(ours, theirs, (3, 32, 32), batch=1)
    with torch.no_grad():
        fmap = ours.features(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert fmap.shape == (1, 1280, 4, 4)  # total stride 8: a 4x4 map before the pooling (ImageNet form: 1x1)


def test_load_pretrained_timm_mobilenet_v1_pth_and_safetensors(tmp_path):
    theirs = timm.create_model("mobilenetv1_100").eval()
    sd = theirs.state_dict()
    torch.save(sd, tmp_path / "mnv1.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "mnv1.safetensors"))
    for f in ("mnv1.pth", "mnv1.safetensors"):
        ours = cnnzoo.create_model("mobilenet_v1", num_classes=10).eval()
        head = ours.classifier[1].weight.clone()
        report = cnnzoo.load_pretrained(ours, tmp_path / f)
        assert sorted(report["reset"]) == ["classifier.1.bias", "classifier.1.weight"]
        assert torch.equal(ours.classifier[1].weight, head)  # the new 10-class head is left as it was
        assert torch.equal(ours.features[0][0].weight, sd["conv_stem.weight"])
        assert torch.equal(ours.features[13].pw[1].running_var, sd["blocks.4.1.bn2.running_var"])
        # same features as timm's net: pooled features agree exactly
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            a = ours.avgpool(ours.features(x)).flatten(1)
            b = theirs.forward_head(theirs.forward_features(x), pre_logits=True)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_load_pretrained_torchvision_mobilenet_v3_into_ten_classes(tmp_path):
    sd = torchvision.models.mobilenet_v3_small().state_dict()
    save_file(sd, str(tmp_path / "mnv3s.safetensors"))
    ours = cnnzoo.create_model("mobilenet_v3_small", num_classes=10)
    report = cnnzoo.load_pretrained(ours, tmp_path / "mnv3s.safetensors")
    assert sorted(report["reset"]) == ["classifier.3.bias", "classifier.3.weight"]
    own = ours.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if k not in report["reset"])
