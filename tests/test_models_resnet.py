"""ResNet family (src/cnnzoo/models/resnet.py): the same functions as torchvision's and timm's nets.

Equivalence runs at 32x32 (the smallest input the nets' total stride allows) in float64; each net is
built once. Default-size forwards run in float32 under FlopCounterMode, so they check the registered MACs
at the same time.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision.models as tvm
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.resnet import Bottleneck
from equivalence import assert_same_function

FAMILY = [n for n in cnnzoo.list_models("*res*") if not n.endswith("_cifar")]

# Published parameter counts: torchvision's weights metadata (checked below too) and timm.
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904, "wide_resnet50_2": 68_883_240,
    "resnet50_v1": 25_557_032,  # the stride moves, the weights do not
    "resnet50c": 25_576_264, "resnet50d": 25_576_264, "resnet18d": 11_708_744, "resnet34d": 21_816_904,
    "resnet101d": 44_568_392,
}
TV_WEIGHTS = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights", "resnet152": "ResNet152_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights", "wide_resnet50_2": "Wide_ResNet50_2_Weights",
}
TIMM = ["resnet18d", "resnet34d", "resnet50c", "resnet50d", "resnet101d"]


def test_family_is_complete():
    assert sorted(FAMILY) == sorted(PUBLISHED_PARAMS) == sorted([*TV_WEIGHTS, *TIMM, "resnet50_v1"])
    assert cnnzoo.model_info("resnet50b").name == "resnet50"  # ResNet-B is torchvision's striding


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_params_equal_published(name):
    info = cnnzoo.model_info(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == info.params == PUBLISHED_PARAMS[name]
    if name in TV_WEIGHTS:  # torchvision's metadata: params, and GFLOPS (which are GMACs) to 3 decimals
        meta = getattr(tvm, TV_WEIGHTS[name]).IMAGENET1K_V1.meta
        assert meta["num_params"] == info.params
        assert round(info.macs / 1e9, 3) == meta["_ops"]


def forward_at_default_size(name: str, model: torch.nn.Module) -> None:
    """One float32 forward at the registered input size; the registered MACs are counted on the way."""
    info = cnnzoo.model_info(name)
    model = model.float().eval()
    torch.manual_seed(0)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = model(torch.randn(1, *info.input_size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    assert fc.get_total_flops() == 2 * info.macs


# Each net is built once: equivalence in float64 at 32x32, then the default-size forward in float32.
@pytest.mark.parametrize("name", list(TV_WEIGHTS))
def test_same_function_as_torchvision(name):
    ours = cnnzoo.create_model(name)
    assert assert_same_function(ours, getattr(tvm, name)(), (3, 32, 32)) < 1e-9
    forward_at_default_size(name, ours)


@pytest.mark.parametrize("name", TIMM)
def test_same_function_as_timm(name):
    ours = cnnzoo.create_model(name)
    assert assert_same_function(ours, timm.create_model(name), (3, 32, 32)) < 1e-9
    forward_at_default_size(name, ours)


def test_resnet_d_avg_pool_on_odd_maps_matches_timm():
    # 45 -> 23 -> 12 -> 6 -> 3 -> 2: odd maps enter the 2x2 avg-pool shortcut (ceil_mode, no padded zeros)
    ours, theirs = cnnzoo.create_model("resnet18d"), timm.create_model("resnet18d")
    assert assert_same_function(ours, theirs, (3, 45, 45)) < 1e-9


def test_resnet50_v1_is_torchvision_with_the_stride_on_the_first_1x1():
    ref = tvm.resnet50()
    for stage in (ref.layer2, ref.layer3, ref.layer4):  # move the stride as the 2016 paper has it
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    ours = cnnzoo.create_model("resnet50_v1")
    assert ours.layer2[0].conv1.stride == (2, 2) and ours.layer2[0].conv2.stride == (1, 1)
    assert assert_same_function(ours, ref, (3, 32, 32)) < 1e-9
    forward_at_default_size("resnet50_v1", ours)
    # The 1x1 now runs on a quarter of the positions: cheaper than ResNet-B
    assert cnnzoo.model_info("resnet50_v1").macs == 3_857_973_248 < cnnzoo.model_info("resnet50").macs


def test_dilated_resnet50_matches_torchvision():
    flags = [False, True, True]  # output stride 8, as for segmentation backbones
    ours = cnnzoo.create_model("resnet50", replace_stride_with_dilation=flags)
    theirs = tvm.resnet50(replace_stride_with_dilation=flags)
    assert ours.layer4[1].conv2.dilation == (4, 4) and ours.layer4[0].conv2.dilation == (2, 2)
    assert assert_same_function(ours, theirs, (3, 32, 32)) < 1e-9


@pytest.mark.parametrize("name", ["resnet18", "resnet50d"])
def test_grey_input_ten_classes_and_min_size(name):
    model = cnnzoo.create_model(name, num_classes=10, in_chans=1).eval()
    assert cnnzoo.model_info(name).min_size == 32  # total stride; the net itself runs even on 1x1
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(cnnzoo.InputSizeError, match="minimum is 32x32"):
        model(torch.randn(2, 1, 31, 31))


def test_zero_init_residual():
    def last_bn_weights(model):
        return torch.cat([b.bn3.weight for b in model.modules() if isinstance(b, Bottleneck)])

    assert (last_bn_weights(cnnzoo.create_model("resnet50")) == 1).all()  # torchvision's default: off
    assert (last_bn_weights(cnnzoo.create_model("resnet50", zero_init_residual=True)) == 0).all()
    assert (last_bn_weights(cnnzoo.create_model("resnet50d")) == 0).all()  # Bag of Tricks' "zero gamma"
    r18 = cnnzoo.create_model("resnet18", zero_init_residual=True)
    assert all((b.bn2.weight == 0).all() for b in r18.layer1)


def test_stochastic_depth_grows_linearly_and_is_identity_at_eval():
    plain = cnnzoo.create_model("resnet18", num_classes=10)
    model = cnnzoo.create_model("resnet18", num_classes=10, drop_path_rate=0.1)
    rates = [b.drop_path.p if hasattr(b.drop_path, "p") else 0.0
             for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
    assert rates == pytest.approx([0.1 * i / 7 for i in range(8)])
    model.load_state_dict(plain.state_dict())  # stochastic depth adds no parameters
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))


def test_load_pretrained_torchvision_and_timm_checkpoints(tmp_path):
    torch.manual_seed(0)
    tv_sd = tvm.resnet18().state_dict()
    torch.save(tv_sd, tmp_path / "resnet18.pth")
    save_file(tv_sd, str(tmp_path / "resnet18.safetensors"))
    for file in ("resnet18.pth", "resnet18.safetensors"):
        model = cnnzoo.create_model("resnet18", num_classes=10)
        report = cnnzoo.load_pretrained(model, tmp_path / file)
        assert sorted(report["reset"]) == ["fc.bias", "fc.weight"]
        assert model.fc.weight.shape == (10, 512)
        ours = model.state_dict()
        assert all(torch.equal(ours[k], v) for k, v in tv_sd.items() if not k.startswith("fc."))

    timm_sd = {k: v.contiguous() for k, v in timm.create_model("resnet50d").state_dict().items()}
    save_file(timm_sd, str(tmp_path / "resnet50d.safetensors"))
    model = cnnzoo.create_model("resnet50d", num_classes=10)
    report = cnnzoo.load_pretrained(model, tmp_path / "resnet50d.safetensors")
    assert sorted(report["reset"]) == ["fc.bias", "fc.weight"] and not report["missing"]
    assert torch.equal(model.conv1[3].weight, timm_sd["conv1.3.weight"])
    assert torch.equal(model.layer2[0].downsample[1].weight, timm_sd["layer2.0.downsample.1.weight"])
