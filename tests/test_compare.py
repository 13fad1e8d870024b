"""``cnnzoo compare`` end to end on the embedded digits: leaderboard with real numbers, plots, HTML page
(rendered in headless Chromium when installed), ``--resume``, and failing models reported as rows."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.analysis.flops import count_macs
from cnnzoo.cli import main
from cnnzoo.comparing.report import ACC_VS_MACS_PX, CURVES_PX
from cnnzoo.comparing.run import compare, model_size, resolve_models

MODELS = ("lenet5", "resnet20_cifar")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """One small real comparison: 2 epochs at 16 px (LeNet-5 is raised to its 28 px minimum)."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    res = compare(models=",".join(MODELS), dataset="digits", epochs=2, img_size=16, out=out, progress=False,
                  verbose=False)
    return res


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _assert_not_blank(a: np.ndarray, min_ink: float = 0.01) -> None:
    ink = (a.min(axis=2) < 200).mean()  # share of pixels that are not (near) white
    assert ink > min_ink, f"image looks blank: {100 * ink:.2f}% ink"
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # text, lines and bubbles, not a flat fill


def test_leaderboard_has_real_numbers(run) -> None:
    rows = {r["model"]: r for r in json.loads((run.out / "leaderboard.json").read_text())["rows"]}
    assert set(rows) == set(MODELS) and all(r["status"] == "ok" for r in rows.values())
    for name, r in rows.items():
        net = cnnzoo.create_model(name, num_classes=10, in_chans=1)
        assert r["params"] == sum(p.numel() for p in net.parameters())
        size = 28 if name == "lenet5" else 16
        assert r["img_size"] == size
        assert r["macs"] == count_macs(net, (1, size, size))
        assert r["top1"] > 0.3, f"{name} top-1 {r['top1']:.3f} is not far above chance (0.1)"
        assert r["top5"] >= r["top1"] and r["top5"] > 0.6
        assert r["rf"] and r["rf"] > 5
        assert r["train_time_s"] > 0 and r["train_images_per_s"] > 0 and r["infer_images_per_s"] > 0
        assert r["epochs_run"] == 2 and 1 <= r["best_epoch"] <= 2 and len(r["history"]) == 2
        ev = json.loads((run.out / "models" / name / "eval.json").read_text())
        assert ev["top1"] == r["top1"] and ev["n"] == 359 and sum(map(sum, ev["confusion"])) == 359
    assert rows["lenet5"]["note"].startswith("trained at 28x28, its minimum")
    assert not rows["resnet20_cifar"]["note"]
    assert run.best["model"] == max(rows.values(), key=lambda r: r["top1"])["model"]
    ranks = [r["rank"] for r in run.rows]
    assert ranks == [1, 2] and run.rows[0]["top1"] >= run.rows[1]["top1"]


def test_tables(run) -> None:
    with open(run.out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == [r["model"] for r in run.rows]
    assert float(rows[0]["top1"]) == pytest.approx(run.rows[0]["top1"])
    md = (run.out / "leaderboard.md").read_text()
    assert "| # | model | size | top-1 % | top-5 %" in md and "28*" in md
    for r in run.rows:
        assert f"| {r['model']} |" in md and f"{100 * r['top1']:.2f}" in md
    text = run.leaderboard()
    assert text.splitlines()[0].split()[:4] == ["#", "model", "size", "top-1"]


def test_plots_are_real_images(run) -> None:
    for name, (w, h) in (("accuracy_vs_macs.png", ACC_VS_MACS_PX), ("curves.png", CURVES_PX)):
        a = _png(run.out / name)
        assert a.shape == (h, w, 3), (name, a.shape)
        _assert_not_blank(a)
    for m in MODELS:
        a = _png(run.out / "models" / m / "confusion.png")
        assert min(a.shape[:2]) >= 300
        _assert_not_blank(a)


def test_html_is_self_contained(run) -> None:
    page = (run.out / "report.html").read_text()
    assert '<table id="leaderboard">' in page and all(f"<td>{m}</td>" in page for m in MODELS)
    assert page.count('src="data:image/png;base64,') == 2 + len(MODELS)  # 2 plots + confusion matrices
    assert "http://" not in page and "https://" not in page and "<script" not in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_html_renders_in_headless_chromium(run) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); HTML not rendered")
    shot = run.out / "screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={shot}",
               "--window-size=1280,2000", (run.out / "report.html").resolve().as_uri()]
        subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    a = _png(shot)
    assert a.shape[:2] == (2000, 1280)
    _assert_not_blank(a, min_ink=0.02)
    # the plots are rendered: the page holds many distinct colours (bubbles, curves), not only text
    assert len(np.unique(a[::2, ::2].reshape(-1, 3), axis=0)) > 200


