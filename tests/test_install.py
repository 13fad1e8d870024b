"""Installs like a library: the installed package asks for a range of torch (never replacing the user's),
constraints.txt pins the tested versions inside that range, optional features sit behind extras, and a
missing extra is named in one line."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cnnzoo.errors import CnnzooError

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    """What pip sees: the installed distribution's requirements, extras included."""
    return [Requirement(r) for r in importlib.metadata.requires("cnnzoo") or []]


def test_installed_package_asks_for_ranges_and_extras():
    reqs = _requirements()
    base = {r.name: r for r in reqs if r.marker is None}
    for name in ("torch", "torchvision"):
        ops = {s.operator for s in base[name].specifier}
        assert ops == {">="}, base[name]  # a floor only: never replaces the user's torch build
    by_extra: dict[str, set[str]] = {}
    for r in reqs:
        if r.marker is not None:
            for extra in ("export", "timm", "test"):
                if r.marker.evaluate({"extra": extra}):
                    by_extra.setdefault(extra, set()).update({r.name, *(f"{r.name}[{e}]" for e in r.extras)})
    assert {"onnx", "onnxruntime"} <= by_extra["export"]
    assert "timm" in by_extra["timm"]
    assert {"cnnzoo[export]", "cnnzoo[timm]", "pytest"} <= by_extra["test"]  # the suite needs both extras


def test_constraints_pin_versions_inside_the_ranges():
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert {"torch", "torchvision", "numpy", "onnx", "onnxruntime", "timm", "pytest"} <= set(pins)
    for r in _requirements():
        if r.marker is None and r.name in pins:
            assert r.specifier.contains(pins[r.name].split("+")[0], prereleases=True), (r, pins[r.name])


def test_onnx_export_without_the_extra_says_which(monkeypatch, tmp_path):
    from cnnzoo.deploy import exporting

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(CnnzooError, match=r"pip install 'cnnzoo\[export\]'") as e:
        exporting.export(tmp_path / "no-such-checkpoint", format="onnx")
    assert "\n" not in str(e.value)
