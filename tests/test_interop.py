"""cnnzoo nets in timm's and torchvision's tools: ``pretrained_cfg`` read by timm's data config,
``group_matcher`` for timm's layer-wise LR decay, ``norm_layer=`` where torchvision takes it, and a
torchvision FasterRCNN on a cnnzoo backbone (the recipes of docs/backbones.md)."""

from __future__ import annotations

import pytest
import timm
import timm.data
import timm.optim
import torch
from timm.models import group_parameters
from torch import nn

import cnnzoo
from cnnzoo.models.hub import attach_weights, published_weights

ALL = cnnzoo.list_models()


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


# ---- pretrained_cfg --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("lenet5", (1, 32, 32)), ("alexnet_paper", (3, 227, 227)),
                                            ("efficientnet_b3", (3, 300, 300)), ("resnet50", (3, 224, 224))])
def test_timm_resolves_the_nets_own_data_config(name, size):
    cfg = timm.data.resolve_data_config({}, model=_meta(name))
    assert cfg["input_size"] == size and len(cfg["mean"]) == len(cfg["std"]) == size[0]
    assert (cfg["crop_pct"], cfg["crop_mode"], cfg["interpolation"]) == (0.875, "center", "bilinear")


def test_pretrained_cfg_has_timms_keys_and_default_cfg_is_the_same_dict():
    net = _meta("resnet50d", num_classes=7)
    cfg = net.pretrained_cfg
    assert net.default_cfg is cfg
    assert {k: cfg[k] for k in ("num_classes", "classifier", "first_conv")} == {
        "num_classes": 7, "classifier": "fc", "first_conv": "conv1.0"}
    assert _meta("vgg16").pretrained_cfg["classifier"] == "classifier.6"
    assert _meta("efficientnet_b0").pretrained_cfg["first_conv"] == "features.0.0"


@pytest.mark.parametrize(("name", "expected"), [
    ("efficientnet_b3", {"input_size": (3, 300, 300), "interpolation": "bicubic", "crop_pct": 0.9375}),
    ("resnet50", {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.9655}),  # 224 of 232
])
def test_published_weights_set_timms_preprocessing(name, expected):
    net = _meta(name)
    attach_weights(net, published_weights(name))  # the tables only: nothing is downloaded
    cfg = timm.data.resolve_data_config({}, model=net)
    assert {k: cfg[k] for k in expected} == expected
    pw = net.pretrained_weights
    assert cfg["mean"] == pw.mean and net.pretrained_cfg["crop"] == pw.crop  # cnnzoo's own keys stay


# ---- group_matcher ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_layer_decay_gives_several_lr_scales(name):
    net = _meta(name)
    opt = timm.optim.create_optimizer_v2(net, "adamw", lr=1e-3, layer_decay=0.75)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) >= 3 and scales[-1] == 1.0
    head = {id(p) for p in net.get_classifier().parameters()}
    top = [g for g in opt.param_groups if g["lr_scale"] == 1.0]
    assert head <= {id(p) for g in top for p in g["params"]}  # the classifier learns at the full rate


@pytest.mark.parametrize("name", ["resnet18", "resnet50d"])
@pytest.mark.parametrize("coarse", [False, True])
def test_resnet_groups_equal_timms(name, coarse):
    with torch.device("meta"):
        theirs = timm.create_model(name)
    ours = _meta(name)
    assert group_parameters(ours, ours.group_matcher(coarse)) == group_parameters(theirs, theirs.group_matcher(coarse))


# ---- norm_layer= -----------------------------------------------------------------------------------------

NORM_FAMILIES = ("resnet", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "efficientnet")


@pytest.mark.parametrize("name", [n for n in ALL if cnnzoo.model_info(n).family in NORM_FAMILIES])
def test_norm_layer_on_every_family_that_takes_it(name):
    from torchvision.ops import FrozenBatchNorm2d

    net = _meta(name, norm_layer=FrozenBatchNorm2d).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in net.modules()) == sum(
        isinstance(m, nn.BatchNorm2d) for m in _meta(name).modules())
    info = cnnzoo.model_info(name)
    x = torch.empty(1, info.in_chans, info.min_size, info.min_size, device="meta")
    assert net(x).shape == (1, info.num_classes)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0", "mobilenet_v2", "resnet18"])
def test_norm_layer_nets_equal_torchvisions(name):
    """torchvision's builder with the same norm_layer computes the same function from the same weights."""
    import torchvision
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    ours = cnnzoo.create_model(name, norm_layer=FrozenBatchNorm2d).eval()
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    theirs = getattr(torchvision.models, name)(norm_layer=FrozenBatchNorm2d).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_norm_layer_where_the_family_has_none_is_one_line():
    from torchvision.ops import FrozenBatchNorm2d

    with pytest.raises(cnnzoo.CnnzooError, match=r"vgg16 takes no argument norm_layer: its arguments are") as e:
        _meta("vgg16", norm_layer=FrozenBatchNorm2d)
    assert "\n" not in str(e.value)
