"""Shared fixtures. Tests read real data from ``$CNNZOO_DATA`` (default ``../shared/data``), never the net."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import write_ckpt

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNNZOO_DATA", ROOT.parent / "shared" / "data")).resolve()
os.environ.setdefault("CNNZOO_DATA", str(DATA))
os.environ.setdefault("CNNZOO_OFFLINE", "1")  # tests never download: a missing data set is an error

# `make test` runs one pytest-xdist worker per core: one thread each, or the two workers' intra-op threads
# fight over the 2 cores (float64 depthwise convs got 100x slower that way).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"real data sets not found at {DATA}; set CNNZOO_DATA to a copy of shared/data")
    return DATA


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    """A 28x28 grey PNG for predict to classify."""
    p = tmp_path_factory.mktemp("img") / "seven.png"
    Image.new("L", (28, 28), 90).save(p)
    return p


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A LeNet-5 checkpoint with :data:`helpers.META`, written without training."""
    return write_ckpt(tmp_path_factory.mktemp("ck") / "run")
