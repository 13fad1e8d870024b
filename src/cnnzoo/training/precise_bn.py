"""BatchNorm statistics recomputed before evaluation ("PreciseBN", Wu & Johnson 2021, "Rethinking 'Batch'
in BatchNorm", section 3).

A BatchNorm layer's running mean and variance are an exponential average (momentum 0.1) of batch statistics
taken while the weights move. In a long run the weights move slowly at the end and the average is accurate;
in a run of one or two epochs at a high learning rate it lags far behind the weights, and the eval-mode
network is much worse than the train-mode one (a net can score chance on held-out data with 70 % training
accuracy). Recomputing the statistics as the exact average over a fixed set of training images, with the
weights as they are now, removes that lag. Only buffers change; weights, gradients, the optimizer and the
random streams of training are untouched, so a run's trajectory and its exact resume do not depend on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def recalibrated_layers(net: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers :func:`recalibrate_bn` updates: those that track running statistics and are
    not frozen (a frozen pretrained backbone keeps its ImageNet statistics)."""
    return [m for m in net.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats
            and (m.training or not net.training)]


@torch.no_grad()
def recalibrate_bn(net: nn.Module, images: Tensor, prep: Callable[[Tensor], Tensor], max_images: int,
                   batch_size: int, seed: int = 0,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> int:
    """Set every updatable BatchNorm's running mean/var to the average over up to ``max_images`` training
    images (a fixed seeded subset, no augmentation), with only those layers in train mode and no gradient, and
    without touching any random stream (a resumed run stays bit-exact). Returns the number of
    images used (0 when the net has no such layer or ``max_images`` is 0)."""
    layers = recalibrated_layers(net)
    if not layers or max_images <= 0 or images.shape[0] == 0:
        return 0
    n = min(int(max_images), images.shape[0])
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919)  # its own stream: training's is untouched
    idx = torch.randperm(images.shape[0], generator=g)[:n].to(images.device)
    saved = [(m.momentum, m.training) for m in layers]
    was_training = net.training
    net.eval()  # dropout, drop-path and aux heads off: they would draw from training's random stream
    for m in layers:
        m.train()
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    bs = max(1, min(int(batch_size), n))
    devices = [images.device] if images.is_cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            for i in range(0, n - n % bs or n, bs):  # whole batches only: a tiny last batch skews the variance
                with autocast():
                    net(prep(images.index_select(0, idx[i:i + bs])))
    finally:
        net.train(was_training)
        for m, (momentum, training) in zip(layers, saved, strict=True):
            m.momentum = momentum
            m.train(training and was_training)
    return n - n % bs or n
