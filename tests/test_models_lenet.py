"""LeNet-5: the 1998 paper's net and the modern ReLU form (no reference library has either)."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.lenet import C3_TABLE, ScaledTanh, SparseConv2d, Subsampling


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_paper_parameter_count_is_60000_up_to_f6():
    m = cnnzoo.create_model("lenet5")
    f = m.features
    # The paper's per-layer trainable parameters (Section II.B).
    layers = [f.c1, f.s2, f.c3, f.s4, f.c5, m.classifier.f6]
    assert [_params(layer) for layer in layers] == [156, 12, 1516, 32, 48120, 10164]
    assert _params(m) - _params(m.classifier.output) == 60_000  # "LeNet-5 ... 60,000 trainable parameters"
    assert _params(m) == 60_850 == cnnzoo.model_info("lenet5").params  # + linear output 84*10+10
    # modern form: dense C3 (6*16*25+16 = 2416) and no S-layer parameters
    assert _params(cnnzoo.create_model("lenet5_relu")) == 61_706 == cnnzoo.model_info("lenet5_relu").params


@pytest.mark.parametrize("name", ["lenet5", "lenet5_relu"])
def test_layer_shapes_macs_and_defaults(name):
    info = cnnzoo.model_info(name)
    assert info.input_size == (1, 32, 32) and info.num_classes == 10
    assert (info.min_size, info.max_size) == (28, 32)
    m = cnnzoo.create_model(name).eval()
    shapes = {}
    for key in ("c1", "s2", "c3", "s4", "c5"):
        layer = getattr(m.features, key)
        layer.register_forward_hook(lambda _m, _i, o, key=key: shapes.update({key: o.shape}))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = m(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    assert {k: tuple(v[1:]) for k, v in shapes.items()} == {
        "c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10), "s4": (16, 5, 5), "c5": (120, 1, 1)}
    # Both compute C3 as a dense convolution: 6*28*28*25 + 16*6*10*10*25 + 120*400 + 120*84 + 84*10.
    assert fc.get_total_flops() // 2 == info.macs == 117_600 + 240_000 + 48_000 + 10_080 + 840


def test_sparse_c3_follows_table_1():
    torch.manual_seed(0)
    conv = SparseConv2d(C3_TABLE, 6, 5).double()
    assert conv.weight.shape == (60, 5, 5) and conv.mask.sum() == 60  # 60 connections
    x = torch.randn(2, 6, 14, 14, dtype=torch.float64)
    out = conv(x)
    # map j equals an ordinary convolution over exactly the S2 maps Table I lists for it
    start = 0
    for j, inputs in enumerate(C3_TABLE):
        w = conv.weight[start:start + len(inputs)].unsqueeze(0)
        ref = F.conv2d(x[:, list(inputs)], w, conv.bias[j:j + 1])
        assert (out[:, j:j + 1] - ref).abs().max() < 1e-12
        start += len(inputs)
    # and does not depend on the others (the paper: "breaks the symmetry")
    x.requires_grad_(True)
    for j, inputs in enumerate(C3_TABLE):
        (g,) = torch.autograd.grad(conv(x)[:, j].sum(), x)
        seen = {i for i in range(6) if g[:, i].abs().sum() > 0}
        assert seen == set(inputs), (j, seen)
    assert [len(t) for t in C3_TABLE] == [3] * 6 + [4] * 9 + [6]


def test_paper_squashing_subsampling_and_init():
    f = ScaledTanh()
    assert abs(f(torch.tensor(1.0)).item() - 1.0) < 1e-4 and abs(f(torch.tensor(-1.0)).item() + 1.0) < 1e-4
    s = Subsampling(3)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
        s.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(2, 3, 4, 4)
    block_sums = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))
    ref = block_sums * s.weight.view(1, 3, 1, 1) + s.bias.view(1, 3, 1, 1)
    assert torch.allclose(s(x), ref, atol=1e-6)
    torch.manual_seed(0)
    m = cnnzoo.create_model("lenet5")
    # Appendix A: weights uniform in +-2.4 / fan-in
    for layer, fan_in in [(m.features.c1, 25), (m.features.c5, 400), (m.classifier.f6, 120)]:
        w = layer.weight
        assert w.abs().max() <= 2.4 / fan_in and w.abs().max() > 0.9 * 2.4 / fan_in
    assert m.features.s2.weight.abs().max() <= 0.6
    c3 = m.features.c3.weight
    assert c3[:18].abs().max() <= 2.4 / 75 and c3[-6:].abs().max() <= 2.4 / 150 < c3[18:54].abs().max()


@pytest.mark.parametrize("name", ["lenet5", "lenet5_relu"])
def test_28px_input_is_the_centred_32px_field(name):
    m = cnnzoo.create_model(name, num_classes=3, in_chans=2).eval()
    x = torch.randn(2, 2, 28, 28)
    x29 = torch.randn(1, 2, 29, 30)
    with torch.no_grad():
        assert torch.equal(m(x), m(F.pad(x, (2, 2, 2, 2))))
        assert torch.equal(m(x29), m(F.pad(x29, (1, 1, 1, 2))))  # odd: the extra row/column goes last
        assert m(x).shape == (2, 3)
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 28x28"):
        m(torch.randn(1, 2, 27, 32))
    with pytest.raises(cnnzoo.InputSizeError, match="at most 32x32"):
        m(torch.randn(1, 2, 33, 33))
    with pytest.raises(cnnzoo.InputSizeError, match="in_chans=1"):
        m(torch.randn(1, 1, 32, 32))


def _mnist(data_dir, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(data_dir / "mnist" / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(data_dir / "mnist" / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    x = (torch.from_numpy(images.copy()).float() / 255 - 0.1307) / 0.3081
    return x, torch.from_numpy(labels.copy()).long()


@pytest.mark.parametrize("name", ["lenet5", "lenet5_relu"])
def test_learns_mnist_from_28px_digits(name, data_dir):
    """Real data, 28x28 digits padded to the paper's field: 150 SGD steps reach > 85 % (the paper's small
    +-2.4/F initialisation included; one thread, which is fastest for a net this small)."""
    xtr, ytr = _mnist(data_dir, "train", 4000)
    xte, yte = _mnist(data_dir, "test", 1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        m = cnnzoo.create_model(name)
        lr = 0.1 if name == "lenet5" else 0.05
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, nesterov=True)
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            idx = torch.randint(0, len(xtr), (64,), generator=g)
            loss = F.cross_entropy(m(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            acc = (m(xte).argmax(1) == yte).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert acc > 0.85, acc
    assert math.isfinite(loss.item())
