"""The training engine on real data: it learns, resumes exactly, keeps checkpoints safe, evaluates, and the
CLI wraps it. Small subsets keep each run to seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.errors import CnnzooError
from cnnzoo.training import NonFiniteLossError, evaluate, load_checkpoint, lr_factor, read_meta, train
from cnnzoo.training import checkpoint as ck
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import classification_loss
from cnnzoo.training.setup import param_groups

QUIET = dict(progress=False, verbose=False)


class SmallNet(nn.Module):
    """Conv-BN-ReLU x2 + dropout: has BN buffers and uses the RNG, which exact resume must restore."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / which / "model.safetensors"))


def test_lr_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "cosine") < 1e-3
    assert [lr_factor(s, 100, 0, "step") for s in (0, 49, 50, 74, 75, 99)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    tri = [lr_factor(s, 100, 0, "onecycle") for s in range(100)]
    assert max(tri) == 1.0 and tri.index(1.0) == 24 and tri[-1] == pytest.approx(1 / 76)
    assert lr_factor(50, 100, 5, "constant") == 1.0


def test_no_weight_decay_on_bn_and_bias_and_backbone_lr():
    net = SmallNet()
    groups = param_groups(net, TrainConfig(weight_decay=5e-4, lr=0.1), set())
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["weight_decay"] == 5e-4 and by_name["head/no_decay"]["weight_decay"] == 0.0
    no_decay = sum(p.numel() for p in by_name["head/no_decay"]["params"])
    assert no_decay == 8 * 2 + 16 * 2 + 10  # BN weights and biases, fc bias
    fine = param_groups(SmallNet(), TrainConfig(lr=0.1, pretrained="x.pth", backbone_lr_scale=0.1),
                         {"fc.weight", "fc.bias"})
    lrs = {g["name"]: g["lr"] for g in fine}
    assert lrs == {"backbone": pytest.approx(0.01), "backbone/no_decay": pytest.approx(0.01), "head": 0.1,
                   "head/no_decay": 0.1}


def test_googlenet_style_aux_loss():
    g = torch.Generator().manual_seed(0)
    logits, a2, a1 = (torch.randn(4, 10, generator=g) for _ in range(3))
    y = torch.tensor([1, 2, 3, 4])
    expected = F.cross_entropy(logits, y) + 0.3 * (F.cross_entropy(a2, y) + F.cross_entropy(a1, y))
    assert torch.allclose(classification_loss((logits, a2, a1), y, 0.0, 0.3), expected)


def test_lenet_learns_mnist_in_a_few_hundred_steps(tmp_path, data_dir):
    r = train("lenet5_relu", "mnist", epochs=2, batch_size=32, lr=0.05, train_subset=4800, test_subset=2000,
              out=tmp_path / "run", **QUIET)
    assert r.steps == 300 and r.epochs_run == 2 and len(r.history) == 2
    assert r.final_acc > 0.93  # chance is 0.10
    assert r.history[1]["train_loss"] < r.history[0]["train_loss"]
    assert r.train_images_per_s > 0 and r.img_size == 28 and r.params == 61_706
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"last", "best", "metrics.jsonl", "training_curves.png", "result.json"} <= files
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]
    meta = read_meta(tmp_path / "run")
    assert meta["model"] == "lenet5_relu" and meta["classes"] == [str(i) for i in range(10)]
    assert meta["img_size"] == 28 and meta["mean"] == [0.1307] and meta["dataset"] == "mnist"
    # the checkpoint alone rebuilds the model, and evaluating it gives the accuracy training measured
    model, meta = load_checkpoint(tmp_path / "run" / "best")
    assert not model.training and sum(p.numel() for p in model.parameters()) == 61_706
    ev = evaluate(tmp_path / "run", out=tmp_path / "eval")
    assert ev["n"] == 10000 and ev["top1"] > 0.93 and ev["top5"] > ev["top1"]
    cm = torch.tensor(ev["confusion"])
    assert cm.sum() == 10000 and cm.diag().sum() == round(ev["top1"] * 10000)
    assert cm.sum(1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 10000
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["top1"] == ev["top1"]


def _small_run(out, **kw):
    return train(SmallNet(), "digits", epochs=3, batch_size=64, optimizer="sgd", lr=0.05, train_subset=512, seed=3,
                 out=out, save_every_s=None, **QUIET, **kw)


# bf16: a channels_last model with the fused SGD kernel, whose momentum buffers must get the weights' memory
# format back on resume (a contiguous buffer beside a channels_last weight makes the kernel compute garbage)
@pytest.mark.filterwarnings("ignore::cnnzoo.errors.CnnzooWarning")  # bf16 on a CPU without AMX: slow, still right
@pytest.mark.parametrize("amp", ["auto", "bf16"])
def test_resume_after_interruption_gives_identical_weights(tmp_path, amp):
    torch.manual_seed(0)
    full = _small_run(tmp_path / "full", amp=amp)
    assert full.steps == 24
    torch.manual_seed(0)
    part = _small_run(tmp_path / "cut", max_steps=13, amp=amp)  # stops mid-epoch 2 (8 steps per epoch)
    assert part.stopped == "max_steps" and part.steps == 13
    st, _ = ck.read_state(tmp_path / "cut" / "last")
    assert (st["epoch"], st["epoch_step"], st["step"]) == (1, 5, 13)
    # simulate a kill during the checkpoint swap: only last.old is left
    (tmp_path / "cut" / "last").rename(tmp_path / "cut" / "last.old")
    torch.manual_seed(123)  # a different global RNG state must not matter: the checkpoint restores it
    done = _small_run(tmp_path / "cut", resume=True, amp=amp)
    assert done.steps == 24 and done.epochs_run == 3
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-exact, BN buffers included
    assert [h["test_acc"] for h in done.history] == [h["test_acc"] for h in full.history]
    assert not (tmp_path / "cut" / "last.old").exists()
    # resuming a finished run trains nothing and reports the stored result
    again = _small_run(tmp_path / "cut", resume=True, amp=amp)
    assert again.steps == 24 and again.final_acc == full.final_acc


def test_amp_modes_resolve_per_device():
    from cnnzoo.speed.policy import amp_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None and amp_dtype("off", cuda) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16  # asked for: the CPU runs it (fast where it has AMX)
    with pytest.raises(CnnzooError, match="needs a CUDA device"):
        amp_dtype("fp16", cpu)
    with pytest.raises(CnnzooError, match="not mps"):
        amp_dtype("bf16", torch.device("mps"))
    # state files written before amp became a mode stored a bool
    assert TrainConfig.from_dict({"amp": True}).amp == "auto" and TrainConfig.from_dict({"amp": False}).amp == "off"
    with pytest.raises(CnnzooError, match="unknown amp"):
        train(SmallNet(), "digits", amp="fp8", out=None, **QUIET)


@pytest.mark.filterwarnings("ignore::cnnzoo.errors.CnnzooWarning")  # bf16 on a CPU without AMX: slow, still right
def test_cpu_bf16_training_learns_is_deterministic_and_keeps_float32_weights(tmp_path):
    """``--amp bf16`` on the CPU: autocast around forward/loss, float32 master weights, a channels_last
    model, and the same seed gives the same weights; it follows the float32 run's loss closely."""
    runs = {}
    for name, amp in (("a", "bf16"), ("b", "bf16"), ("fp32", "off")):
        torch.manual_seed(0)  # SmallNet's initial weights
        runs[name] = train(SmallNet(), "digits", epochs=3, batch_size=32, lr=0.1, train_subset=640,
                           test_subset=200, seed=3, out=tmp_path / name, save_every_s=None, amp=amp, **QUIET)
    a, b, f = (_weights(tmp_path / n) for n in ("a", "b", "fp32"))
    assert all(v.dtype in (torch.float32, torch.int64) for v in a.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], f[k]) for k in a)  # bf16 really ran
    assert runs["a"].config["amp"] == "bf16" and runs["fp32"].config["amp"] == "off"
    loss = [h["train_loss"] for h in runs["a"].history]
    assert loss[-1] < loss[0] - 0.15  # learning (2.32 -> 2.12 here in either precision)
    assert abs(loss[-1] - runs["fp32"].history[-1]["train_loss"]) < 0.05


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_without_bf16_units_warns_once_in_one_line(tmp_path, monkeypatch, capsys, native):
    """On a CPU without AMX/AVX512-BF16 bf16 autocast is emulated (ResNet-20 14x slower than float32 on an
    AVX2 EPYC): training still runs, and the CLI says so in one stderr line; where the units exist it is
    silent."""
    import warnings

    from cnnzoo.errors import CnnzooWarning
    from cnnzoo.speed import policy

    monkeypatch.setattr(policy, "cpu_has_bf16_matmul", lambda: native)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(SmallNet(), "digits", epochs=1, batch_size=64, train_subset=128, test_subset=64, out=None,
              amp="bf16", **QUIET)
        train(SmallNet(), "digits", epochs=1, batch_size=64, train_subset=128, test_subset=64, out=None,
              amp="off", **QUIET)
    ours = [w for w in seen if issubclass(w.category, CnnzooWarning)]
    assert len(ours) == (0 if native else 1)
    if not native:
        assert "drop --amp" in str(ours[0].message) and "\n" not in str(ours[0].message)
        capsys.readouterr()
        assert main(["train", "--model", "lenet5", "--dataset", "digits", "--epochs", "1", "--train-subset",
                     "128", "--amp", "bf16", "--out", str(tmp_path / "cli"),
                     "--no-progress"]) == 0
        err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
        assert err == [f"cnnzoo train: warning: {policy.EMULATED_BF16}"]


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_trains_the_measured_families_in_bf16_where_the_cpu_has_bf16_units(monkeypatch, native):
    """``--amp auto`` on a CPU: bf16 for the families measured faster (CPU_BF16_TRAIN) where the CPU has bf16
    units; float32 for the others (LeNet-5, the depthwise nets), without the units, with ``--amp off`` and for
    a user's own module."""
    from cnnzoo.speed import policy

    monkeypatch.setattr(policy, "cpu_has_bf16_matmul", lambda: native)
    assert policy.CPU_BF16_TRAIN == {"alexnet", "nin", "resnet", "vgg"}
    assert policy.cpu_auto_bf16("vgg11_bn_cifar") is native and policy.cpu_auto_bf16("resnet50d") is native
    assert not any(map(policy.cpu_auto_bf16, ("lenet5", "mobilenet_v2", "efficientnet_b0", "googlenet", None)))
    few = dict(epochs=1, batch_size=32, train_subset=64, test_subset=32, max_steps=1, out=None, **QUIET)
    assert train("resnet18_cifar", "digits", **few).precision == ("bf16" if native else "float32")
    assert train("resnet18_cifar", "digits", amp="off", **few).precision == "float32"
    assert train("lenet5", "digits", **few).precision == "float32"
    assert train(SmallNet(), "digits", **few).precision == "float32"


