"""``cnnzoo predict``: a LeNet-5 trained briefly on real MNIST classifies real MNIST PNGs, with the
checkpoint's own preprocessing; unreadable files are skipped with a warning; ``--csv`` is Kaggle-style."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.deploy.inference import predict

N_IMAGES = 60


@pytest.fixture(scope="module")
def mnist_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir):
    out = tmp_path_factory.mktemp("predict") / "lenet5-mnist"
    res = cnnzoo.train(model="lenet5", dataset="mnist", data_dir=data_dir, epochs=2, train_subset=6000,
                       test_subset=500, optimizer="adamw", lr=3e-3, weight_decay=0.05, batch_size=64,
                       warmup_epochs=0.25, out=out, progress=False, verbose=False)
    assert res.best_acc > 0.85, res.best_acc
    return out


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory, data_dir):
    """The first MNIST test images written as PNG files (lossless), with their true labels."""
    test = cnnzoo.load_dataset("mnist", "test", data_dir)
    folder = tmp_path_factory.mktemp("mnist-png")
    labels = {}
    for i in range(N_IMAGES):
        stem = f"test{i:05d}"
        Image.fromarray(test.images[i, 0].numpy()).save(folder / f"{stem}.png")
        labels[stem] = str(int(test.labels[i]))
    return folder, labels, test


def test_predicts_real_mnist_images(mnist_ckpt, pngs) -> None:
    folder, labels, _ = pngs
    res = predict(mnist_ckpt, folder, topk=3)
    assert len(res.predictions) == N_IMAGES and not res.skipped
    correct = sum(p.label == labels[p.id] for p in res.predictions)
    assert correct / N_IMAGES >= 0.85, f"only {correct}/{N_IMAGES} correct"
    for p in res.predictions:
        assert len(p.topk) == 3 and p.topk[0] == (p.label, p.prob)
        assert 1.0 >= p.topk[0][1] >= p.topk[1][1] >= p.topk[2][1] >= 0.0
        assert p.label in [str(d) for d in range(10)]


def test_same_preprocessing_as_training(mnist_ckpt, pngs) -> None:
    """PNG -> predict gives exactly what the model gives on the data set's tensors through the engine's
    evaluation preprocessing (28x28 data zero-padded by LeNet-5, normalised with MNIST's mean/std)."""
    from cnnzoo.data.batches import BatchPrep
    from cnnzoo.training import load_checkpoint

    folder, _, test = pngs
    model, meta = load_checkpoint(mnist_ckpt)
    assert meta["img_size"] == 28 and meta["mean"] == pytest.approx([0.1307])
    prep = BatchPrep(test, meta["img_size"], meta["in_chans"], torch.device("cpu"), pad=0, hflip=False,
                     channels_last=False, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    with torch.no_grad():
        probs = model(prep(test.images[:N_IMAGES])).softmax(1)
    res = predict(mnist_ckpt, sorted(folder.glob("*.png")), topk=1)
    for i, p in enumerate(res.predictions):
        assert p.id == f"test{i:05d}"
        assert int(p.label) == int(probs[i].argmax())
        assert p.prob == pytest.approx(float(probs[i].max()), abs=1e-6)


def test_colour_and_larger_images_are_converted(mnist_ckpt, pngs, tmp_path) -> None:
    folder, labels, test = pngs
    base = {p.id: p for p in predict(mnist_ckpt, folder).predictions}
    for i in range(10):
        g = test.images[i, 0].numpy()
        Image.fromarray(np.stack([g] * 3, axis=-1)).save(tmp_path / f"rgb{i}.png")
        Image.fromarray(g).resize((84, 84), Image.Resampling.NEAREST).save(tmp_path / f"big{i}.jpg",
                                                                                     quality=95)
    res = {p.id: p for p in predict(mnist_ckpt, tmp_path).predictions}
    for i in range(10):
        ref = base[f"test{i:05d}"]
        rgb = res[f"rgb{i}"]  # equal channels -> the same grey image
        assert rgb.label == ref.label and rgb.prob == pytest.approx(ref.prob, abs=1e-6)
    big_ok = sum(res[f"big{i}"].label == labels[f"test{i:05d}"] for i in range(10))
    assert big_ok >= 8  # 84x84 JPEGs are scaled back to 28x28 as the checkpoint says


def test_unreadable_files_are_skipped_with_a_warning(mnist_ckpt, pngs, tmp_path) -> None:
    folder, labels, _ = pngs
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image; ignored in folders")
    good = sorted(folder.glob("*.png"))[:5]
    warnings: list[str] = []
    res = predict(mnist_ckpt, [*good, tmp_path], warn=warnings.append)
    assert len(res.predictions) == 5
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in res.skipped) == ["broken.png", "empty.jpg"]
    assert len(warnings) == 2 and all(w.startswith("warning: skipped ") and "\n" not in w for w in warnings)
    with pytest.raises(cnnzoo.CnnzooError, match="none of the 2 file"):
        predict(mnist_ckpt, [tmp_path / "broken.png", tmp_path / "empty.jpg"], warn=None)
    with pytest.raises(cnnzoo.CnnzooError, match="does not exist"):
        predict(mnist_ckpt, tmp_path / "missing.png")


def test_cli_csv_submission(mnist_ckpt, pngs, tmp_path, capsys) -> None:
    folder, labels, _ = pngs
    (folder.parent / "junk").mkdir(exist_ok=True)
    bad = folder.parent / "junk" / "zzz_corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    sub = tmp_path / "submission.csv"
    code = main(["predict", str(mnist_ckpt), str(bad), str(folder), "--topk", "2", "--csv", str(sub)])
    assert code == 0
    out, err = capsys.readouterr()
    assert f"{N_IMAGES} image(s) classified, 1 skipped" in out and "wrote" in out
    assert "warning: skipped" in err and "zzz_corrupt.jpg" in err
    with open(sub, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and len(rows) == N_IMAGES + 1
    ids = [r[0] for r in rows[1:]]
    assert ids == sorted(ids) == sorted(labels)
    assert sum(label == labels[i] for i, label in rows[1:]) >= 0.85 * N_IMAGES
    assert main(["predict", str(mnist_ckpt), str(folder / "nope.png")]) == 2
    with pytest.raises(SystemExit) as e:  # a flag out of range stops in argparse, one line (cnnzoo.utils.ranges)
        main(["predict", str(mnist_ckpt), str(folder), "--topk", "0"])
    assert e.value.code == 2 and "--topk: must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_tta_averages_the_views_the_run_allows(mnist_ckpt, pngs, capsys) -> None:
    """``tta``: the probabilities of the mean logits over the views; MNIST trained without flips, so
    flip-translate means the shifts only and flip means none (as ``eval``), and the default is the run's own."""
    from cnnzoo.data.batches import BatchPrep
    from cnnzoo.training import load_checkpoint
    from cnnzoo.training.tta import tta_logits

    folder, _, test = pngs
    model, meta = load_checkpoint(mnist_ckpt)
    prep = BatchPrep(test, meta["img_size"], meta["in_chans"], torch.device("cpu"), pad=0, hflip=False,
                     channels_last=False, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    files = sorted(folder.glob("*.png"))[:8]
    with torch.no_grad():
        x = prep(test.images[:8])
        shifted = tta_logits(model, x, "translate").softmax(1)
        plain = model(x).softmax(1)
    assert not torch.allclose(shifted, plain, atol=1e-4)  # the shifts change the probabilities
    res = predict(mnist_ckpt, files, topk=1, tta="flip-translate")
    assert res.tta == "translate"
    for i, p in enumerate(res.predictions):
        assert p.prob == pytest.approx(float(shifted[i].max()), abs=1e-5)
        assert int(p.label) == int(shifted[i].argmax())
    assert predict(mnist_ckpt, files, tta="flip").tta == "off"
    assert meta["tta"] == "flip" and predict(mnist_ckpt, files).tta == "off"  # the run's own: no mirrors
    assert main(["predict", str(mnist_ckpt), *map(str, files), "--tta", "flip-translate"]) == 0
    assert "8 image(s) classified (translate test-time augmentation)" in capsys.readouterr().out