def test_resume_skips_finished_models_and_cli_prints(run, capsys) -> None:
    with pytest.raises(cnnzoo.CnnzooError, match="already holds a comparison"):
        compare(models=",".join(MODELS), dataset="digits", epochs=2, img_size=16, out=run.out, progress=False)
    code = main(["compare", "--models", ",".join(MODELS), "--dataset", "digits", "--epochs", "2",
                 "--img-size", "16", "--out", str(run.out), "--resume", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("--resume: skipped") == 2
    assert "top-1 %" in out and "report:" in out and f"best: {run.best['model']}" in out
    again = json.loads((run.out / "leaderboard.json").read_text())["rows"]
    assert [r["top1"] for r in again] == [r["top1"] for r in run.rows]


def test_failing_models_get_a_row_and_the_rest_continue(tmp_path, monkeypatch) -> None:
    import cnnzoo.comparing.run as C

    real = C._static_facts

    def flaky(name, *a, **k):  # stands in for a model that runs out of memory
        if name == "lenet5":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(name, *a, **k)

    monkeypatch.setattr(C, "_static_facts", flaky)
    res = compare(models="lenet5,resnet20_cifar", dataset="digits", epochs=1, img_size=8, out=tmp_path / "c",
                  progress=False, verbose=False, lr=1e9)  # lr 1e9: resnet20's loss becomes NaN
    rows = {r["model"]: r for r in res.rows}
    assert rows["lenet5"]["status"] == "failed" and rows["lenet5"]["reason"].startswith("out of memory")
    assert rows["resnet20_cifar"]["status"] == "failed" and "NaN" in rows["resnet20_cifar"]["reason"]
    assert res.best is None
    md = (tmp_path / "c" / "leaderboard.md").read_text()
    assert "lenet5 failed: out of memory" in md and "resnet20_cifar failed: the loss became NaN" in md
    assert (tmp_path / "c" / "report.html").is_file() and (tmp_path / "c" / "curves.png").is_file()


def test_a_net_that_cannot_train_in_its_budget_gets_a_row_that_says_so(tmp_path) -> None:
    res = compare(models="lenet5", dataset="digits", epochs=3, budget_minutes=1e-4, out=tmp_path / "b",
                  progress=False, verbose=False)
    (row,) = res.rows  # budgeted runs that finish: tests/test_budget.py
    assert row["status"] == "failed" and "leaves no time to train" in row["reason"] and row["budget_s"] is None
    assert res.info["budget_minutes"] == 1e-4 and "budget 0.0001 min per model" in res.leaderboard()


def test_default_out_folders(tmp_path, monkeypatch) -> None:
    from cnnzoo.comparing.run import _default_out

    monkeypatch.chdir(tmp_path)
    assert _default_out("digits") == _default_out("digits", resume=True) == Path("runs/compare-digits")
    for d in ("runs/compare-digits", "runs/compare-digits-2"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "leaderboard.json").write_text("{}")
    assert _default_out("digits") == Path("runs/compare-digits-3")  # a new run never overwrites an old one
    assert _default_out("digits", resume=True) == Path("runs/compare-digits-2")  # --resume: the newest
    assert _default_out("folder:~/data/pets/") == Path("runs/compare-pets")


def test_choosing_models_and_sizes() -> None:
    assert resolve_models() == list(cnnzoo.comparing.run.PRESETS["classic"])
    assert resolve_models("LeNet5, resnet20-cifar,lenet5") == ["lenet5", "resnet20_cifar"]
    small = resolve_models(preset="all-small")
    assert "lenet5" in small and "resnet20_cifar" in small and "resnet50" not in small
    with pytest.raises(cnnzoo.UnknownModelError, match="did you mean"):
        resolve_models("resnet20_cifr")
    with pytest.raises(cnnzoo.CnnzooError, match="unknown preset"):
        resolve_models(preset="huge")
    assert model_size("alexnet", 32) == (63, "trained at 63x63, its minimum input (asked 32)")
    assert model_size("lenet5", 64)[0] == 32 and model_size("resnet20_cifar", 16) == (16, "")
    assert main(["compare", "--models", "nonet"]) == 2


def test_data_is_loaded_once_and_best_is_not_evaluated_again(tmp_path, monkeypatch) -> None:
    """compare loads the data set once and hands it to each train(); a model's row, eval.json and
    confusion.png come from the evaluation that chose its best/ (the same numbers cnnzoo.evaluate gives)."""
    import sys

    import cnnzoo.data
    from cnnzoo.training import evaluate, setup

    evaluate_mod = sys.modules[evaluate.__module__]

    loads, real_load = [], cnnzoo.data.load_dataset
    monkeypatch.setattr(cnnzoo.data, "load_dataset", lambda *a, **k: loads.append(a[:2]) or real_load(*a, **k))
    monkeypatch.setattr(setup, "load_dataset", lambda *a, **k: pytest.fail("train() loaded the data again"))
    for where in (evaluate_mod, sys.modules["cnnzoo.training"]):
        monkeypatch.setattr(where, "evaluate", lambda *a, **k: pytest.fail("best/ was evaluated again"))
    res = compare(models="lenet5,alexnet_cifar", dataset="digits", epochs=1, img_size=8, out=tmp_path / "c",
                  progress=False, verbose=False, raise_errors=True)
    assert loads == [("digits", "train"), ("digits", "test")]
    monkeypatch.undo()
    for row in res.rows:
        mdir = Path(row["run_dir"])
        stored = json.loads((mdir / "result.json").read_text())
        assert row["top1"] == stored["best_acc"] and row["infer_images_per_s"] > 0
        ev = json.loads((mdir / "eval.json").read_text())
        again = cnnzoo.evaluate(mdir / "best")
        for k in ("top1", "top5", "top1_tta", "loss", "confusion", "per_class", "n"):
            assert ev[k] == again[k], (row["model"], k)
        assert (mdir / "confusion.png").stat().st_size > 5000
