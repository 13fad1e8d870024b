"""``cnnzoo export``: ONNX (opset >= 17, dynamic batch, BatchNorm folded) equals PyTorch within 1e-4 in
onnxruntime; TorchScript equals PyTorch; the checkpoint's preprocessing travels in the file."""

from __future__ import annotations

import json
import warnings

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.data.batches import BatchPrep
from cnnzoo.deploy.exporting import export
from cnnzoo.training import load_checkpoint


def _train(name: str, size: int, tmp_path_factory: pytest.TempPathFactory):
    """A few real training steps on digits, so BatchNorm statistics are not the initial ones."""
    out = tmp_path_factory.mktemp("export") / name
    cnnzoo.train(model=name, dataset="digits", epochs=1, max_steps=3, batch_size=16, test_subset=64,
                 img_size=size, out=out, progress=False, verbose=False)
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    return _train("resnet20_cifar", 16, tmp_path_factory)  # residual additions, option-A shortcuts


@pytest.fixture(scope="module")
def googlenet_ckpt(tmp_path_factory: pytest.TempPathFactory):
    """Inception concatenations (auxiliary heads unused in eval); a checkpoint written directly, with random
    BatchNorm statistics (no training: only the graph matters here)."""
    from cnnzoo.training.checkpoint import write_checkpoint

    torch.manual_seed(0)
    net = cnnzoo.create_model("googlenet", num_classes=10, in_chans=1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    meta = {"model": "googlenet", "model_kwargs": {}, "num_classes": 10, "in_chans": 1, "img_size": 32,
            "mean": [0.2652], "std": [0.3738], "classes": [str(i) for i in range(10)], "dataset": "digits",
            "data_img_size": 32, "data_in_chans": 1}
    out = tmp_path_factory.mktemp("export") / "googlenet"
    write_checkpoint(out, "best", net.state_dict(), meta)
    return out


def _digits_batch(meta: dict, n: int = 7) -> torch.Tensor:
    data = cnnzoo.load_dataset("digits", "test")
    prep = BatchPrep(data, meta["img_size"], meta["in_chans"], torch.device("cpu"), pad=0, hflip=False,
                     channels_last=False, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    return prep(data.images[:n])


def _bn_in_eval(model: nn.Module, x: torch.Tensor) -> int:
    """BatchNorms that run in eval mode (GoogLeNet's auxiliary heads only run in training)."""
    used: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, a, o: used.add(id(m))) for m in model.modules()
             if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return len(used)


@pytest.mark.parametrize("which", ["ckpt", "googlenet_ckpt"])
def test_onnx_round_trip(which: str, request, tmp_path) -> None:
    ckpt = request.getfixturevalue(which)
    res = export(ckpt, format="onnx", out=tmp_path / "m.onnx")
    model, meta = load_checkpoint(ckpt)
    x = _digits_batch(meta)  # real images, batch 7 (traced with 2): the batch dimension is dynamic
    assert res.fused_pairs == _bn_in_eval(model, x) > 0 and res.max_abs_diff < 1e-4
    proto = onnx.load(str(res.path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, meta["img_size"],
                                                                                meta["img_size"]]
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]  # folded into the convs
    info = json.loads({p.key: p.value for p in proto.metadata_props}["cnnzoo"])
    assert info["classes"] == [str(i) for i in range(10)] and info["mean"] == meta["mean"]
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    diff = (torch.from_numpy(y) - ref).abs().max().item()
    assert diff < 1e-4, diff
    assert torch.equal(torch.from_numpy(y).argmax(1), ref.argmax(1))


def test_torchscript_round_trip(ckpt, tmp_path) -> None:
    model, meta = load_checkpoint(ckpt)
    x = _digits_batch(meta, n=5)
    with torch.no_grad():
        ref = model(x)
    for fuse_bn, tol in ((True, 1e-4), (False, 1e-6)):
        res = export(ckpt, format="torchscript", out=tmp_path / f"m{fuse_bn}.pt", fuse_bn=fuse_bn)
        extra = {"cnnzoo.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is marked deprecated upstream
            ts = torch.jit.load(str(res.path), _extra_files=extra)
            with torch.no_grad():
                y = ts(x)
        assert (y - ref).abs().max().item() < tol
        assert json.loads(extra["cnnzoo.json"])["img_size"] == meta["img_size"]
        assert (res.fused_pairs > 0) == fuse_bn


def test_cli_export(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max abs diff vs PyTorch" in printed and "opset 17" in printed
    assert main(["export", str(ckpt), "--opset", "13", "--out", str(out)]) == 2
    assert main(["export", str(tmp_path / "no-such-run"), "--out", str(out)]) == 2


# ---- every registered net exports -------------------------------------------------------------------------

# Nets whose ONNX export and check take over ~5 s on one CPU core (big graphs or big FC heads): still run,
# marked slow.
HEAVY = {"alexnet", "alexnet_paper", "resnet101", "resnet101d", "resnet152", "wide_resnet50_2", "nin",
         *(f"efficientnet_b{i}" for i in range(1, 8)), *(n for n in cnnzoo.list_models("vgg*") if "cifar" not in n)}


def _export_size(name: str) -> int:
    """The smallest input the net takes, at least 32 (LeNet-5: its one size)."""
    info = cnnzoo.model_info(name)
    return info.max_size if info.max_size is not None else max(info.min_size, 32)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in cnnzoo.list_models()])
def test_onnx_export_of_every_registered_net(name: str, tmp_path) -> None:
    from cnnzoo.deploy.exporting import export_model

    torch.manual_seed(0)
    info = cnnzoo.model_info(name)
    model = cnnzoo.create_model(name, num_classes=10).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding them is checked
        for m in model.modules():  # (variances >= 1: 110 layers of random weights must not blow up)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(1.0, 2.0)
    size = _export_size(name)
    x = torch.randn(4, info.in_chans, size, size)
    with torch.no_grad():
        ref = model(x)
    tol = 1e-5 * max(1.0, ref.abs().max().item())  # float32 round-off grows with the logits (ResNet-110's)
    res = export_model(model, {"model": name, "in_chans": info.in_chans, "img_size": size}, tmp_path / "m.onnx",
                       tol=tol)
    assert res.path.is_file() and res.max_abs_diff < tol
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": x.numpy()})
    del sess
    res.path.unlink()  # up to 0.5 GB a net (VGG): pytest keeps three runs' tmp folders, so a suite would leave ~6 GB
    assert y.shape == (4, 10) and (torch.from_numpy(y) - ref).abs().max().item() < tol


@pytest.mark.slow
def test_cli_export_of_alexnet_paper(tmp_path, capsys) -> None:
    """LRN and an adaptive pool: the case the TorchScript-based exporter could not take."""
    from cnnzoo.training.checkpoint import write_checkpoint

    torch.manual_seed(0)
    net = cnnzoo.create_model("alexnet_paper", num_classes=10)
    meta = {"model": "alexnet_paper", "model_kwargs": {}, "num_classes": 10, "in_chans": 3, "img_size": 67,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "classes": [str(i) for i in range(10)],
            "dataset": "folder", "data_img_size": 67, "data_in_chans": 3}
    write_checkpoint(tmp_path / "run", "best", net.state_dict(), meta)
    out = tmp_path / "alexnet_paper.onnx"
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and "max abs diff vs PyTorch" in capsys.readouterr().out


def test_fixed_adaptive_pool_equals_pytorchs() -> None:
    from cnnzoo.deploy.exporting import _FixedAdaptiveAvgPool

    x = torch.randn(2, 3, 10, 13)
    for out in ((7, 7), (3, 5), (1, 1), (10, 13), (20, 4)):
        fixed = _FixedAdaptiveAvgPool((10, 13), out)
        torch.testing.assert_close(fixed(x), nn.functional.adaptive_avg_pool2d(x, out), rtol=1e-6, atol=1e-6)


# ---- local response normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "shape"), [(5, (2, 96, 9, 7)), (4, (2, 16, 5, 5)), (5, (1, 3, 4, 4)),
                                             (3, (2, 8, 6))])
