"""``cnnzoo.fuse``: BatchNorm folded into convs gives the same eval logits with no BatchNorm left."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.deploy.fusion import find_conv_bn_pairs, fuse


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a wrong fold shows up in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def _count_bn(model: nn.Module, x: torch.Tensor | None = None) -> int:
    """BatchNorm layers, or with ``x`` those that run in eval mode (GoogLeNet's aux heads do not)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if x is None:
        return len(bns)
    used: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, a, o: used.add(id(m))) for m in bns]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return len(used)


def _check(model: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> nn.Module:
    before, running = _count_bn(model), _count_bn(model, x)
    fused = fuse(model)
    assert model.training is False and _count_bn(model) == before  # original untouched
    assert _count_bn(fused, x) == 0, f"{_count_bn(fused, x)} BatchNorms left unfolded"
    assert len(fused.fused_pairs) == running > 0
    with torch.no_grad():
        ref, out = model(x), fused(x)
    diff = (ref - out).abs().max().item()
    assert diff < tol, f"fused logits differ by {diff:.2e}"
    assert ref.abs().max().item() > 1e-3  # real, non-degenerate logits
    return fused


# zoo models and the image size used here (small, for speed); skipped if a family is not in the zoo yet
ZOO = [("resnet18", 32), ("resnet20_cifar", 32), ("googlenet", 32), ("efficientnet_b0", 32), ("vgg11_bn", 32),
       ("mobilenet_v3_small", 32), ("mobilenet_v1_050", 32)]


@pytest.mark.parametrize("name,size", ZOO)
def test_fuse_zoo_models(name: str, size: int) -> None:
    if name not in cnnzoo.list_models():
        pytest.skip(f"{name} is not registered in the zoo")
    torch.manual_seed(0)
    model = _randomise_bn(cnnzoo.create_model(name, num_classes=10))
    x = torch.randn(2, model.default_cfg["input_size"][0], size, size)
    fused = _check(model, x)
    assert fused.cnnzoo_name == name  # attributes and the input-size hook survive the fold
    with pytest.raises(cnnzoo.InputSizeError):
        fused(torch.randn(1, 2, size, size))


def test_fuse_torchvision_resnet() -> None:
    """Any nn.Module: torchvision's named conv1/bn1 pairs and Sequential (downsample) conv/bn blocks."""
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10))
    fused = _check(model, torch.randn(2, 3, 64, 64))
    assert ("conv1", "bn1") in fused.fused_pairs
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in fused.fused_pairs
    assert isinstance(fused.layer1[0].bn2, nn.Identity) and fused.layer1[0].conv2.bias is not None


def test_fuse_is_exact_in_float64() -> None:
    model = _randomise_bn(torchvision.models.resnet18(num_classes=10)).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        diff = (model(x) - fuse(model)(x)).abs().max().item()
    assert diff < 1e-10


