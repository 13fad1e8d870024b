"""Installs like a library (issue 20 item 6): a range for torch in pyproject.toml, the exact tested versions
in constraints.txt, optional features behind extras, and a missing extra named in one line."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from cnnzoo.errors import CnnzooError

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_ranges_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0]: d for d in project["dependencies"]}
    for name in ("torch", "torchvision"):
        assert "==" not in deps[name] and ">=" in deps[name], deps[name]  # never replaces the user's torch
    extras = project["optional-dependencies"]
    assert {"onnx", "onnxruntime"} <= {re.split(r"[<>=]", d)[0] for d in extras["export"]}
    assert any(d.startswith("timm") for d in extras["timm"])
    assert any(d.startswith("cnnzoo[") and "export" in d and "timm" in d for d in extras["test"])


def test_constraints_pin_what_the_range_allows():
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert {"torch", "torchvision", "numpy", "onnx", "onnxruntime", "timm", "pytest"} <= set(pins)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {d.split(">=")[0]: d.split(">=")[1] for d in project["dependencies"] if ">=" in d}
    for name in ("torch", "torchvision"):
        pinned = tuple(int(x) for x in pins[name].split("+")[0].split(".")[:2])
        assert pinned >= tuple(int(x) for x in floors[name].split(".")[:2])


def test_onnx_export_without_the_extra_says_which(monkeypatch, tmp_path):
    from cnnzoo import exporting

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(CnnzooError, match=r"pip install 'cnnzoo\[export\]'") as e:
        exporting.export(tmp_path / "no-such-checkpoint", format="onnx")
    assert "\n" not in str(e.value)
