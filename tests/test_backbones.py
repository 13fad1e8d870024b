"""The recipes of docs/backbones.md: a cnnzoo net as a torchvision detection backbone (features_only + FPN,
BackboneWithFPN, create_feature_extractor), and a Faster R-CNN on one that trains a step and predicts."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import cnnzoo

DOC = Path(__file__).resolve().parents[1] / "docs" / "backbones.md"


class CnnzooFPN(nn.Module):
    """Recipe 1 of docs/backbones.md, word for word (checked below)."""

    def __init__(self, name: str, out_indices=(1, 2, 3, 4), out_channels: int = 256, **kwargs) -> None:
        super().__init__()
        self.body = cnnzoo.create_model(name, features_only=True, out_indices=out_indices, **kwargs)
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(self.body(x))))


def test_the_doc_shows_the_tested_class():
    """The doc's class is this file's, docstrings aside."""
    def code(text: str) -> list[str]:
        start = text.index("class CnnzooFPN")
        end = text.index("enumerate(self.body(x))))", start)
        return [ln for ln in text[start:end].splitlines() if '"""' not in ln]

    assert code(DOC.read_text()) == code(Path(__file__).read_text())


def _images(n: int = 2, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[10.0, 8.0, 30.0, 60.0], [2.0, 2.0, 20.0, 20.0]]), "labels": torch.tensor([2, 1])}]


def test_faster_rcnn_on_a_cnnzoo_backbone_trains_a_step_and_predicts():
    torch.manual_seed(0)
    detector = FasterRCNN(CnnzooFPN("resnet18"), num_classes=3, min_size=64, max_size=64)
    opt = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.01)
    detector.train()
    losses = detector(_images(), _targets())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    before = detector.backbone.body.layer1[0].conv1.weight.detach().clone()
    opt.zero_grad()
    total.backward()
    opt.step()
    assert not torch.equal(before, detector.backbone.body.layer1[0].conv1.weight)  # the backbone learns
    detector.eval()
    with torch.no_grad():
        out = detector(_images())
    assert len(out) == 2 and all(set(o) == {"boxes", "labels", "scores"} for o in out)
    assert all(o["boxes"].shape[1:] == (4,) for o in out)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0", "vgg11_bn_cifar"])
def test_features_only_fpn_on_other_families(name):
    backbone = CnnzooFPN(name, out_indices=(-3, -2, -1), out_channels=32).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 64))
    assert list(maps) == ["0", "1", "2", "pool"] and all(m.shape[1] == 32 for m in maps.values())
    reductions = backbone.body.feature_info.reduction()
    assert [m.shape[-1] for m in list(maps.values())[:3]] == [64 // r for r in reductions]


def test_backbone_with_fpn_from_feature_info_module_names():
    net = cnnzoo.create_model("resnet18")
    stages = cnnzoo.feature_info(net).select([1, 2, 3, 4])
    backbone = BackboneWithFPN(net, return_layers={m: str(i) for i, m in enumerate(stages.module_name())},
                               in_channels_list=stages.channels(), out_channels=32)
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[-3:]) for m in maps.values()] == [(32, 16, 16), (32, 8, 8), (32, 4, 4), (32, 2, 2),
                                                            (32, 1, 1)]
    detector = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64).train()
    assert torch.isfinite(sum(detector(_images(), _targets()).values()))


def test_create_feature_extractor_with_an_fpn():
    net = cnnzoo.create_model("efficientnet_b0")
    stages = cnnzoo.feature_info(net).select([1, 2, 3, 4])
    body = create_feature_extractor(net, return_nodes={m: str(i) for i, m in enumerate(stages.module_name())})
    fpn = FeaturePyramidNetwork(stages.channels(), 32)
    with torch.no_grad():
        maps = fpn(body.eval()(torch.randn(1, 3, 64, 64)))
    assert list(maps) == ["0", "1", "2", "3"] and [m.shape[-1] for m in maps.values()] == [16, 8, 4, 2]