class _Untraceable(nn.Module):
    """Data-dependent control flow (fx cannot trace it) and a conv output read twice (must not fold)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc, self.bn_fc = nn.Linear(4, 5), nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        z = self.conv2(y)
        out = self.bn2(z) + z
        if out.sum() > -1e9:
            out = self.head(out)
        return self.bn_fc(self.fc(out.mean((2, 3))))


def test_fuse_fallback_without_fx() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(_Untraceable())
    with torch.no_grad():
        model.bn_fc.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 16, 16)
    pairs = find_conv_bn_pairs(model, example_input=x)
    assert sorted(pairs) == [("conv1", "bn1"), ("fc", "bn_fc"), ("head.0", "head.1")]  # not conv2/bn2
    assert find_conv_bn_pairs(model) == [("head.0", "head.1")]  # no input: Sequential neighbours only
    fused = fuse(model, example_input=x)
    assert isinstance(fused.bn2, nn.BatchNorm2d) and isinstance(fused.bn1, nn.Identity)
    with torch.no_grad():
        assert (model(x) - fused(x)).abs().max().item() < 1e-5


def test_fuse_leaves_batch_statistics_bn_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU())
    assert find_conv_bn_pairs(model) == []
    fused = fuse(model)
    assert isinstance(fused[1], nn.BatchNorm2d)


# --- fuse_activations: activations and residual adds inside the conv kernel (oneDNN, CPU inference) ---

# (name, size, convs fused): the counts follow from each paper's block diagram, e.g. ResNet-18: stem conv +
# 8 blocks x (conv1 -> ReLU, conv2 -> + identity -> ReLU) = 17 (the 3 downsample convs feed the add as the
# other operand); MobileNetV2: stem, 16 expands, 17 depthwise, 10 projections with a residual, the last conv
ACT_ZOO = [("resnet18", 32, 17), ("resnet50", 32, 49), ("mobilenet_v2", 32, 45), ("efficientnet_b0", 32, 74),
           ("mobilenet_v3_large", 32, 49), ("googlenet", 32, 57), ("vgg11_bn", 32, 8), ("resnet20_cifar", 32, 19)]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs PyTorch's oneDNN (mkldnn)")
@pytest.mark.parametrize("name,size,count", ACT_ZOO)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fuse_activations_zoo(name: str, size: int, count: int, channels_last: bool) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(cnnzoo.create_model(name, num_classes=10))
    x = torch.randn(2, 3, size, size)
    fused = cnnzoo.fuse_activations(fuse(model))
    assert fused.fused_activations == count
    assert sum(isinstance(m, cnnzoo.deploy.fusion.ConvPointwise2d) for m in fused.modules()) == count
    if channels_last:
        fused, x = fused.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, out = model(x), fused(x)
    rel = ((ref - out).abs().max() / ref.abs().max()).item()
    assert rel < 1e-5, f"logits differ by {rel:.2e} (relative)"
    assert fused.cnnzoo_name == name  # attributes and the input-size hook survive
    with pytest.raises(cnnzoo.InputSizeError):
        fused(torch.randn(1, 2, size, size))


def test_fuse_activations_every_post_op_and_the_plain_fallback() -> None:
    """Each activation kind, an add with and without one after it; autograd takes the plain ops."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            acts = [nn.ReLU(), nn.ReLU6(inplace=True), nn.SiLU(), nn.Hardswish(), nn.Sigmoid(), nn.Tanh(),
                    nn.GELU(), nn.Hardtanh(-0.5, 0.5)]
            self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1, groups=g) for g in (1, 2) * 4)
            self.acts = nn.ModuleList(acts)
            self.res = nn.Conv2d(8, 8, 1)
            self.fconv = nn.Conv2d(8, 8, 3, padding=1)
            self.shared = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.down = nn.AvgPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for conv, act in zip(self.convs, self.acts, strict=True):
                x = act(conv(x))
            x = self.res(x) + x  # an add with no activation after it
            y = torch.nn.functional.silu(self.fconv(x))  # a functional activation
            z = torch.relu(self.down(x) + self.shared(x)) + self.shared(x)  # a conv called twice: left alone
            return z + y.mean()

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 8, 16, 16)
    fused = cnnzoo.fuse_activations(net)
    assert fused.fused_activations == 8 + 1 + 1  # the 8 act convs, res + x, fconv; not shared
    with torch.inference_mode():
        assert torch.allclose(fused(x), net(x), rtol=1e-5, atol=1e-6)
    xg = x.clone().requires_grad_()
    fused(xg).sum().backward()  # training-style call: plain conv + add + act, same gradients
    xr = x.clone().requires_grad_()
    net(xr).sum().backward()
    assert torch.allclose(xg.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_fuse_activations_leaves_untraceable_models_alone() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x)) if x.sum() > 0 else self.conv(x)  # data-dependent: fx fails

    net = Branchy()
    out = cnnzoo.fuse_activations(net)
    assert out is not net and isinstance(out.conv, nn.Conv2d) and not hasattr(out, "fused_activations")
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(out(x), net(x))