def test_existing_run_needs_resume_and_resume_must_match(tmp_path):
    _small_run(tmp_path / "r", max_steps=2)
    with pytest.raises(CnnzooError, match="already holds a run: pass --resume"):
        _small_run(tmp_path / "r")
    with pytest.raises(CnnzooError, match="holds a run with dataset='digits', not 'mnist'"):
        train(SmallNet(), "mnist", out=tmp_path / "r", resume=True, **QUIET)
    with pytest.raises(CnnzooError, match="holds a run with model='', not 'lenet5'"):
        train("lenet5", "digits", out=tmp_path / "r", resume=True, **QUIET)
    ck.clean_stale_tmp(tmp_path / "r")
    r = _small_run(tmp_path / "r", overwrite=True, max_steps=1)
    assert r.steps == 1


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    class Exploding(SmallNet):
        calls = 0

        def forward(self, x):
            Exploding.calls += self.training and torch.is_grad_enabled()  # training steps, not PreciseBN
            out = super().forward(x)
            return out * float("nan") if Exploding.calls > 11 else out  # step 12 (epoch 2) goes bad

    with pytest.raises(NonFiniteLossError, match=r"NaN/inf at step 12 \(epoch 2\)"):
        train(Exploding(), "digits", epochs=3, batch_size=64, train_subset=512, out=tmp_path / "nan", **QUIET)
    st, _ = ck.read_state(tmp_path / "nan" / "last")
    assert st["epoch"] == 1  # epoch 1's checkpoint, written before the fault
    w = _weights(tmp_path / "nan")
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())


