"""Time-to-accuracy techniques: test-time augmentation, the weight average (--ema), alternating flips; each
exact by hand, each wired into train / eval / compare's leaderboard, and a run using all of them resumes
bit for bit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnzoo.cli import main
from cnnzoo.comparing import report
from cnnzoo.data.batches import BatchPrep, alternating_flips, epoch_plan
from cnnzoo.training import checkpoint as ck
from cnnzoo.training import engine, evaluate, load_checkpoint, read_meta, train
from cnnzoo.training.ema import WeightEma, ema_decay
from cnnzoo.training.loop import evaluate_tensors
from cnnzoo.training.tta import effective_tta, tta_logits
from test_train import QUIET, SmallNet


class FlatLinear(nn.Module):
    """Logits linear in the pixels, with weights that differ left to right: a mirror changes them."""

    def __init__(self, h: int = 5, w: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(h * w, classes, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(classes * h * w, dtype=torch.float32).reshape(classes, -1).sin())

    def forward(self, x):
        return self.fc(x.flatten(1))


# ------------------------------------------------------------------------------------------------ TTA
def _reflect(i: int, n: int) -> int:
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def _shifted(x: torch.Tensor, d: int) -> torch.Tensor:
    """x moved by d px in both directions, reflect-padded, by explicit indexing."""
    h, w = x.shape[-2:]
    rows = torch.tensor([_reflect(i + d, h) for i in range(h)])
    cols = torch.tensor([_reflect(j + d, w) for j in range(w)])
    return x[..., rows, :][..., cols]


def test_tta_is_the_exact_mean_of_the_views():
    net = FlatLinear()
    x = torch.randn(4, 1, 5, 6, generator=torch.Generator().manual_seed(0))
    f = net
    assert not torch.allclose(f(x), f(x.flip(-1)))  # the views really differ
    mirror = 0.5 * f(x) + 0.5 * f(x.flip(-1))
    torch.testing.assert_close(tta_logits(net, x, "flip"), mirror, rtol=0, atol=1e-6)
    a, b = _shifted(x, -1), _shifted(x, 1)  # airbench: up-left and down-right by 1 px
    both = 0.5 * mirror + 0.25 * (0.5 * f(a) + 0.5 * f(a.flip(-1))) + 0.25 * (0.5 * f(b) + 0.5 * f(b.flip(-1)))
    torch.testing.assert_close(tta_logits(net, x, "flip-translate"), both, rtol=0, atol=1e-6)
    moved = 0.5 * f(x) + 0.25 * (f(a) + f(b))
    torch.testing.assert_close(tta_logits(net, x, "translate"), moved, rtol=0, atol=1e-6)
    torch.testing.assert_close(tta_logits(net, x, "off"), f(x))


def test_flips_only_where_the_run_flips():
    assert effective_tta("flip", True) == "flip" and effective_tta("flip-translate", True) == "flip-translate"
    assert effective_tta("flip", False) == "off" and effective_tta("flip-translate", False) == "translate"
    assert effective_tta("off", True) == "off"


def test_evaluation_counts_plain_and_tta_hits_side_by_side():
    from cnnzoo.data import ImageSet

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 1, 5, 6), dtype=torch.uint8, generator=g)
    net = FlatLinear()
    data = ImageSet(images=images, labels=torch.zeros(40, dtype=torch.long), classes=["a", "b", "c"],
                    mean=(0.5,), std=(0.25,), name="t", split="test")
    prep = BatchPrep(data, 6, 1, torch.device("cpu"), 0, False, False, (0.5,), (0.25,))
    x = prep(images)
    y = tta_logits(net, x, "flip").argmax(1)  # labels the TTA gets all right, the plain pass not all
    plain_hits = int((net(x).argmax(1) == y).sum())
    assert plain_hits < 40
    r = evaluate_tensors(net, images, y, prep, 16, 3, tta="flip")
    assert int(r["top1"]) == plain_hits and int(r["top1_tta"]) == 40
    assert "top1_tta" not in evaluate_tensors(net, images, y, prep, 16, 3)


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_is_the_hand_computed_average_with_decay_warm_up():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = WeightEma(net, decay=0.5)
    assert [ema_decay(0.5, k) for k in (0, 1, 2, 20)] == [0.1, 2 / 11, 0.25, 0.5]
    for k, w in enumerate((1.0, 2.0, 4.0)):
        with torch.no_grad():
            net.weight.fill_(w)
        ema.update(net, k)
    # 0 -> 0.1*0 + 0.9*1 = 0.9 -> (2/11)*0.9 + (9/11)*2 = 1.8 -> 0.25*1.8 + 0.75*4 = 3.45
    assert ema.avg["weight"].item() == pytest.approx(3.45, abs=1e-6)
    bn = nn.BatchNorm1d(2)
    e2 = WeightEma(bn, 0.9)
    assert set(e2.avg) == {"weight", "bias"}  # parameters only: BN statistics are recomputed for the average
    with torch.no_grad():
        bn.weight.fill_(3.0)
        bn.running_mean.fill_(5.0)
    e2.update(bn, 100)
    copy = e2.copy_to(nn.BatchNorm1d(2), bn)
    assert copy.weight.tolist() == pytest.approx([1.2, 1.2])  # 0.9 * 1 + 0.1 * 3
    assert copy.running_mean.tolist() == [5.0, 5.0]  # buffers: the trained net's


def test_train_updates_the_average_every_step(tmp_path, monkeypatch):
    seen: list[tuple[int, dict]] = []
    orig = WeightEma.update

    def spy(self, net, k):
        seen.append((k, {n: v.detach().clone() for n, v in net.named_parameters()}))
        orig(self, net, k)

    monkeypatch.setattr(WeightEma, "update", spy)
    torch.manual_seed(0)
    net = SmallNet()
    start = {n: v.detach().clone() for n, v in net.named_parameters()}
    r = train(net, "digits", epochs=2, batch_size=64, train_subset=256, ema=True, ema_decay=0.95,
              out=tmp_path / "run", save_every_s=None, **QUIET)
    assert r.steps == 8 and [k for k, _ in seen] == list(range(8))
    avg = {n: v.clone() for n, v in start.items()}
    for k, state in seen:
        d = min(0.95, (1 + k) / (10 + k))
        for n, v in state.items():
            avg[n] = d * avg[n] + (1 - d) * v
    saved = load_file(str(tmp_path / "run" / "last" / "state.safetensors"))
    for n, v in avg.items():
        torch.testing.assert_close(saved["ema." + n], v, rtol=1e-5, atol=1e-6)
    assert r.final_ema_acc is not None and r.best_weights in ("plain", "ema")
    assert all("ema_acc" in h for h in r.history)
    assert read_meta(tmp_path / "run" / "best").get("weights", "plain") == r.best_weights


def test_best_holds_the_average_when_it_scores_higher(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "score", lambda rec, tta: (rec["step"] / 100, "ema"))  # the average always wins
    torch.manual_seed(0)
    r = train(SmallNet(), "digits", epochs=2, batch_size=64, train_subset=256, ema=True,
              out=tmp_path / "run", save_every_s=None, **QUIET)
    assert r.best_weights == "ema" and r.best_epoch == 2 and r.best_acc == r.history[-1]["ema_acc"]
    assert read_meta(tmp_path / "run" / "best")["weights"] == "ema"
    best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    state = load_file(str(tmp_path / "run" / "last" / "state.safetensors"))
    for n, _ in SmallNet().named_parameters():  # weights: the average's (BN statistics: recomputed for it)
        assert torch.equal(best[n], state["ema." + n])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["best_weights"] == "ema" and result["scored_by"] == "plain"  # digits: no flips, no TTA
    ev = evaluate(load_checkpoint(tmp_path / "run", model=SmallNet())[0], "digits")
    assert ev["weights"] == "ema" and ev["top1"] == pytest.approx(r.best_acc)


# -------------------------------------------------------------------------------------- alternating flips
def _by_image(plan: tuple[torch.Tensor, ...]) -> torch.Tensor:
    perm, _, _, flip = plan
    out = torch.empty_like(flip)
    out[perm] = flip
    return out


def test_alternating_flips_alternate_per_image_across_epochs():
    cpu = torch.device("cpu")
    flips = [_by_image(epoch_plan(5, e, 1000, 2, True, cpu, "alternate")) for e in range(4)]
    assert 400 < int(flips[0].sum()) < 600  # epoch 0: random per image
    for e in range(1, 4):
        assert torch.equal(flips[e], ~flips[e - 1])  # then exactly the images not flipped before
    assert torch.equal(flips[0], alternating_flips(5, 0, 1000))
    assert not torch.equal(flips[0], alternating_flips(6, 0, 1000))
    # the order and crops are those of random flips; random flips are drawn as before
    a, r = epoch_plan(5, 3, 1000, 2, True, cpu, "alternate"), epoch_plan(5, 3, 1000, 2, True, cpu)
    assert all(torch.equal(u, v) for u, v in zip(a[:3], r[:3], strict=True))
    g = torch.Generator().manual_seed(5 * 1_000_003 + 3)
    torch.randperm(1000, generator=g)
    torch.randint(0, 5, (1000,), generator=g)
    torch.randint(0, 5, (1000,), generator=g)
    assert torch.equal(r[3], torch.rand(1000, generator=g) < 0.5)
    assert not _by_image(epoch_plan(5, 1, 1000, 2, False, cpu, "alternate")).any()  # no flips: none


# -------------------------------------------------------------------------------------- resume, eval, CLI
def _run(out: Path, **kw):
    kw = {"flip": "alternate", **kw}
    return train(SmallNet(), "digits", epochs=3, batch_size=64, optimizer="sgd", lr=0.05, train_subset=512, seed=3,
                 hflip=True, ema=True, tta="flip-translate", out=out, save_every_s=None, **QUIET, **kw)


def test_resume_mid_epoch_is_bit_exact_with_ema_and_alternating_flips(tmp_path):
    torch.manual_seed(0)
    full = _run(tmp_path / "full")
    torch.manual_seed(0)
    part = _run(tmp_path / "cut", max_steps=13)  # mid-epoch 2 (8 steps per epoch)
    assert part.stopped == "max_steps"
    torch.manual_seed(99)
    done = _run(tmp_path / "cut", resume=True)
    assert done.steps == full.steps == 24
    for which, fname in (("last", "model.safetensors"), ("last", "state.safetensors"), ("best", "model.safetensors")):
        a = load_file(str(tmp_path / "full" / which / fname))
        b = load_file(str(tmp_path / "cut" / which / fname))
        keys = [k for k in a if not k.startswith("rng.")]
        assert keys and all(torch.equal(a[k], b[k]) for k in keys), (which, fname)
    assert any(k.startswith("ema.") for k in load_file(str(tmp_path / "full" / "last" / "state.safetensors")))
    for key in ("test_acc", "test_acc_tta", "ema_acc", "ema_acc_tta", "score", "weights"):
        assert [h[key] for h in done.history] == [h[key] for h in full.history], key
    assert full.tta == "flip-translate" and full.scored_by == "tta" and full.best_acc_tta is not None
    # the flips are alternating ones: a run with random flips ends elsewhere
    torch.manual_seed(0)
    _run(tmp_path / "rnd", flip="random")
    assert not torch.equal(load_file(str(tmp_path / "rnd" / "last" / "model.safetensors"))["fc.weight"],
                           load_file(str(tmp_path / "full" / "last" / "model.safetensors"))["fc.weight"])
    # eval reports both, with the run's TTA by default or the one asked for
    ev = evaluate(load_checkpoint(tmp_path / "full", model=SmallNet())[0], "digits")
    assert ev["tta"] == "flip-translate" and ev["top1_tta"] == pytest.approx(full.best_acc_tta)
    assert ev["top1"] == pytest.approx(full.best_acc)
    assert evaluate(load_checkpoint(tmp_path / "full", model=SmallNet())[0], "digits", tta="off")["top1_tta"] is None
    st, _ = ck.read_state(tmp_path / "full" / "best")
    assert st["best"]["weights"] == full.best_weights


def test_eval_cli_prints_plain_and_tta(tmp_path, capsys):
    torch.manual_seed(0)
    train("lenet5", "digits", epochs=1, batch_size=64, train_subset=256, hflip=True, out=tmp_path / "run",
          save_every_s=None, **QUIET)
    ckpt = tmp_path / "run" / "best"
    assert main(["eval", str(ckpt), "--tta", "flip", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tta"] == "flip" and 0 <= r["top1_tta"] <= 1
    assert main(["eval", str(ckpt), "--tta", "flip"]) == 0
    assert f"(flip TTA {100 * r['top1_tta']:.2f}%)" in capsys.readouterr().out


def test_leaderboard_ranks_by_tta_and_shows_both(tmp_path):
    base = dict(status="ok", img_size=32, top5=None, final_top1=None, params=1, macs=1, rf=3, train_time_s=1.0,
                train_images_per_s=1.0, infer_images_per_s=1.0, best_epoch=1, epochs_run=1, note="", reason="",
                tta="flip", scored_by="tta")
    rows = [dict(base, model="a", top1=0.90, top1_tta=0.91, weights="plain"),
            dict(base, model="b", top1=0.89, top1_tta=0.93, weights="ema")]
    info = dict(dataset="cifar10", train_images=1, test_images=1, num_classes=10, recipe={})
    paths = report.write_tables(rows, info, tmp_path)
    ranked = json.loads(paths["json"].read_text())["rows"]
    assert [r["model"] for r in ranked] == ["b", "a"]  # by TTA top-1, the score best/ was chosen by
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert table[0]["top1"] == "0.89" and table[0]["top1_tta"] == "0.93" and table[0]["scored_by"] == "tta"
    assert table[0]["weights"] == "ema"
    md = paths["md"].read_text()
    assert "| top-1 % | TTA top-1 % |" in md and "| 1 | b (EMA) | 32 | 89.00 | 93.00* |" in md
    plain = [dict(r, scored_by="plain") for r in rows]
    assert [r["model"] for r in report.ranked(plain)] == ["a", "b"]
    assert "autocast" not in md  # every row in float32: no note
    mixed = [dict(rows[0], precision="bf16"), dict(rows[1], precision="float32")]
    assert report.leaderboard_text(mixed, info).splitlines()[-1] == (
        "trained under autocast: a (bf16); the others in float32 (--amp off: all float32)")


def test_options_are_declared_once_with_choices():
    from cnnzoo.errors import CnnzooError
    from cnnzoo.training.config import TrainConfig, resolve

    cfg = resolve({"dataset": "cifar10"})
    assert (cfg.tta, cfg.ema, cfg.flip) == (TrainConfig.tta, False, "random")
    with pytest.raises(CnnzooError, match="unknown flip"):
        resolve({"flip": "sometimes"})
    with pytest.raises(CnnzooError, match="ema_decay"):
        resolve({"ema_decay": 1.0})
