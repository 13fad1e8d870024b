"""Every net as a backbone, with timm's habits.

- ``forward_features`` / ``forward_head`` / ``num_features`` / ``get_classifier`` / ``reset_classifier`` on all
  registered nets, and equal to timm's where timm has the net (weights loaded from timm, same numbers);
- ``create_model(name, features_only=True, out_indices=...)``: channels and reductions equal to timm's
  ``feature_info``; maps equal to timm's features-only nets; receptive field and jump from cnnzoo's analysis;
  checkpoints load with ``load_pretrained``;
- torchvision's ``create_feature_extractor`` on every net (meta device: shapes only, no arithmetic);
- bad input raises one-line :class:`CnnzooError` s (exit 2 from the CLI).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import cnnzoo
from cnnzoo.analysis import receptive_field
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.models.features import FeatureNet, feature_info
from cnnzoo.models.pretrained import load_pretrained

ALL = cnnzoo.list_models()

# ours -> timm's name for the same net
TIMM_NAMES = {
    "resnet18": "resnet18", "resnet18d": "resnet18d", "resnet50": "resnet50", "resnet50d": "resnet50d",
    "resnet101": "resnet101",
    "efficientnet_b0": "efficientnet_b0", "efficientnet_b3": "efficientnet_b3",
    "mobilenet_v3_large": "mobilenetv3_large_100", "mobilenet_v3_small": "mobilenetv3_small_100",
    "mobilenet_v2": "mobilenetv2_100", "mobilenet_v1": "mobilenetv1_100", "mobilenet_v1_125": "mobilenetv1_125",
    "vgg16": "vgg16", "vgg16_bn": "vgg16_bn", "vgg11": "vgg11",
}


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a meta-built model cheap random weights and non-trivial BN statistics (eval mode). float32:
    on CPUs float64 depthwise convolutions take seconds even at 32x32."""
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    return model


# ---- feature_info against timm ------------------------------------------------------------------------


@pytest.mark.parametrize("ours", sorted(TIMM_NAMES))
def test_feature_info_channels_and_reductions_equal_timms(ours):
    with torch.device("meta"):
        theirs = timm.create_model(TIMM_NAMES[ours], features_only=True)
    net = _meta(ours, features_only=True)
    assert net.feature_info.channels() == theirs.feature_info.channels()
    assert net.feature_info.reduction() == theirs.feature_info.reduction()
    assert net.feature_info.jump() == net.feature_info.reduction()


def test_feature_info_of_resnet50_in_full():
    info = _meta("resnet50", features_only=True).feature_info
    assert info.module_name() == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert info.channels() == [64, 256, 512, 1024, 2048]
    assert info.reduction() == [2, 4, 8, 16, 32]
    assert [s["size"] for s in info] == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    rf = receptive_field(_meta("resnet50"))
    assert info.rf() == [max(rf.module(m).r) for m in info.module_name()]
    assert info.rf()[0] == 7 and info.rf() == sorted(info.rf())  # the stem: one 7x7 conv
    assert info.rf()[-1] == rf.rf  # the last stage is the net's last feature map


@pytest.mark.parametrize(("name", "modules", "channels", "reductions"), [
    ("lenet5", ["features.act_c1", "features.act_c3", "features.act_c5"], [6, 16, 120], [1, 2, 4]),
    ("googlenet", ["conv1", "conv3", "inception3b", "inception4e", "inception5b"], [64, 192, 480, 832, 1024],
     [2, 4, 8, 16, 32]),
    ("nin_cifar", ["features.block1", "features.block2", "features.pool2"], [96, 192, 192], [1, 2, 4]),
    ("resnet20_cifar", ["layer1", "layer2", "layer3"], [16, 32, 64], [1, 2, 4]),
    ("alexnet", ["features.1", "features.4", "features.11", "features.12"], [64, 192, 256, 256], [4, 8, 16, 32]),
])
def test_feature_info_of_nets_timm_lacks(name, modules, channels, reductions):
    info = _meta(name, features_only=True).feature_info
    assert (info.module_name(), info.channels(), info.reduction()) == (modules, channels, reductions)


# ---- the classifier API against timm --------------------------------------------------------------------


