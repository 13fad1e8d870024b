"""``create_model(name, pretrained=True)``: published weights through torchvision's/timm's own loaders.

No network: a bounded ``http.server`` thread on 127.0.0.1 serves a weights file made from torchvision's
randomly initialised model, under the name torch hub expects (``<arch>-<sha256 prefix>.pth``), and the
weights enum's URL is pointed at it. The download, hash check and cache are torch hub's real code path;
``TORCH_HOME`` and the Hugging Face cache are tmp folders.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import get_model_weights

import cnnzoo
from cnnzoo.errors import CnnzooError
from cnnzoo.models import hub

TV_NAMES = [n for n in cnnzoo.list_models() if (hub.weights_source(n) or ("",))[0] == "torchvision"]


@contextmanager
def serve(files: dict[str, bytes], truncate: bool = False, max_s: float = 60.0) -> Iterator[str]:
    """Serve ``files`` on 127.0.0.1 from a thread; stops on exit or by itself after ``max_s`` seconds.
    ``truncate``: announce the full length but send half the bytes, then close (a broken-off download)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncate else body)
            if truncate:
                self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    timer = threading.Timer(max_s, server.shutdown)  # bounded: never outlives a hung test
    thread.start()
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


def weights_file(builder: str, seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes, str]:
    """torchvision's randomly initialised ``builder`` as a .pth: (state_dict, bytes, hub file name)."""
    torch.manual_seed(seed)
    extra = {"init_weights": False} if builder == "googlenet" else {}  # not its slow scipy init
    sd = torchvision.models.get_model(builder, weights=None, **extra).state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    data = buf.getvalue()
    return sd, data, f"{builder}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


