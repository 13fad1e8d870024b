"""``cnnzoo cache``: shows each cache folder with its size and clears one kind without touching the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnzoo.cli import main
from helpers import cli, one_line


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    data, xdg, torch_home, hf = (tmp_path / n for n in ("data", "xdg", "torch", "hf"))
    monkeypatch.delenv("CNNZOO_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("CNNZOO_DATA", str(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HOME", str(hf))
    decoded = data / ".cnnzoo-cache"
    decoded.mkdir(parents=True)
    (decoded / "pets-train-224-abc.npy").write_bytes(b"x" * 2500)
    (xdg / "cnnzoo").mkdir(parents=True)
    (xdg / "cnnzoo" / "list-v1.json").write_text("{}")
    weights = torch_home / "hub" / "checkpoints"
    weights.mkdir(parents=True)
    (weights / "resnet18-f37072fd.pth").write_bytes(b"w" * 1200)
    return {"decoded": decoded, "listing": xdg / "cnnzoo" / "list-v1.json", "weights": weights}


def test_shows_each_kind_with_its_size(caches: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"2.5 KB  {caches['decoded']}" in out
    assert f"1.2 KB  {caches['weights']}" in out
    assert str(caches["listing"]) in out


def test_clear_one_kind_keeps_the_others(caches: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["cache", "--clear", "decoded"]) == 0
    assert not (caches["decoded"] / "pets-train-224-abc.npy").exists() and caches["decoded"].is_dir()
    assert caches["listing"].is_file() and (caches["weights"] / "resnet18-f37072fd.pth").is_file()
    assert main(["cache", "--clear", "all"]) == 0
    assert not caches["listing"].exists() and not (caches["weights"] / "resnet18-f37072fd.pth").exists()
    assert caches["weights"].is_dir()  # folders stay: only cnnzoo's files go


def test_unknown_kind_is_one_line(caches: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["cache", "--clear", "everything"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clear" in err[0]


def test_a_read_only_data_root_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root passes os.access on a r-x folder; the decode cache must still go to ~/.cache, not the shared set."""
    from cnnzoo.utils.paths import DEFAULT_ROOT, cache_dir

    monkeypatch.delenv("CNNZOO_CACHE", raising=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    assert cache_dir(shared) == shared / ".cnnzoo-cache"
    shared.chmod(0o555)
    try:
        assert cache_dir(shared) == DEFAULT_ROOT.expanduser() / "decoded"
    finally:
        shared.chmod(0o755)


def test_cache_clear_removes_only_what_cnnzoo_wrote_or_fetched(tmp_path, monkeypatch, capsys):
    """Class 2: with every cache pointed at folders holding a user's and other libraries' files, --clear all
    removes cnnzoo's decode entries, listing caches and the zoo nets' published weights, and nothing else."""
    user = tmp_path / "mine"
    monkeypatch.setenv("CNNZOO_CACHE", str(user))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    hub_dir, hf = tmp_path / "torch" / "hub" / "checkpoints", tmp_path / "hf"
    ours = [user / "pets-train-224-0123456789abcdef0123.npy", user / "pets-train-224-0123456789abcdef0123.json",
            user / "list-v1.json", user / "rf-v1.json", hub_dir / "resnet18-f37072fd.pth",
            hf / "models--timm--resnet18d.ra2_in1k" / "refs" / "main"]
    theirs = [user / "notes.txt", user / "settings.json", hub_dir / "my_finetune.pth",
              hf / "models--someorg--llm" / "refs" / "main", hf / "models--timm--vit_base_patch16_224.x" / "a"]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert cli(["cache", "--clear", "all"]) == 0
    assert [p for p in ours if p.exists()] == []
    assert all(p.is_file() for p in theirs) and user.is_dir() and hub_dir.is_dir()
    capsys.readouterr()
    one_line(capsys, cli(["cache", "--data-dir", str(tmp_path / "nonexistent")]), "is not a folder")