def _timm_twin(ours: str) -> tuple[nn.Module, nn.Module]:
    """Our net with random weights and timm's net with the same weights."""
    net = _randomised(_meta(ours, num_classes=10))
    with torch.device("meta"):
        theirs = timm.create_model(TIMM_NAMES[ours], num_classes=10)
    theirs = theirs.to_empty(device="cpu").eval()
    sd = net.state_dict()
    if ours.startswith("mobilenet_v1"):
        sd = _mobilenet_v1_to_timm(sd, theirs)
    theirs.load_state_dict(sd, strict=True)
    return net, theirs


def _mobilenet_v1_to_timm(sd: dict[str, torch.Tensor], theirs: nn.Module) -> dict[str, torch.Tensor]:
    """Invert ``MobileNetV1.convert_state_dict`` through timm's own key list (same order, same shapes)."""
    from cnnzoo.models.mobilenet_v1 import MobileNetV1

    mapping = MobileNetV1.convert_state_dict({k: torch.empty(0) for k in theirs.state_dict()})
    ours_of = dict(zip(mapping, theirs.state_dict(), strict=True))
    return {ours_of[k]: v for k, v in sd.items()}


@pytest.mark.parametrize(("ours", "size"), [("resnet18", 32), ("resnet18d", 32), ("mobilenet_v1", 32)])
def test_classifier_api_equals_timms(ours, size):
    net, theirs = _timm_twin(ours)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert net.num_features == theirs.num_features
    assert net.head_hidden_size == theirs.head_hidden_size
    assert torch.equal(net.get_classifier().weight, theirs.get_classifier().weight)
    with torch.no_grad():
        f, g = net.forward_features(x), theirs.forward_features(x)
        torch.testing.assert_close(f, g, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.forward_head(f, pre_logits=True), theirs.forward_head(g, pre_logits=True),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.forward_head(f), theirs.forward_head(g), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net(x), theirs(x), rtol=1e-5, atol=1e-5)
        net.reset_classifier(0)
        theirs.reset_classifier(0)
        assert isinstance(net.get_classifier(), nn.Identity)
        torch.testing.assert_close(net(x), theirs(x), rtol=1e-5, atol=1e-5)  # the pooled pre-logits features
        net.reset_classifier(7)
        assert net(x).shape == (2, 7) and net.num_classes == 7
        assert net.get_classifier().weight.device == x.device  # where the old head was


@pytest.mark.parametrize("ours", ["vgg16", "vgg16_bn", "efficientnet_b0", "mobilenet_v3_large", "mobilenet_v2"])
def test_head_shapes_equal_timms(ours):
    """On the meta device (VGG's 102M-parameter FC head costs seconds to fill): the same widths at each point
    of the head, before and after ``reset_classifier``; timm's VGG is ours with its FC layers as convs."""
    net = _meta(ours).eval()
    with torch.device("meta"):
        theirs = timm.create_model(TIMM_NAMES[ours]).eval()
    x = torch.empty(2, 3, 224, 224, device="meta")
    assert (net.num_features, net.head_hidden_size) == (theirs.num_features, theirs.head_hidden_size)
    f, g = net.forward_features(x), theirs.forward_features(x)
    assert f.shape == g.shape
    assert net.forward_head(f, pre_logits=True).shape == theirs.forward_head(g, pre_logits=True).shape
    for n in (0, 7):
        net.reset_classifier(n)
        theirs.reset_classifier(n)
        assert net(x).shape == theirs(x).shape


@pytest.mark.parametrize("ours", ["efficientnet_b0", "mobilenet_v3_large"])
def test_features_and_head_match_torchvisions_layers(ours):
    """timm's EfficientNet / MobileNetV3 have other keys; torchvision's ``features`` is our forward_features."""
    net = _randomised(_meta(ours))
    with torch.device("meta"):
        tv = getattr(torchvision.models, ours)()
    tv = tv.to_empty(device="cpu").eval()
    tv.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f = net.forward_features(x)
        torch.testing.assert_close(f, tv.features(x), rtol=1e-6, atol=1e-6)
        pooled = tv.avgpool(f).flatten(1)
        torch.testing.assert_close(net.forward_head(f, pre_logits=True), tv.classifier[:-1](pooled), rtol=1e-6,
                                   atol=1e-6)
    assert net.num_features == f.shape[1] == timm.create_model(TIMM_NAMES[ours], pretrained=False).num_features


