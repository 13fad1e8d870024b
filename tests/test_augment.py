"""``random_resized_crop``: torchvision's RandomResizedCrop as one batched tensor op, checked on values."""

from __future__ import annotations

import math

import pytest
import torch

from cnnzoo.data.augment import random_resized_crop, sample_crop_boxes


def test_boxes_respect_scale_and_ratio_and_fit_the_image():
    g = torch.Generator().manual_seed(0)
    h, w = 100, 100  # every draw fits: the longest side is at most sqrt(0.6 * 4 / 3) * 100 = 89
    b = sample_crop_boxes(4000, h, w, scale=(0.2, 0.6), ratio=(0.75, 4 / 3), generator=g)
    cw, ch = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert torch.equal(b, b.round()) and (b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    frac = cw * ch / (h * w)
    # whole-pixel rounding moves the area by at most one row and one column
    slack = (cw + ch + 1) / (h * w)
    assert (frac >= 0.2 - slack).all() and (frac <= 0.6 + slack).all()
    aspect = cw / ch
    assert (aspect >= 0.75 * (1 - 2 / ch)).all() and (aspect <= 4 / 3 * (1 + 2 / ch)).all()
    # area fraction is uniform over the range: mean near the middle, both ends reached
    assert frac.mean().item() == pytest.approx(0.4, abs=0.01)
    assert frac.min() < 0.22 and frac.max() > 0.58
    # log-aspect uniform over [log 3/4, log 4/3]: symmetric about 0
    assert torch.log(aspect).mean().item() == pytest.approx(0.0, abs=0.03)
    # offsets spread over every position that fits: left edges reach 0 and the far side
    assert b[:, 0].min() == 0 and (b[:, 2] == w).any()


def test_fallback_is_the_centred_whole_image_cut_to_the_ratio():
    # a 10x100 strip cannot hold a square crop of >= 50% of its area in any draw
    b = sample_crop_boxes(3, 10, 100, scale=(0.5, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert b.tolist() == [[45.0, 0.0, 55.0, 10.0]] * 3


def test_identity_when_the_crop_is_the_whole_image():
    x = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    out = random_resized_crop(x, 40, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and torch.equal(out, x.float())


def test_a_given_box_is_copied_exactly_and_flip_mirrors_it():
    x = torch.randn(2, 3, 32, 48)
    boxes = torch.tensor([[5.0, 3.0, 21.0, 19.0], [0.0, 10.0, 16.0, 26.0]])  # 16x16 boxes
    out = random_resized_crop(x, 16, boxes=boxes, flip=torch.tensor([False, True]))
    assert torch.equal(out[0], x[0, :, 3:19, 5:21])
    assert torch.equal(out[1], x[1, :, 10:26, 0:16].flip(2))


def test_resizing_is_bilinear_up_and_box_averaged_down():
    ramp = torch.arange(8, dtype=torch.float32).expand(1, 1, 8, 8)  # value = column index
    up = random_resized_crop(ramp, 16, boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    # output pixel centre j maps to input column (j + 0.5) / 2 - 0.5: linear in j, clamped at the edges
    want = ((torch.arange(16) + 0.5) / 2 - 0.5).clamp(0, 7)
    torch.testing.assert_close(up[0, 0, 5], want, rtol=0, atol=1e-6)
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float().expand(1, 1, 8, 8)
    down = random_resized_crop(checker, 4, boxes=torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    assert torch.equal(down, torch.full((1, 1, 4, 4), 0.5))  # each output pixel averages its 2x2 block


def test_deterministic_under_a_seed_and_different_across_seeds():
    x = torch.randn(6, 3, 64, 64)

    def run(seed: int) -> torch.Tensor:
        return random_resized_crop(x, 32, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    assert run(3).shape == (6, 3, 32, 32)
    assert random_resized_crop(x, (24, 40)).shape == (6, 3, 24, 40)


def test_matches_torchvision_resized_crop_when_upscaling():
    import torchvision.transforms.v2.functional as TF

    x = torch.randn(2, 3, 50, 70)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [3.0, 7.0, 27.0, 23.0]])  # 20x20 and 24 wide x 16 high
    ours = random_resized_crop(x, 30, boxes=boxes)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        theirs = TF.resized_crop(x[i], y0, x0, y1 - y0, x1 - x0, [30, 30], antialias=False)
        # the outermost output pixels sample just outside the box: torchvision repeats the crop's edge,
        # roi_align reads the image's real neighbours there; everywhere else the two are the same
        torch.testing.assert_close(ours[i, :, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1], rtol=0, atol=1e-5)


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="scale and ratio"):
        sample_crop_boxes(1, 8, 8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="scale and ratio"):
        sample_crop_boxes(1, 8, 8, ratio=(0.0, math.inf))
