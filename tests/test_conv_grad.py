"""cnnzoo.speed.conv_grad: small-map weight gradients as one GEMM give oneDNN's gradients, and only where asked."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.speed.conv_grad import (
    SmallMapConv2d,
    count_gemm_convs,
    gemm_weight_grad,
    small_map_grads,
    to_small_map_grads,
)


def _grads(conv: nn.Conv2d, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    y = conv(x)
    y.backward(g)
    return y.detach(), x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,size,bias,cl", [
    (512, 512, 3, 1, 1, 1, 2, False, False),   # ResNet-18 layer4 at a 64x64 input
    (256, 512, 3, 2, 1, 1, 4, False, False),   # its stride-2 entry conv
    (128, 64, 3, 1, 1, 1, 1, True, False),     # a 1x1 map, with a bias
    (192, 96, 5, 1, 2, 1, 2, True, True),      # 5x5, channels_last
    (256, 128, 3, 1, 2, 2, 3, False, False),   # dilated, 3x3 map from 256 channels (3*3*32 > 256: plain)
])
def test_gemm_weight_grad_equals_onednn(cin, cout, k, stride, pad, dil, size, bias, cl):
    torch.manual_seed(0)
    plain = nn.Conv2d(cin, cout, k, stride, pad, dil, bias=bias)
    ours = copy.deepcopy(plain)
    x = torch.randn(6, cin, size, size)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
        plain, ours = (m.to(memory_format=torch.channels_last) for m in (plain, ours))
    ho = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    g = torch.randn(6, cout, ho, ho)
    ref = _grads(plain, x, g)
    with small_map_grads(ours) as n:
        assert n == 1 and type(ours) is SmallMapConv2d
        assert ours._gemm(x) == gemm_weight_grad(cin, (k, k), (ho, ho))
        got = _grads(ours, x, g)
    assert type(ours) is nn.Conv2d
    assert torch.equal(got[0], ref[0])  # forward: the same oneDNN kernel, bit for bit
    assert torch.equal(got[1], ref[1])  # input gradient: the same oneDNN kernel
    for a, b in zip(got[2:], ref[2:], strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_rule_is_the_measured_one():
    # 1x1 maps from 64 input channels, 2x2 from 128, 4x4 from 512; never for 1x1 kernels
    assert gemm_weight_grad(64, (3, 3), (1, 1)) and not gemm_weight_grad(32, (3, 3), (1, 1))
    assert gemm_weight_grad(128, (3, 3), (2, 2)) and not gemm_weight_grad(64, (3, 3), (2, 2))
    assert gemm_weight_grad(512, (3, 3), (4, 4)) and not gemm_weight_grad(256, (3, 3), (4, 4))
    assert not gemm_weight_grad(512, (3, 3), (7, 7)) and gemm_weight_grad(2048, (3, 3), (7, 7))
    assert not gemm_weight_grad(2048, (1, 1), (1, 1))


def test_plain_path_without_grad_in_autocast_and_for_other_convs():
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    x = torch.randn(2, 512, 2, 2)
    with small_map_grads(conv):
        assert conv._gemm(x)
        with torch.no_grad():
            assert not conv._gemm(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not conv._gemm(x)
        assert not conv._gemm(x.double())
        conv.weight.requires_grad_(False)
        assert not conv._gemm(x)
    # grouped, depthwise, 'same'-padded and reflect-padded convs stay nn.Conv2d
    others = nn.Sequential(nn.Conv2d(64, 64, 3, groups=64), nn.Conv2d(64, 64, 3, groups=2),
                           nn.Conv2d(64, 64, 3, padding="same"), nn.Conv2d(64, 64, 3, padding_mode="reflect"))
    with small_map_grads(others) as n:
        assert n == 0 and all(type(m) is nn.Conv2d for m in others)


def test_restored_after_an_exception_and_state_dict_unchanged():
    net = cnnzoo.create_model("resnet18", num_classes=10)
    keys = list(net.state_dict())
    with pytest.raises(RuntimeError, match="boom"), small_map_grads(net) as n:
        assert n == 20  # every plain conv of ResNet-18 (stem, 16 in the blocks, 3 downsamples)
        assert list(net.state_dict()) == keys
        raise RuntimeError("boom")
    assert not any(isinstance(m, SmallMapConv2d) for m in net.modules())
    assert to_small_map_grads(net) == 20


def test_resnet18_step_matches_and_counts_the_small_map_convs():
    torch.manual_seed(0)
    a = cnnzoo.create_model("resnet18", num_classes=10)
    b = copy.deepcopy(a)
    to_small_map_grads(b)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 3, 5, 9])
    # layer4's four 3x3 convs run at 2x2 from 256/512 channels; everything else at 4x4 and up stays oneDNN's
    assert count_gemm_convs(b, x[:1]) == 4
    assert count_gemm_convs(b, x[:1], amp=True) == 0
    for m in (a, b):
        F.cross_entropy(m(x), y).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_benchmark_reports_the_gemm_convs():
    common = dict(mode="train", batch_size=2, img_size=64, runs=1, warmup=0, measure_memory=False, check=False)
    on = cnnzoo.benchmark("resnet18", gemm_wgrad=True, **common).results[0]
    off = cnnzoo.benchmark("resnet18", gemm_wgrad=False, **common).results[0]
    assert on.ours.gemm_wgrad == 4 and off.ours.gemm_wgrad == 0
    assert "gemm-wgrad" in cnnzoo.benchmark("resnet18", gemm_wgrad=True, **common).table()


class TinyMapNet(nn.Module):
    """Digits (8x8) down to a 2x2 map of 128 channels: its second conv takes the GEMM weight gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 128, 3, 2, 1)
        self.c2 = nn.Conv2d(128, 128, 3, 2, 1)
        self.bn = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.c2(F.relu(self.c1(x)))))
        return self.fc(x.mean((2, 3)))


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "last" / "model.safetensors"))


