"""Effective receptive field (Luo et al. 2016): a centred blob inside the theoretical RF, and its PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

import cnnzoo
from analysis_nets import ResDilNet
from cnnzoo.analysis import effective_receptive_field
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return cnnzoo.create_model("resnet20_cifar")


def test_erf_is_a_centred_blob_inside_the_rf(resnet20):
    e = effective_receptive_field(resnet20, (3, 96, 96), n=8)
    assert e.grid.shape == (96, 96) and e.layer == "layer3" and e.unit == (11, 11)
    assert e.rf.r == (81, 81) and e.centre == (44.0, 44.0)  # start 0, jump 4: unit 11 is centred at 44
    (r0, r1), (c0, c1) = e.box
    assert (r0, r1, c0, c1) == (4, 84, 4, 84)
    outside = np.ones_like(e.grid, dtype=bool)
    outside[r0:r1 + 1, c0:c1 + 1] = False
    assert np.count_nonzero(e.grid[outside]) == 0  # no path reaches past the theoretical field
    assert np.count_nonzero(e.grid[~outside]) == 81 * 81  # and every pixel inside it is reached
    py, px = e.peak
    assert abs(py - 44) <= 4 and abs(px - 44) <= 4  # the peak near the centre
    ys, xs = np.mgrid[:96, :96]
    mass = e.grid / e.grid.sum()
    assert abs((mass * ys).sum() - 44) < 2 and abs((mass * xs).sum() - 44) < 2  # centre of mass
    # concentrated: half of the mass in a centred square of a quarter of the RF's area, and 90 % well inside it
    assert e.mass_within(41) > 0.5 and e.side(0.9) < 81 and e.side(0.5) < e.side(0.9)
    d = json.loads(json.dumps(e.to_dict()))
    assert d["rf"]["r"] == [81, 81] and d["side_90"] == e.side(0.9)


def test_erf_png_shows_the_blob(tmp_path, capsys):
    png = tmp_path / "sub" / "erf.png"
    assert main(["erf", "resnet20_cifar", "--input-size", "3", "96", "96", "--n", "4", "--out", str(png),
                 "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["png"] == str(png) and d["rf_box"] == [[4, 84], [4, 84]] and d["n"] == 4
    img = imread(png)
    assert img.shape == (520, 600, 4)  # 6 x 5.2 in at 100 dpi
    # inferno's brightest colours (yellow-white) are the blob: away from the colour bar (right quarter)
    # they sit in the middle of the heat map, the ERF's centre (44 of 96 px)
    rgb = img[:, :450, :3]
    hot = (rgb[..., 0] > 0.85) & (rgb[..., 1] > 0.6) & (rgb[..., 2] < 0.5)
    ys, xs = np.nonzero(hot)
    assert len(ys) > 20
    assert 0.25 < ys.mean() / 520 < 0.65 and 0.2 < xs.mean() / 450 < 0.7


def test_erf_with_global_context_leaks_outside(tmp_path):
    """With real weights an SE gate sees the whole image: a little mass lies outside the conv-path RF."""
    torch.manual_seed(0)
    e = effective_receptive_field(ResDilNet(), (3, 64, 64), n=4)
    assert e.layer == "" and e.rf.r == (31, 31)  # found without a module: made in forward()
    assert 0.9 < e.mass_in_rf < 1.0


def test_erf_on_data_and_checkpoint(tmp_path, data_dir, resnet20):
    from cnnzoo.training.checkpoint import write_checkpoint

    # images of a data set: normalised with the set's mean/std, at the images' own size
    e = effective_receptive_field("lenet5_relu", data="mnist", n=8)
    assert e.source == "mnist" and e.grid.shape == (28, 28) and e.input_size == (1, 28, 28)
    assert e.grid.sum() > 0
    # a `cnnzoo train` checkpoint rebuilds its own architecture and size; the same weights give the same map
    meta = {"model": "resnet20_cifar", "num_classes": 10, "in_chans": 3, "img_size": 32,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    write_checkpoint(tmp_path / "run", "best", resnet20.state_dict(), meta)
    from_ckpt = effective_receptive_field("resnet20_cifar", checkpoint=tmp_path / "run", n=4)
    direct = effective_receptive_field(resnet20, (3, 32, 32), n=4)
    assert from_ckpt.input_size == (3, 32, 32)
    np.testing.assert_allclose(from_ckpt.grid, direct.grid, rtol=1e-5, atol=1e-9)
    # a plain torchvision-style state_dict file goes into the named model
    torch.save(resnet20.state_dict(), tmp_path / "w.pth")
    from_pth = effective_receptive_field("resnet20_cifar", (3, 32, 32), checkpoint=tmp_path / "w.pth", n=4)
    np.testing.assert_allclose(from_pth.grid, direct.grid, rtol=1e-5, atol=1e-9)
    with pytest.raises(CnnzooError, match="resnet20_cifar checkpoint, not resnet32_cifar"):
        effective_receptive_field("resnet32_cifar", checkpoint=tmp_path / "run", n=1)


def test_erf_errors(tmp_path, capsys):
    assert main(["erf", "resnet20_cifar", "--checkpoint", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "e.png")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(CnnzooError, match="meta"):
        effective_receptive_field(cnnzoo.analysis.resolve_model("resnet20_cifar", device="meta"), n=1)
    with pytest.raises(CnnzooError, match="channels"):
        effective_receptive_field("resnet20_cifar", data=torch.zeros(2, 1, 32, 32, dtype=torch.uint8), n=1)
