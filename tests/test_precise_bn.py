"""PreciseBN: running statistics become the exact average of batch statistics over a fixed subset."""

from __future__ import annotations

import torch
from torch import nn

from cnnzoo.training.precise_bn import recalibrate_bn, recalibrated_layers


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(2))


def test_statistics_are_the_average_of_the_batches() -> None:
    net = _net()
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    prep = lambda x: x.float() / 255  # noqa: E731
    net(prep(images[:2]))  # materialise the lazy layer
    net.eval()
    used = recalibrate_bn(net, images, prep, max_images=32, batch_size=16, seed=3)
    assert used == 32
    g = torch.Generator().manual_seed(3 * 1_000_003 + 7919)
    idx = torch.randperm(40, generator=g)[:32]
    feats = [net[0](prep(images[idx[i:i + 16]])) for i in (0, 16)]
    bn = net[1]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and not net.training and not bn.training  # everything restored
    assert int(bn.num_batches_tracked) == 2


def test_nothing_to_do_and_frozen_layers_kept() -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    assert recalibrate_bn(plain, x, lambda t: t.float(), 64, 8) == 0
    net = _net()
    net(x.float()[:, :, :, :].repeat(1, 1, 2, 2))
    net.train()
    net[1].eval()  # frozen, as freeze_bn_stats leaves a pretrained backbone
    before = net[1].running_mean.clone()
    assert recalibrated_layers(net) == []
    assert recalibrate_bn(net, x.repeat(1, 1, 2, 2), lambda t: t.float(), 64, 8) == 0
    torch.testing.assert_close(net[1].running_mean, before)
    assert net.training and not net[1].training


def test_dropout_and_the_random_stream_are_untouched() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 2))
    net.train()
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    recalibrate_bn(net, x, lambda t: t.float() / 255, 16, 8)
    assert torch.equal(torch.rand(3), expected) and net.training and net[2].training


def test_folder_recipes_recompute_bn_statistics_by_default() -> None:
    """Users' own folders give short runs whose BN statistics lag the weights: PreciseBN unless turned off."""
    from cnnzoo.training.config import resolve

    assert resolve({"dataset": "folder:/data/pets"}).precise_bn == 512
    assert resolve({"dataset": "folder:/data/pets", "pretrained": "imagenet"}).precise_bn == 512
    assert resolve({"dataset": "folder:/data/pets", "precise_bn": 0}).precise_bn == 0