def test_train_uses_it_resumes_exactly_and_opts_out(tmp_path, monkeypatch):
    from cnnzoo.speed import policy
    from cnnzoo.training import engine

    monkeypatch.setattr(policy, "gemm_wgrad_default", lambda dev: True)  # as on an AVX2 CPU
    used: list[int] = []
    real = engine.small_map_grads

    def spy(model, enabled=True):
        cm = real(model, enabled)

        class Wrap:
            def __enter__(self):
                n = cm.__enter__()
                used.append(n)
                return n

            def __exit__(self, *exc):
                return cm.__exit__(*exc)
        return Wrap()

    monkeypatch.setattr(engine, "small_map_grads", spy)
    kw = dict(epochs=2, batch_size=64, lr=0.05, train_subset=512, seed=1, save_every_s=None, progress=False,
              verbose=False)
    torch.manual_seed(0)
    net = TinyMapNet()
    full = cnnzoo.train(net, "digits", out=tmp_path / "full", **kw)
    assert used == [2] and all(type(m) is nn.Conv2d for m in net.modules() if isinstance(m, nn.Conv2d))
    torch.manual_seed(0)
    cnnzoo.train(TinyMapNet(), "digits", out=tmp_path / "cut", max_steps=11, **kw)
    cnnzoo.train(TinyMapNet(), "digits", out=tmp_path / "cut", resume=True, **kw)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the GEMM path is deterministic: bit-exact resume
    used.clear()
    torch.manual_seed(0)
    off = cnnzoo.train(TinyMapNet(), "digits", out=tmp_path / "off", gemm_wgrad=False, **kw)
    assert used == []
    # the same training to float rounding: oneDNN's weight gradient against the GEMM's
    for h_on, h_off in zip(full.history, off.history, strict=True):
        assert h_on["train_loss"] == pytest.approx(h_off["train_loss"], rel=1e-3)
