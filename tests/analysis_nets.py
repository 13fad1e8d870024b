"""A user-defined net for the analysis tests, with receptive fields worked out by hand.

It has what plain-chain RF calculators get wrong: a residual branch around a dilated conv, two branches
whose fields are centred differently (so the sum's field is wider than either), a squeeze-and-excitation
gate (global context), and Python control flow on the input size (which ``torch.fx`` cannot trace).
Also loaded by the CLI tests as ``tests/analysis_nets.py:res_dil_net``.

Hand computation (pixel centres 0..W-1; each map: first/last input pixel of unit 0, jump j):

    layer                         lo   hi   r   j  start
    stem   conv 3x3 p1            -1    1   3   1    0
    down   conv 3x3/2 p1          -2    2   5   2    0
    dil    conv 3x3 d2 p2         -6    6  13   2    0    lo - 2*2, hi + (5-1-2)*2
    conv   conv 3x3 p1            -8    8  17   2    0
    + identity (r 5)              -8    8  17   2    0    the residual sum: hull of the two paths
    pool   maxpool 2x2/2          -8   10  19   4    1
    shift  pad (0, 2) + conv 3x3  -8   18  27   4    5    unpadded conv: its field is off-centre
    same   conv 3x3 p1           -12   14  27   4    1
    shift + same                 -12   18  31   4    3    wider than either branch (27)
    se     x * gate(mean(x))      unchanged, flagged global
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: (name, r, jump, start) of the conv/pool layers in order, then the net's RF
EXPECTED_LAYERS = [("stem", 3, 1, 0), ("down", 5, 2, 0), ("block.dil", 13, 2, 0), ("block.conv", 17, 2, 0),
                   ("pool", 19, 4, 1), ("shift", 27, 4, 5), ("same", 27, 4, 1)]
EXPECTED_RF = (31, 4, 3)


class ResidualDilated(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.dil = nn.Conv2d(ch, ch, 3, padding=2, dilation=2)
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(F.relu(self.dil(x)))


class ResDilNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block = ResidualDilated(2 * width)
        self.pool = nn.MaxPool2d(2)
        self.shift = nn.Conv2d(2 * width, 2 * width, 3)  # no padding: fed a right/bottom-padded map
        self.same = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.se_fc = nn.Linear(2 * width, 2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 16:  # control flow on the size: small images are zero-padded
            x = F.pad(x, (2, 2, 2, 2))
        x = F.relu(self.down(F.relu(self.stem(x))))
        x = self.pool(F.relu(self.block(x)))
        x = self.shift(F.pad(x, (0, 2, 0, 2))) + self.same(x)
        gate = torch.sigmoid(self.se_fc(x.mean((2, 3))))  # squeeze-and-excitation on a flat vector
        x = x * gate[:, :, None, None]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def res_dil_net(num_classes: int = 10, in_chans: int = 3) -> ResDilNet:
    """Factory for ``path/to/file.py:factory`` loading."""
    return ResDilNet(num_classes=num_classes, in_chans=in_chans)
