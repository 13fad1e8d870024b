"""AlexNet: torchvision's single-tower net (exact equivalence) and the 2012 paper's two-tower net."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.alexnet import paper_lrn
from equivalence import assert_same_function


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _macs(m: nn.Module, size: tuple[int, int, int]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m.eval()(torch.empty(1, *size))
    return fc.get_total_flops() // 2


def test_alexnet_is_torchvision_alexnet_at_min_size():
    assert cnnzoo.model_info("alexnet").min_size == 63  # torchvision's documented minimum
    diff = assert_same_function(cnnzoo.create_model("alexnet"), torchvision.models.alexnet(), (3, 63, 63))
    assert diff < 1e-9


def test_alexnet_counts_match_torchvision_metadata():
    meta = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta
    info = cnnzoo.model_info("alexnet")
    with torch.device("meta"):
        m = cnnzoo.create_model("alexnet")
        assert _params(m) == info.params == meta["num_params"] == 61_100_840
        assert _macs(m, info.input_size) == info.macs
    assert round(info.macs / 1e9, 3) == meta["_ops"]  # torchvision's "GFLOPS" are MACs


def test_paper_alexnet_layers_as_section_3():
    info = cnnzoo.model_info("alexnet_paper")
    assert info.input_size == (3, 227, 227) and info.year == 2012
    m = cnnzoo.create_model("alexnet_paper").eval()
    convs = [x for x in m.features if isinstance(x, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # conv2/4/5 see only their own GPU's half
    assert sum(isinstance(x, nn.LocalResponseNorm) for x in m.features) == 2
    # hand count: conv weights (kernel^2 * fan-in per group) + biases, then FC 9216-4096-4096-1000
    hand = (96 * 3 * 11 * 11 + 96) + (256 * 48 * 5 * 5 + 256) + (384 * 256 * 9 + 384) \
        + (384 * 192 * 9 + 384) + (256 * 192 * 9 + 256) \
        + (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert _params(m) == hand == info.params == 60_965_224
    sizes = []
    for layer in m.features:
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            layer.register_forward_hook(lambda _m, _i, o: sizes.append(o.shape[-1]))
    with torch.no_grad():
        out = m(torch.randn(1, 3, 227, 227))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]  # Figure 2: 55x55x96 ... 13x13x256 -> 6x6 after pool5
    assert _macs(m, info.input_size) == info.macs
    # Section 5 initialisation: N(0, 0.01), biases 1 in conv2/4/5 and hidden FC layers, else 0
    fcs = [x for x in m.classifier if isinstance(x, nn.Linear)]
    with torch.no_grad():
        assert [c.bias.mean().item() for c in convs] == [0.0, 1.0, 0.0, 1.0, 1.0]
        assert [f.bias.mean().item() for f in fcs] == [1.0, 1.0, 0.0]
        assert abs(fcs[0].weight.std().item() - 0.01) < 2e-4


def test_grouped_conv_is_the_two_tower_split():
    with torch.device("meta"):
        conv4 = cnnzoo.create_model("alexnet_paper").features[10]
    assert isinstance(conv4, nn.Conv2d) and conv4.weight.shape == (384, 192, 3, 3)
    conv4 = conv4.to_empty(device="cpu")
    conv4.reset_parameters()
    x = torch.randn(1, 384, 13, 13)
    y = x.clone()
    y[:, 192:] = torch.randn(1, 192, 13, 13)  # change only the second GPU's maps
    with torch.no_grad():
        a, b = conv4(x), conv4(y)
    assert torch.equal(a[:, :192], b[:, :192]) and not torch.equal(a[:, 192:], b[:, 192:])


def test_lrn_uses_the_papers_constants():
    """b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta with k=2, n=5, alpha=1e-4, beta=0.75."""
    a = torch.randn(2, 12, 3, 3, dtype=torch.float64) * 30  # large enough for the normalisation to bite
    ref = torch.empty_like(a)
    for i in range(12):
        s = (a[:, max(0, i - 2):min(12, i + 3)] ** 2).sum(1)
        ref[:, i] = a[:, i] / (2.0 + 1e-4 * s) ** 0.75
    assert (paper_lrn()(a) - ref).abs().max() < 1e-12
    assert (ref - a).abs().max() > 1.0  # the test would notice alpha/n vs alpha


def test_sizes_channels_classes():
    with torch.device("meta"):
        for name, s in [("alexnet", 63), ("alexnet_paper", 67)]:
            m = cnnzoo.create_model(name, num_classes=10, in_chans=1)
            assert m(torch.empty(2, 1, s, s)).shape == (2, 10)
            with pytest.raises(cnnzoo.InputSizeError, match=f"minimum is {s}x{s}"):
                m(torch.empty(1, 1, s - 1, s - 1))


def test_load_pretrained_torchvision_checkpoint(tmp_path):
    torch.manual_seed(0)
    theirs = torchvision.models.alexnet().state_dict()
    torch.save(theirs, tmp_path / "alexnet.pth")
    save_file(theirs, str(tmp_path / "alexnet.safetensors"))
    for path in (tmp_path / "alexnet.pth", tmp_path / "alexnet.safetensors"):
        ours = cnnzoo.create_model("alexnet", num_classes=10)
        fresh_head = ours.classifier[6].weight.clone()
        report = cnnzoo.load_pretrained(ours, path)
        assert sorted(report["reset"]) == ["classifier.6.bias", "classifier.6.weight"]
        sd = ours.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in theirs.items() if not k.startswith("classifier.6."))
        assert torch.equal(ours.classifier[6].weight, fresh_head) and ours.classifier[6].out_features == 10
    ours.eval()
    with torch.no_grad():
        out = ours(torch.randn(1, 3, 224, 224))  # default size, float32
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_alexnet_cifar_as_zhang_et_al_2017():
    """The small AlexNet of "Understanding deep learning requires rethinking generalization": 1,387,786
    parameters on 28x28 CIFAR-10 crops (their Table 1); two 5x5x64 conv + 3x3/2 pool + LRN modules
    (28 -> 14 -> 7), then FC 384, 192, 10."""
    info = cnnzoo.model_info("alexnet_cifar")
    m = cnnzoo.create_model("alexnet_cifar").eval()
    assert _params(m) == info.params == 1_387_786
    assert info.input_size == (3, 28, 28) and info.num_classes == 10
    assert _macs(m, (3, 28, 28)) == info.macs == 28 * 28 * 64 * 75 + 14 * 14 * 64 * 1600 + 3136 * 384 + 384 * 192 + 1920
    shapes = []
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        for layer in m.features:
            x = layer(x)
            if isinstance(layer, nn.LocalResponseNorm):
                shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 14, 14), (64, 7, 7)]
    assert [lin.out_features for lin in m.classifier if isinstance(lin, nn.Linear)] == [384, 192, 10]


def test_alexnet_cifar_lrn_is_tensorflows():
    """TensorFlow's local_response_normalization(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75), by hand."""
    lrn = next(mod for mod in cnnzoo.create_model("alexnet_cifar").features if isinstance(mod, nn.LocalResponseNorm))
    a = torch.randn(2, 64, 3, 3, dtype=torch.float64) * 3
    sq = torch.nn.functional.pad(a * a, (0, 0, 0, 0, 4, 4))
    sqr_sum = torch.stack([sq[:, c:c + 9].sum(1) for c in range(64)], 1)
    expected = a / (1.0 + 0.001 / 9 * sqr_sum) ** 0.75
    assert torch.allclose(lrn(a), expected, rtol=1e-12, atol=0)