@pytest.mark.parametrize("name", ALL)
def test_classifier_api_on_every_net(name):
    info = cnnzoo.model_info(name)
    net = _meta(name, num_classes=5).eval()
    keys = list(net.state_dict())
    x = torch.empty(2, info.in_chans, info.min_size, info.min_size, device="meta")
    f = net.forward_features(x)
    assert f.dim() == 4 and f.shape[1] == net.num_features
    assert net.forward_head(f).shape == (2, 5) and net(x).shape == (2, 5) and net.num_classes == 5
    assert net.forward_head(f, pre_logits=True).shape == (2, net.head_hidden_size)
    assert net.get_classifier() is net.get_submodule(net.classifier_name)
    net.reset_classifier(3)
    assert net(x).shape == (2, 3) and list(net.state_dict()) == keys  # same keys, new class count
    net.reset_classifier(0)
    assert net(x).shape == (2, net.head_hidden_size) and net.num_classes == 0
    assert isinstance(net.get_classifier(), nn.Identity)


def test_reset_classifier_keeps_the_nets_dtype_even_after_a_reset_to_zero():
    net = cnnzoo.create_model("lenet5").double()
    net.reset_classifier(0)
    net.reset_classifier(3)
    assert net.get_classifier().weight.dtype == torch.float64
    assert net(torch.randn(2, 1, 32, 32, dtype=torch.float64)).shape == (2, 3)


def test_googlenet_reset_covers_the_aux_heads():
    net = _meta("googlenet").train()
    x = torch.empty(2, 3, 64, 64, device="meta")
    net.reset_classifier(4)
    assert [t.shape for t in net(x)] == [(2, 4)] * 3
    net.reset_classifier(0)
    assert net(x).shape == (2, 1024) and net.aux1 is None  # no aux heads without classes


# ---- features_only --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ours", ["resnet18", "resnet18d", "mobilenet_v1"])
def test_feature_maps_equal_timms(ours):
    net, _ = _timm_twin(ours)
    with torch.device("meta"):
        theirs = timm.create_model(TIMM_NAMES[ours], features_only=True, out_indices=(1, 2, 4))
    theirs = theirs.to_empty(device="cpu").eval()
    sd = net.state_dict()
    feats = _meta(ours, features_only=True, out_indices=(1, 2, 4)).to_empty(device="cpu").eval()
    feats.load_state_dict(feats.convert_state_dict(sd), strict=True)
    theirs_sd = theirs.state_dict()
    full = _mobilenet_v1_to_timm(sd, timm.create_model("mobilenetv1_100", num_classes=10)) \
        if ours.startswith("mobilenet_v1") else sd
    theirs.load_state_dict({k: v for k, v in full.items() if k in theirs_sd}, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = feats(x), theirs(x)
    assert len(a) == len(b) == 3
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    assert feats.feature_info.channels() == theirs.feature_info.channels()


@pytest.mark.parametrize("name", ALL)
def test_features_only_on_every_net(name):
    """Meta device: the maps have feature_info's shapes, for all stages and for the first one alone (the
    layers after it are identities then, without weights)."""
    info = cnnzoo.model_info(name)
    x = torch.empty(2, info.in_chans, *info.input_size[1:], device="meta")
    feats = _meta(name, features_only=True).eval()
    assert [tuple(m.shape) for m in feats(x)] == [(2, s["num_chs"], *s["size"]) for s in feats.feature_info]
    first = _meta(name, features_only=True, out_indices=(0,)).eval()
    assert [tuple(m.shape) for m in first(x)] == [(2, first.feature_info[0]["num_chs"], *first.feature_info[0]["size"])]
    assert sum(p.numel() for p in first.parameters()) < sum(p.numel() for p in feats.parameters())


def test_features_only_keys_and_load_pretrained(tmp_path):
    full = cnnzoo.create_model("resnet18_cifar").eval()
    path = tmp_path / "full.pt"
    torch.save(full.state_dict(), path)
    feats = cnnzoo.create_model("resnet18_cifar", features_only=True)
    assert set(feats.state_dict()) == {k for k in full.state_dict() if not k.startswith("fc.")}
    assert not any(k.startswith("layer3.") for k in _meta("resnet18", features_only=True, out_indices=(0, 2))
                   .state_dict())  # truncated after layer2, as timm's
    assert load_pretrained(feats, path)["unexpected"] == []  # strict: the head's keys are the net's, dropped
    feats.eval()
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    for name in feats.feature_info.module_name():
        full.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: seen.setdefault(name, o))
    with torch.no_grad():
        full(x)
        maps = feats(x)
    for name, m in zip(feats.feature_info.module_name(), maps, strict=True):
        torch.testing.assert_close(m, seen[name], rtol=0, atol=0)


