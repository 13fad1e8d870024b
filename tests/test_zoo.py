"""Zoo-wide contract, checked for every registered model (each family file tests its own details).

- registered ``params`` equals the count of the built model at its defaults;
- registered ``macs`` equals torch.utils.flop_counter's total / 2 at the default input size (meta device,
  so B7 at 600x600 costs no compute);
- the model runs at its ``min_size`` and the input check rejects ``min_size - 1`` with a one-line error.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo

ALL = cnnzoo.list_models()


def test_zoo_has_every_family():
    families = {cnnzoo.model_info(n).family for n in ALL}
    assert len(ALL) >= 45, ALL
    for fam in ("lenet", "alexnet", "vgg", "nin", "googlenet", "resnet", "mobilenet_v1", "mobilenet_v2",
                "mobilenet_v3", "efficientnet"):
        assert fam in families, (fam, families)


@pytest.mark.parametrize("name", ALL)
def test_factory_is_a_plain_def_of_its_name(name):
    """``grep "def vgg16"`` finds every factory: one public ``def`` per variant, no generated functions."""
    fn = cnnzoo.model_info(name).fn
    module = inspect.getmodule(fn)
    assert fn.__name__ == fn.__qualname__ == name and getattr(module, name) is fn
    assert f"\ndef {name}(" in inspect.getsource(module)


@pytest.mark.parametrize("name", ALL)
def test_registered_params_and_macs(name):
    info = cnnzoo.model_info(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name).eval()
        assert sum(p.numel() for p in model.parameters()) == info.params
        with FlopCounterMode(display=False) as fc:
            model(torch.empty(1, *info.input_size))
    assert fc.get_total_flops() == 2 * info.macs


@pytest.mark.parametrize("name", ALL)
def test_runs_at_min_size_and_rejects_smaller(name):
    info = cnnzoo.model_info(name)
    # Built on the meta device and given cheap random weights: the paper init of 130M-parameter VGGs
    # would dominate the test, and this test is about shapes and the input check, not the init.
    with torch.device("meta"):
        model = cnnzoo.create_model(name, num_classes=5).eval()
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.reset_running_stats()
    c, s = info.in_chans, info.min_size
    with torch.no_grad():
        out = model(torch.randn(2, c, s, s))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    with pytest.raises(cnnzoo.InputSizeError, match=f"minimum is {s}x{s}"):
        model(torch.randn(1, c, s - 1, s - 1))
