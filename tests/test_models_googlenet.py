"""GoogLeNet: torchvision's form (exact equivalence, eval and training outputs) and the 2014 paper's net."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.googlenet import GoogLeNetOutputs
from equivalence import assert_same_function


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _tv_googlenet(init_weights: bool = False, **kwargs) -> nn.Module:
    """torchvision's GoogLeNet with aux heads; its own init (trunc_normal_, seconds on CPU) only where asked
    for, since every test overwrites or compares the weights anyway."""
    return torchvision.models.googlenet(aux_logits=True, init_weights=init_weights, **kwargs)


def test_equal_to_torchvision_at_min_size():
    assert cnnzoo.model_info("googlenet").min_size == 32
    theirs = _tv_googlenet(init_weights=True)
    assert assert_same_function(cnnzoo.create_model("googlenet"), theirs, (3, 32, 32)) < 1e-9
    # torchvision's input re-normalisation for its ported weights, when asked for
    ours = cnnzoo.create_model("googlenet", transform_input=True)
    assert assert_same_function(ours, _tv_googlenet(transform_input=True), (3, 32, 32)) < 1e-9


def test_training_mode_returns_logits_and_both_aux_heads_like_torchvision():
    torch.manual_seed(0)
    theirs = _tv_googlenet(dropout=0.0, dropout_aux=0.0).double().train()
    ours = cnnzoo.create_model("googlenet", dropout=0.0, dropout_aux=0.0).double().train()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    a, b = ours(x), theirs(x)
    assert isinstance(a, GoogLeNetOutputs) and a._fields == ("logits", "aux_logits2", "aux_logits1")
    for mine, ref in zip(a, b, strict=True):
        assert mine.shape == (2, 1000) and (mine - ref).abs().max() < 1e-9
    assert not torch.equal(a.aux_logits1, a.aux_logits2)
    ours.eval()
    with torch.no_grad():
        assert isinstance(ours(x), torch.Tensor)  # eval mode: the logits only
    no_aux = cnnzoo.create_model("googlenet", aux_logits=False).train()
    assert isinstance(no_aux(torch.randn(2, 3, 32, 32)), torch.Tensor)


def test_params_and_macs():
    meta = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta
    info = cnnzoo.model_info("googlenet")
    with torch.device("meta"):
        full = cnnzoo.create_model("googlenet").eval()
        bare = cnnzoo.create_model("googlenet", aux_logits=False)
        with FlopCounterMode(display=False) as fc:
            full(torch.empty(1, *info.input_size))
    assert _params(bare) == meta["num_params"] == 6_624_904
    assert _params(full) == info.params == 13_004_888  # registered with the aux heads (the default)
    assert fc.get_total_flops() // 2 == info.macs and round(info.macs / 1e9, 3) == meta["_ops"]


# Table 1 of the paper: ops (millions of multiply-adds) per Inception module at 224x224.
TABLE_1_OPS = {"inception3a": 128, "inception3b": 304, "inception4a": 73, "inception4b": 88,
               "inception4c": 100, "inception4d": 119, "inception4e": 170, "inception5b": 71}


def test_paper_net_matches_table_1():
    info = cnnzoo.model_info("googlenet_paper")
    with torch.device("meta"):
        m = cnnzoo.create_model("googlenet_paper").eval()
        with FlopCounterMode(display=False, depth=2) as fc:
            m(torch.empty(1, *info.input_size))
    counts = {k.split(".")[-1]: sum(v.values()) // 2 for k, v in fc.get_flop_counts().items() if "." in k}
    for name, ops in TABLE_1_OPS.items():
        assert abs(counts[name] / 1e6 - ops) < 1.0, (name, counts[name])
    # 5a: the table's 54M does not follow from its own filter counts (256+320+128+128 maps at 7x7: 51.1M)
    assert round(counts["inception5a"] / 1e6, 1) == 51.1
    assert round((counts["conv2"] + counts["conv3"]) / 1e6) == 360  # Table 1 "convolution 3x3/1": 360M
    assert fc.get_total_flops() // 2 == info.macs and _params(m) == info.params
    assert all(b.branch3[1].conv.kernel_size == (5, 5) for b in m.modules() if hasattr(b, "branch3"))
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert isinstance(m.lrn1, nn.LocalResponseNorm) and isinstance(m.lrn2, nn.LocalResponseNorm)
    assert m.dropout.p == 0.4 and m.aux1.dropout.p == 0.7 and m.maxpool4.kernel_size == 3
    with torch.device("meta"):
        bare = cnnzoo.create_model("googlenet_paper", aux_logits=False)
    assert _params(bare) == 6_998_552


def test_paper_net_forward_aux_heads_and_init():
    torch.manual_seed(0)
    m = cnnzoo.create_model("googlenet_paper").train()
    with torch.no_grad():  # training-mode outputs at the default size (no BN: batch 1 is fine)
        out = m(torch.randn(1, 3, 224, 224))
    assert isinstance(out, GoogLeNetOutputs) and all(o.shape == (1, 1000) for o in out)
    assert all(torch.isfinite(o).all() for o in out)
    # the aux head's pool is the paper's 5x5/3 average pool: 14x14 -> 4x4 at 224
    aux, x = m.aux1.eval(), torch.randn(1, 512, 14, 14)
    with torch.no_grad():
        manual = F.avg_pool2d(x, 5, 3)
        manual = aux.fc2(F.relu(aux.fc1(torch.flatten(aux.conv(manual), 1))))
        assert manual.shape == (1, 1000) and torch.allclose(aux(x), manual, atol=1e-6)
        # small inputs still train: maps under 5x5 skip the 5x5 pool
        assert m.train()(torch.randn(2, 3, 32, 32)).aux_logits1.shape == (2, 1000)
    # bvlc_googlenet init: U(+-sqrt(3/fan_in)) weights, biases 0.2, 0 for the class outputs
    conv = m.inception4a.branch3[1].conv
    assert conv.weight.abs().max() <= (3 / (16 * 25)) ** 0.5 and (conv.bias == 0.2).all()
    assert (m.fc.bias == 0).all() and (m.aux2.fc2.bias == 0).all() and (m.aux2.fc1.bias == 0.2).all()
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("name", ["googlenet", "googlenet_paper"])
def test_min_size_channels_classes(name):
    m = cnnzoo.create_model(name, num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 32x32"):
        m(torch.randn(1, 1, 31, 31))
    with pytest.raises(cnnzoo.CnnzooError, match="in_chans=3"):
        cnnzoo.create_model(name, in_chans=1, transform_input=True)


def test_load_pretrained_torchvision_checkpoint(tmp_path):
    torch.manual_seed(0)
    theirs = _tv_googlenet().state_dict()
    torch.save(theirs, tmp_path / "googlenet.pth")
    save_file(theirs, str(tmp_path / "googlenet.safetensors"))
    heads = ["aux1.fc2.bias", "aux1.fc2.weight", "aux2.fc2.bias", "aux2.fc2.weight", "fc.bias", "fc.weight"]
    for path in (tmp_path / "googlenet.pth", tmp_path / "googlenet.safetensors"):
        ours = cnnzoo.create_model("googlenet", num_classes=10)
        report = cnnzoo.load_pretrained(ours, path)
        assert sorted(report["reset"]) == heads
        sd = ours.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in theirs.items() if k not in heads)
        assert ours.fc.out_features == 10 and ours.aux1.fc2.out_features == 10
    # a model built without aux heads takes the same file (its convert_state_dict drops them)
    bare = cnnzoo.create_model("googlenet", aux_logits=False)
    assert cnnzoo.load_pretrained(bare, tmp_path / "googlenet.pth")["reset"] == []
    assert torch.equal(bare.fc.weight, theirs["fc.weight"])
    bare.eval()
    with torch.no_grad():
        out = bare(torch.randn(1, 3, 224, 224))  # default size, float32
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