def test_features_only_with_pretrained_path(tmp_path):
    full = cnnzoo.create_model("resnet20_cifar").eval()
    torch.save(full.state_dict(), tmp_path / "w.pt")
    feats = cnnzoo.create_model("resnet20_cifar", features_only=True, pretrained=tmp_path / "w.pt").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[-1], full.forward_features(x), rtol=0, atol=0)


def test_features_only_loads_a_timm_checkpoint_for_mobilenet_v1(tmp_path):
    with torch.device("meta"):
        theirs = timm.create_model("mobilenetv1_100")
    theirs = _randomised(theirs)
    torch.save(theirs.state_dict(), tmp_path / "timm.pt")
    feats = _meta("mobilenet_v1", features_only=True).to_empty(device="cpu")
    load_pretrained(feats, tmp_path / "timm.pt")
    torch.testing.assert_close(feats.state_dict()["features.0.0.weight"], theirs.conv_stem.weight)


def test_feature_net_is_a_plain_module():
    feats = cnnzoo.create_model("lenet5_relu", features_only=True, out_indices=(-1,))
    assert feats.out_indices == (2,) and feats.feature_info.module_name() == ["features.act_c5"]
    twin = copy.deepcopy(feats)
    again = pickle.loads(pickle.dumps(feats))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        for other in (twin, again):
            torch.testing.assert_close(other(x)[0], feats(x)[0], rtol=0, atol=0)
    assert feats.train().training and all(m.training for m in feats.modules())
    assert not feats.eval().training and not any(m.training for m in feats.modules())
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 28x28"):
        feats(torch.randn(1, 1, 20, 20))


def test_out_indices_as_timm_reads_them():
    assert _meta("resnet50", features_only=True, out_indices=2).feature_info.module_name() == ["layer3", "layer4"]
    assert _meta("vgg11_bn_cifar", features_only=True, out_indices=(0, -1)).feature_info.reduction() == [1, 32]


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(features_only=True, out_indices=(0, 5)), r"outside the net's stages; resnet50 has 5 stages: use "
                                                   r"indices 0\.\.4"),
    (dict(features_only=True, out_indices=(-6,)), "outside the net's stages"),
    (dict(features_only=True, out_indices=0), "last 0 stages"),
    (dict(features_only=True, dropout=0.5), "builds no classifier: leave out dropout"),
    (dict(features_only=True, num_classes=10), "leave out num_classes"),
    (dict(out_indices=(1, 2)), "pass features_only=True"),
])
def test_bad_feature_options_raise_one_line(kwargs, match):
    with pytest.raises(CnnzooError, match=match) as e:
        _meta("resnet50", **kwargs)
    assert "\n" not in str(e.value)


def test_bad_reset_classifier_raises_one_line():
    net = _meta("mobilenet_v2")
    for bad in (-1, 2.5, True):
        with pytest.raises(CnnzooError, match="class count >= 0"):
            net.reset_classifier(bad)
    with pytest.raises(CnnzooError, match="global_pool='max' is not supported"):
        net.reset_classifier(10, global_pool="max")


