"""Published ImageNet weights with one argument: ``create_model(name, pretrained=True)``.

The weights, their file names, hashes, preprocessing, class names and accuracies all come from the two
libraries that publish them, through their own loaders; cnnzoo holds no URL of its own:

- torchvision's weights enums (``torchvision.models.get_model_weights``) for every net torchvision has,
  fetched by ``torch.hub.load_state_dict_from_url`` with ``check_hash=True`` (the file name carries the
  SHA-256 prefix) into torch hub's cache, ``$TORCH_HOME/hub/checkpoints``: the folder torchvision itself
  uses, so weights a user already has are loaded without a download.
- timm's pretrained configs and loader for the nets only timm publishes (ResNet-C/D, MobileNetV1), cached
  by Hugging Face (``$HF_HOME/hub``). timm is an optional extra; without it those nets say so in one line.

The state_dict then goes through the model's ``convert_state_dict`` like any checkpoint file
(:func:`cnnzoo.models.pretrained.load_state_dict_into`). Every failure a user can meet (offline, no network,
hash mismatch, truncated download, unwritable cache, no published weights, unknown tag) is one
:class:`~cnnzoo.errors.CnnzooError` line. Nothing half-written reaches a cache: torch hub downloads to a
``.partial`` file that is renamed only after the hash matched (and removed otherwise), Hugging Face to an
``.incomplete`` blob.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import pickle
import sys
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CnnzooError
from .registry import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported; files without published cfg)

IMAGENET = "imagenet"  # the tag for each library's default ImageNet-1k weights

# Constructor arguments torchvision's builder sets when it loads published weights, so that ours computes
# the same function: GoogLeNet's weights were trained on inputs scaled to [-1, 1] (the original Inception
# preprocessing) and torchvision's ``googlenet(weights=...)`` turns ``transform_input`` on to map
# ImageNet-normalised input there.
_BUILD_KWARGS: dict[str, dict[str, Any]] = {"googlenet": {"transform_input": True}}


@dataclass(frozen=True)
class PublishedWeights:
    """One set of published ImageNet weights for a cnnzoo net, and the preprocessing they were scored with.

    ``resize``/``crop``: the evaluation transform (shorter side to ``resize``, centre ``crop`` x ``crop``);
    ``mean``/``std`` per RGB channel in [0, 1]; ``top1``/``top5`` the publisher's ImageNet-1k accuracy in
    % (timm's configs carry none: ``None``). ``sha256`` is the hash prefix torch hub checks (``None`` for
    Hugging Face files, which the hub client checks itself).
    """

    name: str  # cnnzoo model name
    source: str  # "torchvision" or "timm"
    ref: str  # torchvision builder name, or timm's "arch.tag"
    tag: str  # torchvision enum member (IMAGENET1K_V2) or timm tag (ra2_in1k)
    url: str
    file_name: str
    sha256: str | None
    top1: float | None
    top5: float | None
    categories: tuple[str, ...]
    resize: int
    crop: int
    interpolation: str  # "bilinear" or "bicubic"
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def cache_dir(self) -> Path:
        """The folder the weights are (or will be) cached in: torch hub's checkpoints, or Hugging Face's."""
        if self.source == "torchvision":
            return _torch_hub_dir()
        return _hf_cache_dir()

    @property
    def cache_path(self) -> Path:
        """The cached file (torchvision) or Hugging Face repo folder (timm) for these weights."""
        if self.source == "torchvision":
            return self.cache_dir / self.file_name
        return self.cache_dir / f"models--{_hf_repo(self).replace('/', '--')}"

    def preprocessing(self) -> dict[str, Any]:
        """What to store in a checkpoint and apply at eval/predict time, JSON-ready: ``resize``, ``crop``
        (the model's input size), ``interpolation``, ``mean``, ``std``."""
        return {"resize": self.resize, "crop": self.crop, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"] = list(self.categories)
        return d


def weights_source(name: str) -> tuple[str, str] | None:
    """``("torchvision", builder)`` or ``("timm", arch)`` for a net whose weights a library may publish,
    from its registry ``reference``; ``None`` for nets neither has (CIFAR variants, the papers' own)."""
    from .registry import model_info

    ref = model_info(name).reference
    if ref.startswith("torchvision.models."):
        return "torchvision", ref.removeprefix("torchvision.models.")
    parts = ref.split()
    if len(parts) == 2 and parts[0] == "timm" and parts[1].isidentifier():  # not "_gen_mobilenet_v1(0.25)"
        return "timm", parts[1]
    return None


def published_weights(name: str, tag: str = IMAGENET) -> PublishedWeights:
    """The published weights of ``name`` (``tag``: ``"imagenet"`` for the library's default, or one of its
    own tags such as ``"IMAGENET1K_V1"`` or ``"ra2_in1k"``). Reads only the libraries' tables: no network.
    Raises a one-line :class:`CnnzooError` for a net without published weights or an unknown tag."""
    from .registry import model_info

    info = model_info(name)
    src = weights_source(info.name)
    if src is None:
        raise CnnzooError(f"{info.name} has no published ImageNet weights (neither torchvision nor timm has "
                          f"this net): train it, or pass pretrained=PATH to a weights file of your own")
    if src[0] == "torchvision":
        return _torchvision_weights(info.name, src[1], tag)
    return _timm_weights(info.name, src[1], tag)


def weights_row(name: str) -> dict[str, Any]:
    """``{"weights": source or None, "weights_tag": ..., "imagenet_top1": ...}`` for ``cnnzoo list``; never
    raises (a timm net without timm installed shows its source with no tag)."""
    src = weights_source(name)
    if src is None:
        return {"weights": None, "weights_tag": None, "imagenet_top1": None}
    try:
        pw = published_weights(name)
    except CnnzooError:
        return {"weights": src[0] if src[0] == "timm" else None, "weights_tag": None, "imagenet_top1": None}
    return {"weights": pw.source, "weights_tag": pw.tag, "imagenet_top1": pw.top1}


def parse_pretrained(pretrained: bool | str | os.PathLike | None) -> tuple[str, str] | None:
    """``pretrained`` as ``("tag", tag)``, ``("path", path)`` or ``None`` (random weights).

    ``True``, ``"imagenet"`` and ``"true"`` are the default published weights; a string that names an
    existing file, contains a path separator or ends in a weights suffix is a file; any other string a
    library's own tag (checked by :func:`published_weights`)."""
    from ..training.config import pretrained_value

    if pretrained is True:
        return "tag", IMAGENET
    if isinstance(pretrained, os.PathLike):
        return "path", os.fspath(pretrained)
    if pretrained is not None and not isinstance(pretrained, str | bool):
        raise CnnzooError(f"pretrained must be True, 'imagenet', a tag or a weights file path "
                          f"(got {type(pretrained).__name__})")
    if pretrained_value(pretrained) is None:
        return None
    s = pretrained.strip()
    if s.lower() in ("true", "1", IMAGENET, "default"):
        return "tag", IMAGENET
    p = Path(s).expanduser()
    if p.is_dir():  # a run folder or its best/ or last/, as predict, eval and export take them
        from ..training.checkpoint import WEIGHTS, find_checkpoint

        return "path", str(find_checkpoint(p) / WEIGHTS)
    if p.exists() or "/" in s or os.sep in s or p.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors"):
        return "path", str(p)
    return "tag", s


def build_kwargs(name: str, pretrained: bool | str | os.PathLike | None) -> dict[str, Any]:
    """Constructor arguments the published weights need (GoogLeNet's ``transform_input``), for
    :func:`cnnzoo.create_model` to pass unless the caller gave them."""
    from .registry import model_info

    parsed = parse_pretrained(pretrained)
    if parsed is None or parsed[0] != "tag":
        return {}
    src = weights_source(model_info(name).name)
    return dict(_BUILD_KWARGS.get(src[1], {})) if src and src[0] == "torchvision" else {}


def load_weights(model: nn.Module, name: str, pretrained: bool | str | os.PathLike,
                 progress: bool = True) -> dict[str, Any]:
    """Load ``pretrained`` (a tag or a file, as :func:`parse_pretrained`) into ``model`` built as ``name``.

    Returns :func:`~cnnzoo.models.pretrained.load_state_dict_into`'s report plus ``"weights"``: the
    :class:`PublishedWeights` (``None`` for a file). A classifier of another class count is left fresh
    (fine-tuning). Published weights are also attached (:func:`attach_weights`).
    """
    from .pretrained import load_pretrained, load_state_dict_into

    parsed = parse_pretrained(pretrained)
    if parsed is None:
        return {"reset": [], "missing": [], "unexpected": [], "weights": None}
    kind, value = parsed
    if kind == "path":
        return {**load_pretrained(model, value), "weights": None}
    pw = published_weights(name, value)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != 3:
        raise CnnzooError(f"{pw.name}'s published weights take 3-channel (RGB) input but the model was built "
                          f"with in_chans={first.in_channels}: build it with in_chans=3 (grey images are "
                          f"repeated to 3 channels)")
    report = load_state_dict_into(model, published_state_dict(pw, progress=progress),
                                  origin=f"{pw.source} weights {pw.ref}.{pw.tag}")
    attach_weights(model, pw)
    return {**report, "weights": pw}


def attach_weights(model: nn.Module, pw: PublishedWeights) -> None:
    """Say on ``model`` which weights it holds: ``model.pretrained_weights`` and, merged into its
    ``pretrained_cfg`` (timm's place for them; ``default_cfg`` is the same dict), the weights' preprocessing
    and ``"pretrained"``."""
    model.pretrained_weights = pw  # type: ignore[attr-defined]
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):  # timm's keys for the weights' evaluation transform, and cnnzoo's resize/crop
        cfg.update({**pw.preprocessing(), "pretrained": f"{pw.source}:{pw.ref}.{pw.tag}",
                    "input_size": (cfg["input_size"][0], pw.crop, pw.crop), "crop_pct": round(pw.crop / pw.resize, 4),
                    "crop_mode": "center", "mean": tuple(pw.mean), "std": tuple(pw.std)})


def published_state_dict(pw: PublishedWeights, progress: bool = True) -> dict[str, Tensor]:
    """The published state_dict (library key names), from the cache or downloaded into it; a cached file is
    checked against its hash before it is read, and every tensor must be finite."""
    if pw.source == "torchvision":
        sd, path = _fetch_torch_hub(pw, progress), pw.cache_path
    else:
        sd, path = _fetch_timm(pw, progress)
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise CnnzooError(f"the cached weights {path} hold NaN or inf values (in {bad}): they are damaged; "
                          f"delete {path} and run again to download them afresh")
    return sd


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of cached files whose hash matched


def verify_cached(path: str | os.PathLike, sha256: str | None, url: str = "") -> None:
    """Check a cached weights file against the SHA-256 (or its first hex digits, as torchvision's file names
    carry them) before it is read: torch hub checks only while downloading, so a file altered, truncated or
    saved under another net's name since was used as it was. One line naming the file to delete."""
    import hashlib

    p = Path(path)
    if not sha256 or not p.is_file():
        return
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(sha256.lower()):
        raise CnnzooError(f"the cached weights {path} do not match their SHA-256 {sha256} (altered, truncated "
                          f"or another net's weights): delete {path} and run again to download "
                          f"{url or 'them'} afresh")
    _VERIFIED.add(key)


# --- using the weights: predict, eval ------------------------------------------------------------------

def imagenet_dataset(meta: dict[str, Any], dataset: str, split: str = "test",
                     data_dir: str | os.PathLike | None = None):  # -> cnnzoo.data.ImageSet
    """A labelled data set prepared as the weights in ``meta`` (:func:`pretrained_model`) were scored:
    shorter side to ``resize``, centre ``crop``, labels as indices into the weights' categories. Its class
    folders must be ImageNet categories (``tabby``, ``golden_retriever``), WordNet ids (``n02123045``,
    with timm installed) or class indices (``281``)."""
    from ..data import ImageSet, load_dataset
    from ..data.augment import center_crop

    data = load_dataset(dataset, split, data_dir, img_size=int(meta["data_img_size"]))
    crop = int(meta["img_size"])
    images = center_crop(data.images, crop) if data.img_size > crop else data.images
    cats = [str(c) for c in meta["classes"]]

    def key(s: str) -> str:
        return " ".join(s.lower().replace("_", " ").replace("-", " ").split())

    index = {key(c): i for i, c in enumerate(cats)}
    with contextlib.suppress(ImportError):
        from timm.data import ImageNetInfo

        if len(cats) == 1000:
            index.update({w: i for i, w in enumerate(ImageNetInfo("imagenet-1k").label_names())})
    index.update({str(i): i for i in range(len(cats))})
    mapped = [index.get(key(c), index.get(c)) for c in data.classes]
    missing = [c for c, m in zip(data.classes, mapped, strict=True) if m is None]
    if missing:
        raise CnnzooError(
            f"{data.name}'s class {missing[0]!r} ({len(missing)} of {len(mapped)} classes) is not one of the "
            f"weights' {len(cats)} categories: name class folders like {cats[0]!r} or by WordNet id, or fine-tune "
            f"on these classes with `cnnzoo train --pretrained imagenet`")
    import torch

    labels = torch.tensor(mapped, dtype=torch.long)[data.labels]
    return ImageSet(images=images, labels=labels, classes=cats, mean=tuple(meta["mean"]), std=tuple(meta["std"]),
                    name=data.name, split=data.split, hflip=data.hflip, source=data.source)


# --- torchvision ---------------------------------------------------------------------------------------

def _torch_hub_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"  # reads $TORCH_HOME at each call


def _torchvision_weights(name: str, builder: str, tag: str) -> PublishedWeights:
    import torch.hub
    from torchvision.models import get_model_weights

    enum = get_model_weights(builder)
    if tag.lower() == IMAGENET:
        w = enum.DEFAULT
    else:
        w = next((m for m in enum if m.name.lower() == tag.lower()), None)
        if w is None:
            raise CnnzooError(f"unknown pretrained tag {tag!r} for {name}: use imagenet (= torchvision's "
                              f"{enum.DEFAULT.name}), {', '.join(m.name for m in enum)} or a weights file path")
    t = w.transforms()  # torchvision's ImageClassification preset: the evaluation transform
    metrics = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
    file_name = os.path.basename(w.url.split("?")[0])
    h = torch.hub.HASH_REGEX.search(file_name)
    return PublishedWeights(
        name=name, source="torchvision", ref=builder, tag=w.name, url=w.url, file_name=file_name,
        sha256=h.group(1) if h else None, top1=metrics.get("acc@1"), top5=metrics.get("acc@5"),
        categories=tuple(w.meta.get("categories") or ()), resize=int(t.resize_size[0]),
        crop=int(t.crop_size[0]), interpolation=t.interpolation.value, mean=tuple(t.mean), std=tuple(t.std))


def _fetch_torch_hub(pw: PublishedWeights, progress: bool) -> dict[str, Tensor]:
    import torch.hub

    from ..utils.paths import downloads_allowed

    folder, path = pw.cache_dir, pw.cache_path
    put = f"put {pw.file_name} (from {pw.url}) in {folder}/"
    verify_cached(path, pw.sha256, pw.url)
    if not path.is_file() and not downloads_allowed():
        raise CnnzooError(f"offline ($CNNZOO_OFFLINE is set) and {pw.name}'s weights are not cached: {put}, "
                          f"or unset CNNZOO_OFFLINE")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torch hub prints "Downloading: ..." on stdout
            sd = torch.hub.load_state_dict_from_url(
                pw.url, model_dir=str(folder), map_location="cpu", progress=progress, check_hash=True,
                file_name=pw.file_name, weights_only=True)
    except urllib.error.URLError as e:
        raise CnnzooError(f"cannot download {pw.name}'s weights ({_reason(e)}): with no network, {put}") from e
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise CnnzooError(f"the download of {pw.url} broke off ({_reason(e)}); nothing was cached: run again, "
                          f"or {put}") from e
    except OSError as e:
        raise CnnzooError(f"cannot write the weights cache {folder} ({_reason(e)}): set TORCH_HOME to a "
                          f"writable folder, or {put}") from e
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise CnnzooError(f"the download of {pw.url} does not match its SHA-256 prefix {pw.sha256} "
                              f"(truncated or altered); nothing was cached: run again") from e
        raise _unreadable(pw, path, e) from e
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise _unreadable(pw, path, e) from e
    if not isinstance(sd, dict):
        raise _unreadable(pw, path, TypeError("no state_dict in it"))
    return sd


def _unreadable(pw: PublishedWeights, path: Path, e: BaseException) -> CnnzooError:
    return CnnzooError(f"the cached weights {path} are unreadable ({_reason(e)}): delete the file and run "
                       f"again to download {pw.file_name} afresh")


def _reason(e: BaseException) -> str:
    r = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(r).strip().splitlines()[0] if str(r).strip() else type(e).__name__


# --- timm ----------------------------------------------------------------------------------------------

def _need_timm(name: str):  # -> the timm module
    try:
        import timm
    except ImportError as e:
        raise CnnzooError(f"{name}'s published weights are timm's: pip install 'cnnzoo[timm]' (or pip install "
                          f"timm)") from e
    return timm


def _timm_weights(name: str, arch: str, tag: str) -> PublishedWeights:
    timm = _need_timm(name)
    from timm.models import get_pretrained_cfg

    tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*") if "." in t]
    in1k = [t for t in tags if t.endswith("in1k")]
    if not in1k:
        raise CnnzooError(f"{name} has no published ImageNet-1k weights (timm has none for {arch}): train it, "
                          f"or pass pretrained=PATH to a weights file of your own")
    if tag.lower() == IMAGENET:
        default = getattr(get_pretrained_cfg(arch), "tag", None)  # timm's own pretrained=True choice
        tag = default if default in in1k else in1k[0]
    elif tag not in tags:
        raise CnnzooError(f"unknown pretrained tag {tag!r} for {name}: use imagenet (= timm's "
                          f"{arch}.{in1k[0]}), {', '.join(tags)} or a weights file path")
    cfg = get_pretrained_cfg(f"{arch}.{tag}")
    crop = int(cfg.input_size[-1])
    resize = math.floor(crop / cfg.crop_pct)  # timm's eval transform: scale_size = floor(img_size / crop_pct)
    categories: tuple[str, ...] = ()
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(cfg)
        if subset:  # "tench, Tinca tinca" -> "tench", as torchvision names the same classes
            categories = tuple(d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions())
    except ImportError:  # an older timm without label info
        pass
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_url

        file_name = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
        url = hf_hub_url(cfg.hf_hub_id, file_name)
    else:
        url, file_name = cfg.url, os.path.basename(cfg.url)
    return PublishedWeights(
        name=name, source="timm", ref=arch, tag=tag, url=url, file_name=file_name, sha256=None, top1=None,
        top5=None, categories=categories, resize=resize, crop=crop, interpolation=str(cfg.interpolation),
        mean=tuple(float(m) for m in cfg.mean), std=tuple(float(s) for s in cfg.std))


def _hf_cache_dir() -> Path:
    """Hugging Face's hub cache, from the environment at call time (as ``huggingface_hub`` reads it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _hf_repo(pw: PublishedWeights) -> str:
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(f"{pw.ref}.{pw.tag}").hf_hub_id or f"timm/{pw.ref}.{pw.tag}"


def _is_hf(pw: PublishedWeights) -> bool:
    from timm.models import get_pretrained_cfg

    return bool(get_pretrained_cfg(f"{pw.ref}.{pw.tag}").hf_hub_id)


def _hf_cached_file(pw: PublishedWeights) -> str | None:
    """The weights file in the Hugging Face cache, if there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    repo = _hf_repo(pw)
    for f in dict.fromkeys((pw.file_name, "model.safetensors", "pytorch_model.bin")):
        hit = try_to_load_from_cache(repo, f, cache_dir=str(_hf_cache_dir()))
        if isinstance(hit, str):
            return hit
    return None


def _hf_blob_sha256(cached: str) -> str | None:
    """The SHA-256 a Hugging Face cache entry must have: its blob's name (large files are stored under the
    hash of their content), or None for a file stored under a git hash."""
    name = Path(os.path.realpath(cached)).name
    return name if len(name) == 64 and all(c in "0123456789abcdef" for c in name) else None


def _fetch_timm(pw: PublishedWeights, progress: bool) -> tuple[dict[str, Tensor], Path]:
    timm = _need_timm(pw.name)
    from safetensors import SafetensorError

    from ..utils.paths import downloads_allowed

    repo, folder = _hf_repo(pw), _hf_cache_dir()
    where = (f"on a machine with network run `hf download {repo}` and copy {pw.cache_path.name}/ into "
             f"{folder}/, or download {pw.url} and pass pretrained=PATH")
    overlay: dict[str, Any] = {}
    cached = _hf_cached_file(pw) if _is_hf(pw) else None
    if cached is not None:  # timm's loader reads the cached file itself: no network round trip
        verify_cached(cached, _hf_blob_sha256(cached), pw.url)
        overlay = {"file": cached, "source": ""}
    elif not downloads_allowed():
        raise CnnzooError(f"offline ($CNNZOO_OFFLINE is set) and {pw.name}'s weights are not in the Hugging "
                          f"Face cache: {where}")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            m = timm.create_model(f"{pw.ref}.{pw.tag}", pretrained=True, pretrained_cfg_overlay=overlay or None,
                                  cache_dir=str(folder) if _is_hf(pw) else None)
    except ImportError as e:
        raise CnnzooError(f"timm needs huggingface_hub to fetch {pw.ref}: pip install huggingface_hub") from e
    except OSError as e:  # requests' and Hugging Face's errors are OSErrors
        raise CnnzooError(f"cannot fetch {pw.name}'s weights from Hugging Face ({_reason(e)}): {where}") from e
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, SafetensorError) as e:
        bad = cached or pw.cache_path
        raise CnnzooError(f"the cached weights for {pw.ref}.{pw.tag} are unreadable ({_reason(e)}): "
                          f"delete {bad} and run again") from e
    return m.state_dict(), Path(cached or pw.cache_path)
