"""Receptive fields: published and hand-computed values, traced through the real graph of any nn.Module."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torchvision

import cnnzoo
from analysis_nets import EXPECTED_LAYERS, EXPECTED_RF, ResDilNet
from cnnzoo.analysis import receptive_field, resolve_model
from cnnzoo.analysis.cache import registered_rf
from cnnzoo.cli import main
from cnnzoo.cli.list_cmd import rows as list_rows

NETS = Path(__file__).with_name("analysis_nets.py")


def _meta(fn, **kw):
    with torch.device("meta"):
        return fn(**kw)


def _layers(rf, kinds=("conv", "pool")):
    return [row for row in rf.rows if row.kind in kinds]


def test_lenet5_conv1_to_pool2():
    rf = receptive_field("lenet5", (1, 32, 32))
    layers = _layers(rf)
    assert [r.r for r in layers[:4]] == [(5, 5), (6, 6), (14, 14), (16, 16)]
    assert [r.jump for r in layers[:4]] == [(1, 1), (2, 2), (2, 2), (4, 4)]
    assert (rf.rf, rf.jump, rf.start) == (32, 4, (15.5, 15.5))  # C5 sees the whole 32x32 field


def test_lenet5_28px_input_is_padded_into_the_field():
    rf = receptive_field("lenet5", (1, 28, 28))  # centred zero padding to 32: the field shifts by 2
    assert [r.kind for r in rf.rows][0] == "pad"
    assert (rf.rf, rf.start) == (32, (13.5, 13.5))


def test_alexnet_pool5_195():
    tv = receptive_field(_meta(torchvision.models.alexnet), (3, 224, 224))
    assert tv.module("features.12").r == (195, 195)  # pool5
    assert tv.rf == 195 and tv.feature_module == "features"
    assert receptive_field("alexnet").rf == 195
    assert receptive_field("alexnet_paper").rf == 195  # 227 input, 11/4 stem without padding


@pytest.mark.parametrize("name,r", [("vgg11", 150), ("vgg13", 156), ("vgg16", 212), ("vgg19", 268),
                                    ("vgg16_bn", 212)])
def test_vgg(name, r):
    rf = receptive_field(name)
    assert rf.rf == r and rf.jump == 32
    # the classifier flattens the 7x7 map: flagged as global context, not folded into r
    assert any("flattens a 7x7 map" in g for g in rf.global_context)
    # at other sizes the adaptive pool resamples; the net's RF is still pool5's
    assert receptive_field(name, (3, 256, 256)).rf == r


def test_resnet50_stages_and_v1_placement():
    tv = receptive_field(_meta(torchvision.models.resnet50), (3, 224, 224))
    ours = receptive_field("resnet50")
    for rf in (tv, ours):
        assert [rf.module(f"layer{i}").r[0] for i in range(1, 5)] == [35, 91, 267, 427]
        assert (rf.rf, rf.jump, rf.start) == (427, 32, (0, 0))
    v1 = receptive_field("resnet50_v1")  # stride on the first 1x1: the 3x3s see the downsampled map
    assert v1.rf == 483


def test_mobilenet_v1_315():
    assert receptive_field("mobilenet_v1").rf == 315
    assert receptive_field("mobilenet_v1_050").rf == 315  # width does not change the field


def test_inception_branches_take_the_largest_field():
    gn = receptive_field("googlenet")
    # inception3a: 1x1, 1x1-3x3, 1x1-3x3 (torchvision's "5x5"), pool-1x1 branches after the stem (r 27, j 8)
    assert gn.module("inception3a").r == (27 + 2 * 8, 27 + 2 * 8)
    assert gn.module("inception3a.branch1").r == (27, 27)
    assert gn.rf == 379
    paper = receptive_field("googlenet_paper")  # the real 5x5 branch widens every block
    assert paper.module("inception3a").r == (27 + 4 * 8, 27 + 4 * 8)
    # Inception-v3: asymmetric 1x7/7x1 convs and concatenations; Araujo et al. (Distill 2019) give 1311
    v3 = _meta(torchvision.models.inception_v3, init_weights=False, aux_logits=False)
    assert receptive_field(v3, (3, 299, 299)).rf == 1311


def test_squeeze_excitation_is_flagged_not_folded():
    rf = receptive_field("efficientnet_b0")
    assert rf.rf == 851 and rf.final.global_context
    kinds = {row.kind for row in rf.rows}
    assert {"gate", "global"} <= kinds
    assert any("gated by global context" in g for g in rf.global_context)
    gates = [row for row in rf.rows if row.kind == "gate"]
    assert len(gates) == 16  # one SE per MBConv block
    for g in gates:  # a gate keeps the map's conv-path field, narrower than the whole map its mean sees
        pooled = [row for row in rf.rows[:rf.rows.index(g)] if row.kind == "global"][-1]
        assert g.r[0] <= 851 and g.r[0] < pooled.r[0] and g.info.global_context


def test_user_net_residual_dilated_hand_computed():
    rf = receptive_field(ResDilNet(), (3, 64, 64))
    got = [(row.name, row.r[0], row.jump[0], row.start[0]) for row in _layers(rf)]
    assert got == EXPECTED_LAYERS
    assert (rf.rf, rf.jump, rf.start[0]) == EXPECTED_RF
    assert rf.module("block").r == (17, 17)  # the residual sum: the conv path, wider than the identity
    assert rf.feature_module is None  # the last map comes from plain functions in forward()
    assert rf.final.global_context and any("gated" in g for g in rf.global_context)
    dil = next(r for r in rf.rows if r.name == "block.dil")
    assert dil.op == "conv 3x3 p2 d2" and dil.params["dilation"] == [2, 2]


def test_user_net_control_flow_small_input():
    rf = receptive_field(ResDilNet(), (3, 12, 12))  # forward() pads inputs under 16 px by 2
    assert rf.rows[0].kind == "pad"
    assert (rf.rf, rf.start[0]) == (31, 1)


def test_non_square_kernels_and_inputs():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, (1, 7), padding=(0, 3)), torch.nn.Conv2d(2, 2, (5, 1)),
                              torch.nn.MaxPool2d((2, 3)))
    rf = receptive_field(net, (1, 40, 60))
    assert rf.final.r == (5 + 1, 7 + 2) and rf.final.jump == (2, 3) and rf.final.size == (18, 20)


def test_transposed_conv_is_reported_not_guessed():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ConvTranspose2d(2, 2, 2, stride=2))
    rf = receptive_field(net, (1, 16, 16))
    assert any("transposed" in w for w in rf.warnings)


def test_result_serialises_and_prints():
    rf = receptive_field("resnet18")
    d = json.loads(json.dumps(rf.to_dict()))
    assert d["rf"] == 435 and d["final"]["r"] == [435, 435] and d["feature_module"] == "layer4"
    text = str(rf)
    assert "receptive field 435, jump 32" in text and "global mean" in text


def test_cli_rf_table_and_json(capsys):
    assert main(["rf", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "features.30" in out and "receptive field 212, jump 32" in out
    assert main(["rf", f"{NETS}:res_dil_net", "--input-size", "3", "64", "64", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["rf"], d["jump"], d["final"]["start"]) == (31, 4, [3, 3])


def test_cli_rf_errors(capsys, tmp_path):
    assert main(["rf", "resnet5O"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["rf", f"{NETS}:no_such_factory"]) == 2
    assert "defines no 'no_such_factory'" in capsys.readouterr().err
    bad = tmp_path / "broken.py"
    bad.write_text("import torch\ndef net():\n    raise RuntimeError('boom')\n")
    assert main(["rf", f"{bad}:net"]) == 2
    assert "boom" in capsys.readouterr().err
    assert main(["rf", "resnet18", "--input-size", "3", "16", "16"]) == 2  # below the net's minimum
    assert "too small" in capsys.readouterr().err


def test_resolve_model_builds_on_meta_without_init():
    net = resolve_model("efficientnet_b7", device="meta")
    assert all(p.is_meta for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == cnnzoo.model_info("efficientnet_b7").params


def test_cli_rf_resnet152_within_budget(capsys):
    main(["rf", "vgg11"])  # warm-up: first meta ops
    t = time.process_time()
    assert main(["rf", "resnet152"]) == 0
    assert time.process_time() - t < 5.0
    assert "receptive field 1451, jump 32" in capsys.readouterr().out


def test_list_has_rf_and_jump_columns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    data = {d["name"]: d for d in list_rows("vgg1*")}
    assert (data["vgg16"]["rf"], data["vgg16"]["jump"]) == (212, 32)
    assert (tmp_path / "rf-v1.json").is_file()
    cached = json.loads((tmp_path / "rf-v1.json").read_text())
    assert cached["vgg19"]["value"] == {"rf": 268, "jump": 32}
    assert registered_rf(["vgg19"]) == {"vgg19": {"rf": 268, "jump": 32}}  # served from the cache
    assert main(["list", "resnet50*"]) == 0
    header, _, first = capsys.readouterr().out.splitlines()[:3]
    assert header.split()[5:7] == ["RF", "jump"] and first.split()[5:7] == ["427", "32"]


class _ReadsValues(torch.nn.Module):
    """Data-dependent control flow: cannot run on the meta device, so the tracer runs it for real."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(1, 2, 5)

    def forward(self, x):
        return self.a(x) if x.mean().item() > 1.0 else self.b(x)


def test_value_dependent_net_falls_back_to_a_real_pass():
    from cnnzoo.analysis import summary

    rf = receptive_field(_ReadsValues(), (1, 12, 12))  # zeros in: the 5x5 branch runs
    assert rf.rf == 5 and rf.feature_module == "b"
    assert summary(_ReadsValues(), (1, 12, 12)).macs == 2 * 25 * 8 * 8
