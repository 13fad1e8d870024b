"""The traced receptive field of every zoo model equals an empirical probe: the non-zero support of the input
gradient of a unit of the last feature map, in a float64 net with all-positive weights, linear activations
and average pooling (cnnzoo.analysis.rf_probe)."""

from __future__ import annotations

import math

import pytest
import torch

import cnnzoo
from analysis_nets import EXPECTED_RF, ResDilNet
from cnnzoo.analysis import receptive_field, resolve_model, rf_probe
from cnnzoo.errors import CnnzooError

ZOO = cnnzoo.list_models()


def _net(name: str) -> torch.nn.Module:
    """On the meta device (the probe swaps in its own weights) unless the net keeps integer buffers whose
    values matter (LeNet-5's C3 connection mask)."""
    net = resolve_model(name, device="meta")
    if any(not b.is_floating_point() and not n.endswith("num_batches_tracked") for n, b in net.named_buffers()):
        net = resolve_model(name)
    return net


@pytest.mark.parametrize("name", ZOO)
def test_zoo_rf_equals_probe(name):
    """Both ends of the field are measured inside the image: the first unit's last pixel and the last unit's
    first pixel, which fix r and start. The positive linear net is separable (box kernels act on H and W
    independently), so a tall input S x w measures the H axis at a fraction of an S x S input's cost."""
    info = cnnzoo.model_info(name)
    net = _net(name)
    rf = receptive_field(net, info.input_size)
    w = max(info.min_size, 32)
    size = max(w, 32 * math.ceil((rf.rf / 2 + 2 * rf.jump) / 32))
    if info.max_size is not None:
        size, w = min(size, info.max_size), min(w, info.max_size)
    first, last = rf_probe(net, (info.in_chans, size, w), units=("first", "last"), fast=True)
    assert first.rf.r[0] == rf.rf and first.rf.jump[0] == rf.jump
    assert first.box == first.expected, (first.box, first.expected)
    assert last.box == last.expected, (last.box, last.expected)
    if info.max_size is None:
        assert first.box[0] == (0, first.rf.interval(first.unit)[0][1]) and first.box[0][1] < size - 1
        assert last.box[0][0] == last.rf.interval(last.unit)[0][0] > 0


@pytest.mark.parametrize("name,size,layer", [
    ("lenet5", (1, 32, 32), None), ("lenet5_relu", (1, 28, 28), None), ("nin_cifar", (3, 32, 8), None),
    ("resnet20_cifar", (3, 64, 8), None), ("mobilenet_v2_cifar", (3, 96, 8), None),
    ("mobilenet_v3_small", (3, 96, 32), "features.4"), ("googlenet", (3, 96, 32), "inception3b"),
    ("alexnet_paper", (3, 227, 67), None)])
def test_exact_probe_agrees_with_fast_probe(name, size, layer):
    """The net's own convolutions (grouped, depthwise, LeNet's masked C3, SE blocks, LRN) with positive
    weights give the same support as the fast probe and the trace, both ends inside the image."""
    net = resolve_model(name)
    exact = rf_probe(net, size, layer=layer, units=("first", "centre", "last"))
    fast = rf_probe(net, size, layer=layer, units=("first", "centre", "last"), fast=True)
    assert [p.box for p in exact] == [p.box for p in fast] == [p.expected for p in exact]
    if not name.startswith("lenet5"):  # C5 sees the whole 32x32 field
        assert exact[0].box[0][1] < size[1] - 1 and exact[-1].box[0][0] > 0


@pytest.mark.parametrize("fast", [False, True])
def test_user_net_unclipped(fast):
    first, centre, last = rf_probe(ResDilNet(), (3, 64, 64), units=("first", "centre", "last"), fast=fast)
    r, j, start = EXPECTED_RF
    assert centre.unit == (7, 7) and not centre.clipped
    c = start + 7 * j
    assert centre.box == ((c - 15, c + 15),) * 2 and centre.size == (r, r)
    assert first.box == ((0, start + 15),) * 2  # unit 0 reaches 18; its left half lies in the padding
    assert last.box == ((start + 15 * j - 15, 63),) * 2


def test_probe_a_named_layer():
    (p,) = rf_probe(ResDilNet(), (3, 64, 64), layer="block")
    assert p.layer == "block" and p.size == (17, 17) and p.ok  # inside the residual block: r 17


def test_probe_large_input_unclipped_resnet50():
    """Above the RF the whole field is inside the image: the centre unit's support is 427 x 427 exactly."""
    (p,) = rf_probe(_net("resnet50"), (3, 480, 32), units=[(7, 0)], fast=True)
    assert not p.clipped or p.expected_size[0] == 427
    assert p.size[0] == 427 and p.box[0] == (224 - 213, 224 + 213)


def test_probe_errors():
    with pytest.raises(CnnzooError, match="unit must be"):
        rf_probe(ResDilNet(), (3, 64, 64), units=("middle",))
    with pytest.raises(CnnzooError, match="outside"):
        rf_probe(ResDilNet(), (3, 64, 64), units=[(16, 0)])
    with pytest.raises(CnnzooError, match="no module"):
        rf_probe(ResDilNet(), (3, 64, 64), layer="nope")
