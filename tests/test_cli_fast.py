"""The CLI answers at once: ``--help`` of every command, argument errors and a cached
``cnnzoo list`` run without importing torch (importing it is most of a slow start). Checked through
``sys.modules`` in a fresh interpreter, not with a timer: what is imported is what costs the time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest

from cnnzoo.cli import build_parser

# Runs cnnzoo's CLI in a fresh interpreter, then prints one JSON line: the exit status and whether torch
# (or its numeric neighbours) got imported.
_WRAPPER = textwrap.dedent("""
    import json, os, sys
    from cnnzoo.cli import main
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    heavy = sorted(m for m in ("torch", "torchvision", "numpy", "matplotlib") if m in sys.modules)
    print("\\n@@" + json.dumps({"rc": rc, "heavy": heavy, "omp": os.environ.get("OMP_WAIT_POLICY"),
                                "spin": os.environ.get("GOMP_SPINCOUNT")}))
""")


OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _run(args: list[str], env: dict | None = None) -> tuple[dict, str, str]:
    p = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if k not in OMP_KEYS}, **(env or {})})
    out, _, tail = p.stdout.rpartition("\n@@")
    assert tail, f"no result from {args}: rc {p.returncode}\n{p.stderr[-2000:]}"
    return json.loads(tail), out, p.stderr


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_is_covered():
    assert {"list", "train", "compare"} <= set(_commands())


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["compare", "--help"]]
                         + [[c, "--help"] for c in _commands()], ids=lambda a: " ".join(a))
def test_help_without_torch(args):
    res, out, err = _run(args)
    assert res["rc"] == 0, err[-2000:]
    assert "usage: cnnzoo" in out
    assert "torch" not in res["heavy"], f"`cnnzoo {' '.join(args)}` imported torch"


@pytest.mark.parametrize("args", [
    ["no-such-command"],
    ["list", "--format", "xml"],
    ["train", "--model", "lenet5", "--epochs", "three"],
    ["compare", "--epochs", "three"],
    ["compare", "--preset", "no-such-preset"],
], ids=lambda a: " ".join(a))
def test_argument_errors_without_torch(args):
    res, _, err = _run(args)
    assert res["rc"] == 2
    assert "error:" in err
    assert "torch" not in res["heavy"], f"`cnnzoo {' '.join(args)}` imported torch to refuse its arguments"


def test_list_served_from_cache_without_torch(tmp_path):
    env = {"CNNZOO_CACHE": str(tmp_path)}
    first, out1, err = _run(["list"], env)  # builds the listing (needs torch) and stores it
    assert first["rc"] == 0, err[-2000:]
    assert (tmp_path / "list-v1.json").is_file()
    again, out2, _ = _run(["list"], env)
    assert again["rc"] == 0 and out2 == out1
    assert "torch" not in again["heavy"]
    some, out3, _ = _run(["list", "resnet1*", "--format", "json"], env)
    assert "torch" not in some["heavy"]
    names = [d["name"] for d in json.loads(out3)]
    assert names and all(n.startswith("resnet1") for n in names) and "resnet18_cifar" in names
    # a command gets OpenMP workers that spin briefly, then sleep (unless the user chose a policy or a spin)
    assert (again["omp"], again["spin"]) == (None, "10000")
    assert _run(["list"], {**env, "OMP_WAIT_POLICY": "ACTIVE"})[0] == {**again, "omp": "ACTIVE", "spin": None}
    assert _run(["list"], {**env, "GOMP_SPINCOUNT": "0"})[0]["spin"] == "0"


def test_list_cache_is_keyed_by_code_and_torch(tmp_path, monkeypatch):
    from cnnzoo.cli import list_cmd
    from cnnzoo.utils import diskcache

    monkeypatch.setenv("CNNZOO_CACHE", str(tmp_path))
    rows = list_cmd.rows()
    stored = json.loads((tmp_path / "list-v1.json").read_text())
    assert stored["key"] == diskcache.code_fingerprint() and stored["rows"] == rows
    # a listing stored by other code (another cnnzoo, another torch) is not served: it is rebuilt
    stored["rows"][0]["family"] = "stale"
    stored["key"] = "other-code"
    (tmp_path / "list-v1.json").write_text(json.dumps(stored))
    assert list_cmd.rows() == rows
    assert json.loads((tmp_path / "list-v1.json").read_text())["key"] == diskcache.code_fingerprint()
    # torch's version file is part of the key
    assert b"__version__" in diskcache._version_file("torch")


def test_lazy_api_still_works():
    import cnnzoo

    assert cnnzoo.create_model("lenet5").__class__.__name__
    assert "lenet5" in cnnzoo.list_models("lenet*")
    assert cnnzoo.model_info("lenet5").params > 0
    assert callable(cnnzoo.train) and callable(cnnzoo.compare) and callable(cnnzoo.export)
    assert cnnzoo.analysis.summary is cnnzoo.summary  # submodules reachable as attributes
    assert {"create_model", "train", "compare"} <= set(dir(cnnzoo))
    assert set(cnnzoo.__all__) == {"CnnzooError", "InputSizeError", "UnknownModelError", *cnnzoo._LAZY}
    with pytest.raises(AttributeError):
        cnnzoo.no_such_thing  # noqa: B018


def test_a_closed_pipe_is_not_an_error() -> None:
    """``cnnzoo list | head -1``: the reader leaves early; no error line, exit 141 as other tools."""
    p = subprocess.run(f"{sys.executable} -m cnnzoo list | head -1", shell=True, capture_output=True, text=True,
                       executable="/bin/bash", env={**os.environ, "CNNZOO_OFFLINE": "1"}, timeout=300)
    assert p.stdout.startswith("model") and len(p.stdout.splitlines()) == 1
    assert p.stderr == ""