def test_feature_info_needs_stage_modules():
    with pytest.raises(CnnzooError, match="does not list its stage modules"):
        feature_info(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(CnnzooError, match="does not list its stage modules"):
        FeatureNet(nn.Sequential(nn.Conv2d(3, 4, 3)), input_size=(3, 8, 8))


# ---- torchvision's create_feature_extractor -------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_create_feature_extractor_on_every_net(name):
    """torch.fx traces every net (train and eval graphs); the stage outputs are nodes named by module."""
    info = cnnzoo.model_info(name)
    net = _meta(name).eval()
    stages = feature_info(net, (info.in_chans, info.min_size, info.min_size))
    extractor = create_feature_extractor(net, return_nodes=stages.module_name())
    x = torch.empty(1, info.in_chans, info.min_size, info.min_size, device="meta")
    out = extractor(x)
    assert [tuple(t.shape[1:]) for t in out.values()] == [(s["num_chs"], *s["size"]) for s in stages]


# ---- CLI ------------------------------------------------------------------------------------------------


def test_cli_summary_features(capsys):
    assert main(["summary", "efficientnet_b0", "--features"]) == 0
    out = capsys.readouterr().out
    assert "index  module" in out and "features.7" in out and "320x7x7" in out


def test_cli_bad_model_for_features_exits_2(capsys, tmp_path):
    spec = tmp_path / "net.py"
    spec.write_text("import torch.nn as nn\nnet = nn.Sequential(nn.Conv2d(3, 4, 3))\n")
    assert main(["summary", f"{spec}:net", "--features"]) == 2
    assert "does not list its stage modules" in capsys.readouterr().err


# ---- the feature net runs its own modules ---------------------------------------------------------------


def _resnet18_feats(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return cnnzoo.create_model("resnet18", features_only=True, **kwargs)


def test_sync_batchnorm_conversion_is_what_runs():
    f = nn.SyncBatchNorm.convert_sync_batchnorm(_resnet18_feats()).eval()
    assert not any(type(m) is nn.BatchNorm2d for m in f.modules())
    ran = []
    f.bn1.register_forward_hook(lambda m, a, o: ran.append(type(m).__name__))
    f.double()
    maps = f(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert ran == ["SyncBatchNorm"] and all(m.dtype == torch.float64 for m in maps)


def test_frozen_batchnorm_keeps_its_statistics_in_training():
    timm_layers = pytest.importorskip("timm.layers")
    f = timm_layers.freeze_batch_norm_2d(_resnet18_feats())
    before = {k: v.clone() for k, v in f.state_dict().items()}
    f.train()
    f(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in f.modules())
    for k, v in f.state_dict().items():
        assert torch.equal(v, before[k]), k  # frozen: no running statistic moved


def test_assigned_module_is_what_runs():
    f = _resnet18_feats().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = f(x)
        f.layer4 = nn.Identity()
        after = f(x)
    assert after[-1].shape == (1, 256, 4, 4)
    torch.testing.assert_close(after[-1], maps[-2], rtol=0, atol=0)  # layer4 gone: the last map is layer3's


def test_torch_export_leaves_the_eager_extractor_working():
    f = _resnet18_feats().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = f(x)
        program = torch.export.export(f, (x,), strict=False)
        again = f(x)
        exported = program.module()(x)
    for a, b, c in zip(ref, again, exported, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("indices", "modules"), [
    ((3, 1), ["layer3", "layer1"]), ((4, 0), ["layer4", "relu"]), ((-1, -5), ["layer4", "relu"]),
    ((2, 2, 0), ["layer2", "layer2", "relu"]),
])
def test_out_indices_in_any_order_return_the_maps_feature_info_lists(indices, modules):
    f = _resnet18_feats(out_indices=indices).eval()
    full = _resnet18_feats().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps, all_maps = f(x), dict(zip(full.feature_info.module_name(), full(x), strict=True))
    assert f.feature_info.module_name() == modules
    assert [m.shape[1] for m in maps] == f.feature_info.channels()
    for name, m in zip(modules, maps, strict=True):
        torch.testing.assert_close(m, all_maps[name], rtol=0, atol=0)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("googlenet", {"transform_input": True}), ("nin_cifar", {}), ("lenet5", {}), ("mobilenet_v3_small", {}),
    ("efficientnet_b0", {}), ("resnet20_cifar", {}), ("alexnet_cifar", {}),
])
def test_feature_maps_equal_the_full_nets_stage_outputs(name, kwargs):
    """The feature net runs the same modules as the net's forward_features, transform of the input included."""
    torch.manual_seed(0)
    full = cnnzoo.create_model(name, **kwargs).eval()
    feats = cnnzoo.create_model(name, features_only=True, **kwargs).eval()
    feats.load_state_dict(feats.convert_state_dict(full.state_dict()), strict=True)
    info = cnnzoo.model_info(name)
    x = torch.randn(2, info.in_chans, 32, 32)
    seen = {}
    for n in feats.feature_info.module_name():
        full.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.setdefault(n, o.clone()))
    with torch.no_grad():
        full(x)
        maps = feats(x)
    for n, m in zip(feats.feature_info.module_name(), maps, strict=True):
        torch.testing.assert_close(m, seen[n], rtol=0, atol=0)
