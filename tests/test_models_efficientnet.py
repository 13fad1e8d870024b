"""EfficientNet-B0..B7: same functions as torchvision's, published sizes, compound scaling, loading.

Equivalence runs in float64 at 32x32 (the smallest input, = the total stride): B7 costs ~0.1 GMACs there
against 38 at its default 600x600. (Zoo-wide registered params/MACs/min-size checks: test_zoo.py.)
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.efficientnet import SCALING
from cnnzoo.models.layers import InvertedResidual
from equivalence import assert_same_function

VARIANTS = [f"efficientnet_b{i}" for i in range(8)]

# torchvision weights metadata: num_params, _ops (GFLOPS, meaning GMACs), crop_size
PUBLISHED = {
    "efficientnet_b0": (5_288_548, 0.386, 224),
    "efficientnet_b1": (7_794_184, 0.687, 240),
    "efficientnet_b2": (9_109_994, 1.088, 288),
    "efficientnet_b3": (12_233_232, 1.827, 300),
    "efficientnet_b4": (19_341_616, 4.394, 380),
    "efficientnet_b5": (30_389_784, 10.266, 456),
    "efficientnet_b6": (43_040_704, 19.068, 528),
    "efficientnet_b7": (66_347_960, 37.746, 600),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Float64 depthwise convs run group by group; with 2 threads on a busy 2-core machine (xdist) each tiny
    parallel region waits on the other worker and a 32x32 forward takes seconds instead of milliseconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blocks(m: nn.Module) -> list[InvertedResidual]:
    return [b for b in m.modules() if isinstance(b, InvertedResidual)]


@pytest.mark.parametrize("name", VARIANTS)
def test_published_params_macs_and_input_size(name):
    params, gmacs, size = PUBLISHED[name]
    info = cnnzoo.model_info(name)
    assert info.input_size == (3, size, size)
    with torch.device("meta"):  # B7 at 600x600 without computing anything
        m = cnnzoo.create_model(name).eval()
        with FlopCounterMode(display=False) as fc:
            out = m(torch.empty(1, *info.input_size))
    assert out.shape == (1, 1000)
    assert sum(p.numel() for p in m.parameters()) == params == info.params
    macs = fc.get_total_flops() // 2
    assert macs == info.macs and round(macs / 1e9, 3) == gmacs
    if name == "efficientnet_b0":
        assert macs == 385_814_752


@pytest.mark.parametrize("name", VARIANTS)
def test_equal_to_torchvision(name):
    theirs = getattr(torchvision.models, name)()
    big = name in ("efficientnet_b6", "efficientnet_b7")
    assert_same_function(cnnzoo.create_model(name), theirs, (3, 32, 32), batch=1 if big else 2)


def test_compound_scaling_of_the_b0_table():
    with torch.device("meta"):
        b0, b7 = cnnzoo.create_model("efficientnet_b0"), cnnzoo.create_model("efficientnet_b7")
    # depth: ceil(layers * d); B0 = Table 1, B7 (d = 3.1) = ceil of 3.1, 6.2, 6.2, 9.3, 9.3, 12.4, 3.1
    assert [len(s) for s in b0.features[1:-1]] == [1, 2, 2, 3, 3, 4, 1]
    assert [len(s) for s in b7.features[1:-1]] == [4, 7, 7, 10, 10, 13, 4]
    # width: channels * w rounded to multiples of 8; head = 4x the last stage (1280 for B0)
    assert [s[-1].out_channels for s in b0.features[1:-1]] == [16, 24, 40, 80, 112, 192, 320]
    assert [s[-1].out_channels for s in b7.features[1:-1]] == [32, 48, 80, 160, 224, 384, 640]
    assert b0.features[0][0].out_channels == 32 and b7.features[0][0].out_channels == 64
    assert b0.classifier[1].in_features == 1280 and b7.classifier[1].in_features == 2560
    # kernels and strides of Table 1
    first = [s[0].block[-3][0] for s in b0.features[1:-1]]  # each stage's first depthwise conv
    assert [c.kernel_size[0] for c in first] == [3, 3, 5, 3, 5, 5, 3]
    assert [c.stride[0] for c in first] == [1, 2, 2, 2, 1, 2, 1]
    # SE squeezes to a quarter of the block's input channels, gated by a sigmoid, SiLU inside
    se = [b.block[-2] for b in _blocks(b0)]
    assert [s.fc1.out_channels for s in se][:4] == [8, 4, 6, 6]
    assert isinstance(se[0].activation, nn.SiLU) and isinstance(se[0].scale_activation, nn.Sigmoid)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_settings(name):
    s = SCALING[name.split("_")[1]]
    with torch.device("meta"):
        m = cnnzoo.create_model(name)
    assert m.classifier[0].p == s.dropout == {"b0": 0.2, "b1": 0.2, "b2": 0.3, "b3": 0.3, "b4": 0.4,
                                              "b5": 0.4, "b6": 0.5, "b7": 0.5}[name[-2:]]
    bn = m.features[0][1]
    tf = name[-2:] in ("b5", "b6", "b7")  # torchvision's ported TF weights keep TF's BN settings
    assert (bn.eps, bn.momentum) == ((1e-3, 0.01) if tf else (1e-5, 0.1))
    # stochastic depth: 0 at the first block, rising linearly by 0.2 / N
    p = [b.stochastic_depth.p for b in _blocks(m)]
    assert p[0] == 0.0 and p[-1] == pytest.approx(0.2 * (len(p) - 1) / len(p))


def test_stochastic_depth_acts_only_in_training():
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    for rate, same in ((0.0, True), (0.5, False)):
        m = cnnzoo.create_model("efficientnet_b0", drop_path_rate=rate, dropout=0.0).train()
        with torch.no_grad():
            a, b = m(x), m(x)  # train-mode BN uses the batch, so only stochastic depth can differ
        assert torch.equal(a, b) == same
        m.eval()
        with torch.no_grad():
            assert torch.equal(m(x), m(x))
    m = cnnzoo.create_model("efficientnet_b0", stochastic_depth_prob=0.4)
    assert _blocks(m)[-1].stochastic_depth.p == pytest.approx(0.4 * 15 / 16)


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_at_default_size(name):
    info = cnnzoo.model_info(name)
    m = cnnzoo.create_model(name).eval()
    with torch.no_grad():
        out = m(torch.randn(1, *info.input_size, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 1000) and torch.isfinite(out).all() and out.std() > 0


def test_one_channel_ten_classes_and_size_check():
    m = cnnzoo.create_model("efficientnet_b0", in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
        assert m(torch.randn(1, 1, 48, 40)).shape == (1, 10)  # any size from 32 up, not only squares
    assert m.features[0][0].weight.shape == (32, 1, 3, 3)
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 32x32"):
        m(torch.randn(1, 1, 31, 64))


def test_load_pretrained_torchvision_pth_and_safetensors(tmp_path):
    sd = torchvision.models.efficientnet_b0().state_dict()
    torch.save(sd, tmp_path / "b0.pth")
    save_file(sd, str(tmp_path / "b0.safetensors"))
    for f in ("b0.pth", "b0.safetensors"):
        ours = cnnzoo.create_model("efficientnet_b0", num_classes=10)
        head = ours.classifier[1].weight.clone()
        report = cnnzoo.load_pretrained(ours, tmp_path / f)
        assert sorted(report["reset"]) == ["classifier.1.bias", "classifier.1.weight"]
        assert torch.equal(ours.classifier[1].weight, head) and ours.classifier[1].out_features == 10
        own = ours.state_dict()
        assert all(torch.equal(own[k], v) for k, v in sd.items() if not k.startswith("classifier."))