def test_a_time_budget_that_cannot_hold_training_stops_in_one_line(tmp_path):
    with pytest.raises(CnnzooError, match="the budget of 0 s leaves no time to train"):  # tests/test_budget.py
        _small_run(tmp_path / "b", time_budget_s=0.0)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    cases = [
        (["train", "--model", "resnet18x", "--out", str(tmp_path / "a")], "did you mean resnet18"),
        (["train", "--dataset", "mnist2", "--out", str(tmp_path / "a")], "unknown data set"),
        (["train", "--model", "lenet5", "--img-size", "20", "--out", str(tmp_path / "a")],
         "minimum is 28x28"),
        (["train", "--model", "lenet5", "--dataset", "digits", "--out", "/proc/cnnzoo-run"], "cannot write"),
        (["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "a")],
         f"{tmp_path}/mnist"),
        (["eval", str(tmp_path / "missing")], "not found"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--model", "lenet5_relu", "--dataset", "digits", "--epochs", "2",
               "--train-subset", "640", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.1", "--out", str(out),
               "--no-progress", "--format", "json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["epochs_run"] == 2 and res["steps"] == 20 and res["config"]["optimizer"] == "sgd"
    assert main(["eval", str(out), "--format", "json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 359 and math.isclose(ev["top1"], res["best_acc"], abs_tol=1e-9)
    assert main(["eval", str(out / "last" / "model.safetensors"), "--out", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "precision%" in text and (tmp_path / "ev" / "confusion.png").exists()
    # another data set of the same classes at another size (issue 19: class names are matched, so not fashion)
    assert main(["eval", str(out), "--dataset", "mnist", "--format", "json"]) == 0  # 28 px -> 32 px
    assert json.loads(capsys.readouterr().out)["n"] == 10000
    model, _ = load_checkpoint(out)
    rgb = cnnzoo.load_dataset("digits", "test").subset(slice(0, 8))
    rgb.images = rgb.images.repeat(1, 3, 1, 1)
    with pytest.raises(CnnzooError, match="takes 1-channel images but digits has 3 channels"):
        evaluate(model, dataset=rgb)


def test_fine_tune_from_pretrained_with_frozen_backbone(tmp_path):
    src = cnnzoo.create_model("lenet5_relu", num_classes=10)
    torch.save(src.state_dict(), tmp_path / "pre.pth")
    root = tmp_path / "two"  # a 3-class image folder made of digits
    from PIL import Image

    digits = cnnzoo.load_dataset("digits", "train")
    for c in (0, 1, 7):
        (root / f"d{c}").mkdir(parents=True)
        for i, img in enumerate(digits.images[digits.labels == c][:12]):
            Image.fromarray(img[0].numpy()).save(root / f"d{c}" / f"{i}.png")
    r = train("lenet5_relu", f"folder:{root}", epochs=2, pretrained=tmp_path / "pre.pth",
              freeze_backbone=True, img_size=32, out=tmp_path / "ft", **QUIET)
    w = _weights(tmp_path / "ft")
    assert w["classifier.output.weight"].shape == (3, 84)
    sd = src.state_dict()
    frozen = [k for k in sd if not k.startswith("classifier.output")]
    assert all(torch.equal(w[k], sd[k]) for k in frozen)  # backbone untouched
    st, _ = ck.read_state(tmp_path / "ft" / "last")
    assert st["head_params"] == ["classifier.output.weight", "classifier.output.bias"]
    meta = read_meta(tmp_path / "ft")
    assert meta["classes"] == ["d0", "d1", "d7"] and meta["in_chans"] == 1 and r.epochs_run == 2


def test_checkpoint_swap_and_fallbacks(tmp_path):
    w = {"a": torch.arange(3.0)}
    meta = {"model": None, "num_classes": 3, "in_chans": 1, "img_size": 8}  # what read_meta checks
    ck.write_checkpoint(tmp_path, "last", w, {**meta, "epoch": 1}, {"epoch": 1})
    ck.write_checkpoint(tmp_path, "last", {"a": torch.ones(3)}, {**meta, "epoch": 2}, {"epoch": 2})
    assert ck.read_state(ck.find_resume(tmp_path))[0]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no .tmp-*, no last.old left
    (tmp_path / "last").rename(tmp_path / "last.old")
    assert ck.find_resume(tmp_path) == tmp_path / "last.old"
    assert ck.find_checkpoint(tmp_path / "last") == tmp_path / "last.old"
    ck.write_checkpoint(tmp_path, "last", w, {**meta, "epoch": 3}, {"epoch": 3})
    assert not (tmp_path / "last.old").exists() and read_meta(tmp_path / "last")["epoch"] == 3
    with pytest.raises(CnnzooError, match="custom nn.Module"):
        load_checkpoint(tmp_path / "last")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CnnzooError, match="not a readable safetensors"):
        read_meta(tmp_path / "junk.safetensors")


def test_tensor_data_set_is_resized_per_batch_to_the_model_size(tmp_path):
    r = train("lenet5_relu", "mnist", img_size=32, epochs=1, batch_size=64, train_subset=256, test_subset=256,
              out=tmp_path / "r32", **QUIET)
    meta = read_meta(tmp_path / "r32")
    assert (r.img_size, meta["img_size"], meta["data_img_size"], meta["data_in_chans"]) == (32, 32, 28, 1)
    assert r.steps == 4 and r.extra["train_images"] == 256


def test_init_scheme_is_applied_and_saved(tmp_path, monkeypatch):
    from cnnzoo.training import setup

    seen = []
    monkeypatch.setattr(setup, "apply_init", lambda net, scheme: seen.append(scheme))
    r = train(SmallNet(), "digits", init="Xavier", epochs=1, batch_size=64, train_subset=64, test_subset=64,
              out=tmp_path / "i", **QUIET)
    assert seen == ["xavier"] and r.config["init"] == "xavier"
    with pytest.raises(CnnzooError, match="unknown init 'he'"):
        train(SmallNet(), "digits", init="he", out=tmp_path / "j", **QUIET)