@pytest.fixture
def hub_env(tmp_path, monkeypatch) -> Path:
    """Empty torch hub and Hugging Face caches, downloads allowed; returns the checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("CNNZOO_OFFLINE", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def point_at(monkeypatch, builder: str, url: str) -> None:
    """Point the default weights enum member of ``builder`` at ``url`` (torchvision's own loader follows)."""
    monkeypatch.setattr(get_model_weights(builder).DEFAULT.value, "url", url)


def cached_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_checks_hash_caches_and_second_load_is_offline(hub_env, monkeypatch):
    sd, data, name = weights_file("mobilenet_v3_small")
    with serve({name: data}) as host:
        point_at(monkeypatch, "mobilenet_v3_small", f"{host}/{name}")
        model = cnnzoo.create_model("mobilenet_v3_small", pretrained=True)
    assert cached_files(hub_env) == [name]  # the file name torch hub expects, no .partial left
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert model.pretrained_weights.file_name == name
    assert model.default_cfg["crop"] == 224 and model.default_cfg["resize"] == 256
    # server stopped: the second load is from the cache, online or offline
    again = cnnzoo.create_model("mobilenet_v3_small", num_classes=7, pretrained="imagenet")
    assert again.classifier[-1].weight.shape == (7, 1024)  # a new head for fine-tuning, the rest loaded
    assert torch.equal(again.features[0][0].weight, sd["features.0.0.weight"])
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    offline = cnnzoo.create_model("mobilenet_v3_small", pretrained=True)
    assert torch.equal(offline.classifier[-1].weight, sd["classifier.3.weight"])


def test_wrong_hash_is_refused_and_nothing_cached(hub_env, monkeypatch):
    _, data, _ = weights_file("mobilenet_v3_small")
    name = "mobilenet_v3_small-00000000.pth"  # the name promises another file
    with serve({name: data}) as host:
        point_at(monkeypatch, "mobilenet_v3_small", f"{host}/{name}")
        with pytest.raises(CnnzooError, match="does not match its SHA-256 prefix 00000000") as e:
            cnnzoo.create_model("mobilenet_v3_small", pretrained=True)
    assert "\n" not in str(e.value) and "nothing was cached" in str(e.value)
    assert cached_files(hub_env) == []


def test_truncated_download_leaves_nothing_in_the_cache(hub_env, monkeypatch):
    _, data, name = weights_file("mobilenet_v3_small")
    with serve({name: data}, truncate=True) as host:
        point_at(monkeypatch, "mobilenet_v3_small", f"{host}/{name}")
        with pytest.raises(CnnzooError, match="nothing was cached") as e:
            cnnzoo.create_model("mobilenet_v3_small", pretrained=True)
    assert "\n" not in str(e.value)
    assert cached_files(hub_env) == []


def test_offline_and_no_network_messages_name_the_file_and_folder(hub_env, monkeypatch):
    pw = hub.published_weights("resnet50")
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    with pytest.raises(CnnzooError) as e:
        cnnzoo.create_model("resnet50", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg
    assert f"put {pw.file_name} (from {pw.url}) in {hub_env}/" in msg
    monkeypatch.delenv("CNNZOO_OFFLINE")
    with serve({}) as host:
        port = host.rsplit(":", 1)[1]
    point_at(monkeypatch, "resnet18", f"http://127.0.0.1:{port}/resnet18-f37072fd.pth")  # nobody listens
    with pytest.raises(CnnzooError, match="cannot download resnet18's weights") as e:
        cnnzoo.create_model("resnet18", pretrained=True)
    assert f"put resnet18-f37072fd.pth (from http://127.0.0.1:{port}/resnet18-f37072fd.pth) in {hub_env}/" \
        in str(e.value)
    assert cached_files(hub_env) == []


def test_unwritable_cache_is_one_line(hub_env, monkeypatch):
    hub_env.parent.mkdir(parents=True)
    hub_env.write_text("not a folder")  # works as root too, where permission bits do not stop writes
    with pytest.raises(CnnzooError, match="cannot write the weights cache .*set TORCH_HOME") as e:
        cnnzoo.create_model("resnet18", pretrained=True)
    assert "\n" not in str(e.value)


def test_corrupt_cached_file_says_delete_it(hub_env):
    pw = hub.published_weights("resnet18")
    hub_env.mkdir(parents=True)
    (hub_env / pw.file_name).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CnnzooError, match=f"do not match their SHA-256 {pw.sha256} .*: delete {hub_env}"):
        cnnzoo.create_model("resnet18", pretrained=True)  # checked before torch reads it


def test_bad_requests_are_one_line(hub_env, monkeypatch):
    with pytest.raises(CnnzooError, match="unknown pretrained tag 'imagenet21k' for resnet50: use imagenet .*"
                                          "IMAGENET1K_V1, IMAGENET1K_V2"):
        cnnzoo.create_model("resnet50", pretrained="imagenet21k")
    with pytest.raises(CnnzooError, match="resnet20_cifar has no published ImageNet weights"):
        cnnzoo.create_model("resnet20_cifar", pretrained=True)
    with pytest.raises(CnnzooError, match="has no published ImageNet weights"):
        cnnzoo.create_model("mobilenet_v1_050", pretrained=True)  # timm has the width, not its weights
    with pytest.raises(CnnzooError, match="3-channel"):
        cnnzoo.create_model("resnet18", in_chans=1, pretrained=True)
    with pytest.raises(CnnzooError, match="not found"):
        cnnzoo.create_model("resnet18", pretrained="/nonexistent/w.pth")  # a path goes to load_pretrained
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # timm not installed
    with pytest.raises(CnnzooError, match=r"resnet50d's published weights are timm's: pip install 'cnnzoo\[timm\]'"):
        cnnzoo.create_model("resnet50d", pretrained=True)
    assert hub.weights_row("resnet50d") == {"weights": "timm", "weights_tag": None, "imagenet_top1": None}


def test_cli_exit_2_on_a_bad_tag(capsys):
    from cnnzoo.cli import main

    assert main(["predict", "resnet18", "--pretrained", "nope", __file__]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnzoo predict: error: unknown pretrained tag 'nope'") and "\n" not in err


def test_every_torchvision_name_downloads_torchvisions_own_url_and_hash(hub_env, monkeypatch):
    assert len(TV_NAMES) >= 28
    calls: list[dict] = []

    def record(url, **kw):  # what cnnzoo asks torch hub for, then "no network"
        calls.append({"url": url, **kw})
        raise urllib.error.URLError("recorded")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", record)
    for name in TV_NAMES:
        w = get_model_weights(hub.weights_source(name)[1]).DEFAULT
        pw = hub.published_weights(name)
        assert (pw.url, pw.top1, pw.top5) == (w.url, w.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                                               w.meta["_metrics"]["ImageNet-1K"]["acc@5"])
        assert pw.categories == tuple(w.meta["categories"]) and len(pw.categories) == 1000
        t = w.transforms()
        assert (pw.resize, pw.crop, list(pw.mean), list(pw.std)) == (t.resize_size[0], t.crop_size[0], t.mean,
                                                                     t.std)
        with pytest.raises(CnnzooError, match="cannot download"):
            hub.published_state_dict(pw, progress=False)
        call = calls[-1]
        assert call["url"] == w.url and call["check_hash"] is True and call["weights_only"] is True
        assert call["file_name"] == Path(w.url).name and pw.sha256 and Path(w.url).name.endswith(
            f"-{pw.sha256}.pth")
        assert Path(call["model_dir"]) == hub_env
    assert len(calls) == len(TV_NAMES)


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_logits_equal_torchvisions_model_with_the_same_weights(hub_env, monkeypatch, name):
    _, data, file = weights_file(name, seed=1)
    with serve({file: data}) as host:
        point_at(monkeypatch, name, f"{host}/{file}")
        ours = cnnzoo.create_model(name, pretrained=True).eval()
    # torchvision's own builder with the same enum member: the file now comes from the shared cache
    theirs = torchvision.models.get_model(name, weights=get_model_weights(name).DEFAULT).eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_preprocessing_comes_from_the_weights_transforms():
    pw = hub.published_weights("resnet50")
    assert pw.tag == "IMAGENET1K_V2" and pw.top1 == pytest.approx(80.858)
    assert pw.preprocessing() == {"resize": 232, "crop": 224, "interpolation": "bilinear",
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    v1 = hub.published_weights("resnet50", "imagenet1k_v1")  # tags are torchvision's, any case
    assert v1.tag == "IMAGENET1K_V1" and v1.resize == 256 and v1.url.endswith("resnet50-0676ba61.pth")
    b5 = hub.published_weights("efficientnet_b5")
    assert (b5.resize, b5.crop, b5.interpolation) == (456, 456, "bicubic")
    d = hub.published_weights("resnet50d")  # timm: its pretrained config
    assert (d.source, d.tag, d.resize, d.crop, d.interpolation, d.top1) == ("timm", "ra2_in1k", 256, 224,
                                                                             "bicubic", None)
    assert d.categories[:2] == ("tench", "goldfish") and len(d.categories) == 1000
    assert hub.published_weights("mobilenet_v1").mean == (0.5, 0.5, 0.5)


def test_timm_weights_load_from_the_hugging_face_cache_offline(hub_env, monkeypatch, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    pw = hub.published_weights("resnet18d")
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    with pytest.raises(CnnzooError, match="not in the Hugging Face cache: .*hf download timm/resnet18d.ra2_in1k"):
        cnnzoo.create_model("resnet18d", pretrained=True)
    # the layout huggingface_hub writes: refs/main names the snapshot holding the file
    repo = tmp_path / "hf" / "models--timm--resnet18d.ra2_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in timm.create_model("resnet18d").state_dict().items()}
    save_file(sd, str(repo / "snapshots" / commit / "model.safetensors"))
    assert pw.cache_path == repo
    model = cnnzoo.create_model("resnet18d", pretrained=True).eval()
    assert torch.equal(model.conv1[0].weight, sd["conv1.0.weight"]) and torch.equal(model.fc.weight, sd["fc.weight"])
    assert model.default_cfg["interpolation"] == "bicubic"


@pytest.fixture
def cached_mobilenet(hub_env, monkeypatch) -> dict[str, torch.Tensor]:
    """torchvision's random mobilenet_v3_small in the torch hub cache under the name its own hash gives (the
    weights enum pointed at it), as a user who already downloaded it has it: loaded without any download."""
    sd, data, name = weights_file("mobilenet_v3_small", seed=2)
    point_at(monkeypatch, "mobilenet_v3_small", f"http://127.0.0.1:9/{name}")
    hub_env.mkdir(parents=True)
    (hub_env / name).write_bytes(data)
    return sd


def _images(folder: Path, n: int, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    for i in range(n):
        arr = torch.randint(0, 256, (260, 300, 3), dtype=torch.uint8, generator=rng).numpy()
        Image.fromarray(arr).save(folder / f"img{seed}_{i}.jpg")


def test_cli_predict_prints_imagenet_categories(cached_mobilenet, tmp_path, capsys, monkeypatch):
    from cnnzoo.cli import main

    monkeypatch.setenv("CNNZOO_OFFLINE", "1")  # the cached file is used as it is
    _images(tmp_path / "imgs", 2, seed=0)
    assert main(["predict", "mobilenet_v3_small", "--pretrained", "imagenet", str(tmp_path / "imgs"),
                 "--format", "json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    cats = hub.published_weights("mobilenet_v3_small").categories
    assert len(out) == 2 and all(p["label"] in cats and len(p["topk"]) == 3 for p in out)
    # the same as the model on torchvision's evaluation transform of the file
    from PIL import Image

    t = get_model_weights("mobilenet_v3_small").DEFAULT.transforms()
    theirs = torchvision.models.mobilenet_v3_small()
    theirs.load_state_dict(cached_mobilenet)
    x = torch.stack([t(Image.open(p["path"]).convert("RGB")) for p in out])
    with torch.no_grad():
        top = theirs.eval()(x).softmax(1).max(1)
    assert [p["label"] for p in out] == [cats[i] for i in top.indices.tolist()]
    assert [p["prob"] for p in out] == pytest.approx(top.values.tolist(), abs=0.02)  # PIL vs torch resizing


def test_cli_eval_pretrained_on_a_folder_of_imagenet_classes(cached_mobilenet, tmp_path, capsys, monkeypatch):
    from cnnzoo.cli import main

    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    for split in ("train", "test"):
        _images(tmp_path / "data" / split / "goldfish", 2, seed=1)
        _images(tmp_path / "data" / split / "Great_White_Shark", 2, seed=2)
    assert main(["eval", "mobilenet_v3_small", "--pretrained", "imagenet", "--dataset",
                 f"folder:{tmp_path / 'data'}", "--format", "json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 4 and r["img_size"] == 224 and len(r["classes"]) == 1000
    assert {c["class"]: c["support"] for c in r["per_class"] if c["support"]} == {"goldfish": 2,
                                                                                   "great white shark": 2}
    for split in ("train", "test"):
        for c in ("cat", "n01443537"):  # "cat" is no ImageNet-1k category; n01443537 is goldfish's WordNet id
            _images(tmp_path / "other" / split / c, 1, seed=3)
    assert main(["eval", "mobilenet_v3_small", "--pretrained", "imagenet", "--dataset",
                 f"folder:{tmp_path / 'other'}"]) == 2
    err = capsys.readouterr().err
    assert "class 'cat' (1 of 2 classes) is not one of the weights' 1000 categories" in err and err.count("\n") == 1


def test_pretrained_path_goes_through_load_pretrained(tmp_path):
    sd, data, _ = weights_file("mobilenet_v3_small", seed=3)
    (tmp_path / "w.pth").write_bytes(data)
    model = cnnzoo.create_model("mobilenet_v3_small", num_classes=5, pretrained=tmp_path / "w.pth")
    assert torch.equal(model.features[1].block[0][0].weight, sd["features.1.block.0.0.weight"])
    assert model.classifier[-1].weight.shape == (5, 1024) and not hasattr(model, "pretrained_weights")
    assert hub.parse_pretrained(str(tmp_path / "w.pth")) == ("path", str(tmp_path / "w.pth"))
    assert [hub.parse_pretrained(v) for v in (True, "ImageNet", "IMAGENET1K_V1", False, None)] == [
        ("tag", "imagenet"), ("tag", "imagenet"), ("tag", "IMAGENET1K_V1"), None, None]
    assert hub.build_kwargs("googlenet", True) == {"transform_input": True}  # as torchvision's builder
    assert hub.build_kwargs("googlenet", tmp_path / "w.pth") == {} and hub.build_kwargs("resnet18", True) == {}


def test_truncated_or_empty_timm_safetensors_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from cnnzoo.models import hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    repo = tmp_path / "hf" / "models--timm--resnet18d.ra2_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for data in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"):
        (snap / "model.safetensors").write_bytes(data)
        with pytest.raises(CnnzooError, match="unreadable") as e:
            cnnzoo.create_model("resnet18d", pretrained=True)
        assert "\n" not in str(e.value) and f"delete {snap / 'model.safetensors'}" in str(e.value)
    assert hub.published_weights("resnet18d").cache_path == repo