def test_lrn_is_bit_identical_to_pytorchs(size, shape) -> None:
    from cnnzoo.models.layers import LocalResponseNorm

    x = torch.randn(*shape) * 3
    ours, theirs = LocalResponseNorm(size, alpha=5e-4, beta=0.75, k=2.0), nn.LocalResponseNorm(size, 5e-4, 0.75, 2.0)
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lrn_nets_in_half_precision_on_the_cpu_say_so_in_one_line(dtype) -> None:
    net = cnnzoo.create_model("alexnet_cifar").to(dtype)
    with pytest.raises(cnnzoo.CnnzooError, match="no .*float16 kernel on the CPU") as e:
        net(torch.randn(1, 3, 28, 28, dtype=dtype))
    assert "\n" not in str(e.value)


def test_lrn_nets_train_under_cpu_bf16_autocast_with_lrn_in_float32() -> None:
    net = cnnzoo.create_model("alexnet_cifar", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
        lrn = next(m for m in net.features if isinstance(m, nn.LocalResponseNorm))
        half = torch.randn(2, 96, 5, 5).bfloat16()
        y = lrn(half)
    out.float().sum().backward()
    assert y.dtype == torch.float32 and out.shape == (2, 10)
    assert torch.equal(y, lrn(half.float()))  # the float32 LRN of the same values
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
