"""Check that a cnnzoo net is the same function as a torchvision/timm net: load theirs into ours."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def assert_same_function(
    ours: nn.Module,
    theirs: nn.Module,
    input_size: tuple[int, int, int],
    key_map: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    batch: int = 2,
    tol: float = 1e-9,
    seed: int = 0,
) -> float:
    """Randomise ``theirs`` (incl. BN statistics), load its state_dict strictly into ``ours`` and compare
    eval-mode float64 outputs on a fixed input. Returns the max abs difference."""
    torch.manual_seed(seed)
    theirs = theirs.double().eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong BN placement shows up
        for m in theirs.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
    sd = theirs.state_dict()
    if key_map is not None:
        sd = key_map(sd)
    ours = ours.double().eval()
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(batch, *input_size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff < tol, f"max abs difference {diff:.3e} >= {tol}"
    assert b.abs().max().item() > 1e-6  # a real, non-degenerate output
    return diff
