"""Training and evaluation data: CIFAR-10 (ImageFolder tree or torchvision batches), folders of
images with random crops, scikit-image's bundled photos; seeded splits; batched augmentations.

Every dataset here is a ``torch.utils.data.Dataset`` of ``(S, label)`` with ``S`` float
``[3, H, W]`` in [0, 1] and ``label`` an int (-1 when the data has no labels). The training
loops do not go through a DataLoader: they call ``ds.batch(indices, generator)``, which returns
``(S float [B,3,H,W], labels long [B])`` in one go (one indexing op for the in-memory CIFAR
cache), with all randomness (random crops) drawn from the caller's ``torch.Generator``.

CIFAR-10 is decoded once into a uint8 tensor ``[N, 3, 32, 32]`` (150 MB for the 50k training
images) and cached as ``.npy`` under ``$NETSIM_CACHE`` (default ``~/.cache/netsim``), keyed by
the dataset path, the split and a hash of the file list, so later runs start at once.

Augmentations (``weak_augment``, ``strong_augment``) are batched tensor ops on any device,
seeded by a ``torch.Generator`` on that device; the global RNGs are never used.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from netsim.data import (SKIMAGE_PHOTOS, DataError, cifar10_files, expand, list_image_files,
                         to_tensor)

__all__ = [
    "DATASETS", "CIFAR10_CLASSES", "cache_dir", "TensorImages", "FolderImages", "load_cifar10",
    "skimage_dataset", "make_split", "save_split", "load_split", "DataSpec", "load_data",
    "weak_augment", "strong_augment",
]

DATASETS = ("cifar10", "folder", "skimage")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


def cache_dir() -> Path:
    """Where decoded datasets are cached: $NETSIM_CACHE, else ~/.cache/netsim."""
    return expand(os.environ.get("NETSIM_CACHE") or "~/.cache/netsim")


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _decode_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read image: {err}") from None


# ------------------------------------------------------------------------------ datasets

class TensorImages(Dataset):
    """Equal-sized images held in memory: ``images`` uint8 ``[N,3,H,W]``, ``labels`` long ``[N]``.

    ``source`` describes where they came from (for model cards); ``names`` optional ids.
    """

    def __init__(self, images: Tensor, labels: Tensor | None = None, source: dict | None = None,
                 names: list[str] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N,3,H,W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = (torch.full((len(images),), -1, dtype=torch.long) if labels is None
                       else torch.as_tensor(labels, dtype=torch.long))
        if len(self.labels) != len(images):
            raise ValueError("images and labels differ in length")
        self.source = dict(source or {})
        self.names = names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float().div_(255.0), int(self.labels[i])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def batch(self, indices: Tensor, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        """(S float [B,3,H,W] in [0,1] on ``device``, labels long [B]) for ``indices`` (no randomness)."""
        indices = indices.to(self.images.device)
        x = self.images[indices].to(device, non_blocking=True)
        return x.float().div_(255.0), self.labels[indices].to(device)

    def to(self, device: str | torch.device) -> "TensorImages":
        """The same images and labels on ``device`` (e.g. the whole uint8 cache on a GPU)."""
        return TensorImages(self.images.to(device), self.labels.to(device), self.source, self.names)

    def subset(self, indices: Sequence[int] | Tensor, **source) -> "TensorImages":
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        names = [self.names[i] for i in idx.tolist()] if self.names else None
        return TensorImages(self.images[idx], self.labels[idx], {**self.source, **source}, names)

    def limit(self, n: int | None) -> "TensorImages":
        """The first ``n`` images (all when ``n`` is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return self.subset(range(n), limit=n)

    @staticmethod
    def concat(parts: Sequence["TensorImages"], **source) -> "TensorImages":
        names = sum((p.names or [] for p in parts), []) or None
        return TensorImages(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                            {**parts[0].source, **source}, names)


class FolderImages(Dataset):
    """Any folder of images (searched recursively), cropped to ``size`` x ``size``.

    ``train=True``: a uniformly random crop per image per draw (images smaller than ``size`` are
    first upscaled so that their short side equals ``size``); ``train=False``: the centre crop.
    ``cache=True`` keeps the decoded uint8 images in memory (Kodak, BSDS: a few hundred MB at
    most); set it False for large collections (NUS-WIDE), which are then decoded per batch
    on ``workers`` threads. Label is -1.
    """

    def __init__(self, root: str | os.PathLike, size: int = 256, train: bool = True,
                 cache: bool = True, workers: int = 0, limit: int | None = None):
        self.root = expand(root)
        self.files = list_image_files(self.root)[:limit]
        self.size, self.train, self.workers = int(size), train, workers
        self._cache: dict[int, Tensor] | None = {} if cache else None
        self.labels = torch.full((len(self.files),), -1, dtype=torch.long)
        self.source = {"dataset": "folder", "path": str(self.root), "images": len(self.files),
                       "crop": self.size, "crop_mode": "random" if train else "centre"}

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.size, self.size)

    def _load(self, i: int) -> Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        arr = _decode_rgb(self.files[i])
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
        h, w = img.shape[-2:]
        if min(h, w) < self.size:  # upscale so that a size x size crop fits
            s = self.size / min(h, w)
            img = F.interpolate(img[None].float(), size=(max(self.size, round(h * s)), max(self.size, round(w * s))),
                                mode="bicubic", align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        if self._cache is not None:
            self._cache[i] = img
        return img

    def _crop(self, img: Tensor, u: tuple[float, float] | None) -> Tensor:
        h, w = img.shape[-2:]
        if u is None:
            top, left = (h - self.size) // 2, (w - self.size) // 2
        else:
            top, left = int(u[0] * (h - self.size + 1)), int(u[1] * (w - self.size + 1))
        return img[:, top:top + self.size, left:left + self.size]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        # Map-style access gives the centre crop; random crops come from ``batch`` (seeded).
        return self._crop(self._load(i), None).float().div_(255.0), -1

    def batch(self, indices: Tensor, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        idx = [int(i) for i in indices]
        if self.train:
            if generator is None:
                raise ValueError("random crops need a torch.Generator")
            us = torch.rand(len(idx), 2, generator=generator).tolist()
        else:
            us = [None] * len(idx)
        if self.workers > 1 and self._cache is None:
            with ThreadPoolExecutor(self.workers) as pool:
                imgs = list(pool.map(self._load, idx))
        else:
            imgs = [self._load(i) for i in idx]
        S = torch.stack([self._crop(img, u) for img, u in zip(imgs, us)]).to(device)
        return S.float().div_(255.0), self.labels[indices].to(device)

    def subset(self, indices: Sequence[int] | Tensor, **source) -> "FolderImages":
        new = object.__new__(FolderImages)
        new.__dict__.update(self.__dict__)
        idx = [int(i) for i in torch.as_tensor(indices, dtype=torch.long)]
        new.files = [self.files[i] for i in idx]
        new.labels = self.labels[idx]
        new._cache = {} if self._cache is not None else None
        new.source = {**self.source, "images": len(idx), **source}
        return new

    def limit(self, n: int | None) -> "FolderImages":
        return self if n is None or n >= len(self) else self.subset(range(n), limit=n)

    def with_mode(self, train: bool) -> "FolderImages":
        new = self.subset(range(len(self)))
        new._cache = self._cache  # share decoded images
        new.train = train
        new.source = {**self.source, "crop_mode": "random" if train else "centre"}
        return new


def _file_list_key(root: Path, split: str, files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(str(root.resolve()).encode())
    h.update(split.encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0".encode())
    return h.hexdigest()[:20]


def _cifar_imagefolder(root: Path, split: str, workers: int, progress: bool) -> TensorImages:
    files, labels, classes = cifar10_files(root, split)
    key = _file_list_key(root, split, files)
    cache = cache_dir() / f"cifar10-{split}-{key}.npy"
    arr = None
    if cache.is_file():
        try:
            arr = np.load(cache, allow_pickle=False)
            if arr.shape != (len(files), 3, 32, 32) or arr.dtype != np.uint8:
                arr = None
        except (OSError, ValueError):
            arr = None
    if arr is None:
        from tqdm import tqdm

        arr = np.empty((len(files), 3, 32, 32), dtype=np.uint8)

        def work(i: int) -> int:
            img = _decode_rgb(files[i])
            if img.shape != (32, 32, 3):
                raise DataError(f"{files[i]}: CIFAR-10 images are 32x32, got {img.shape[1]}x{img.shape[0]}")
            arr[i] = img.transpose(2, 0, 1)
            return i

        with ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1)) as pool, \
                tqdm(total=len(files), desc=f"decoding cifar10/{split}", unit="img", disable=not progress,
                     leave=False) as bar:
            for _ in pool.map(work, range(len(files)), chunksize=256):
                bar.update()
        try:
            _atomic_save_npy(cache, arr)
        except OSError:
            pass  # a read-only cache is not fatal
    source = {"dataset": "cifar10", "layout": "imagefolder", "path": str(root), "split": split,
              "format": files[0].suffix.lstrip(".").lower(), "classes": classes}
    names = [f"cifar10/{split}/{f.parent.name}/{f.name}" for f in files]
    return TensorImages(torch.from_numpy(arr), torch.tensor(labels), source, names)


def _cifar_torchvision(root: Path, split: str) -> TensorImages:
    import torchvision

    # torchvision's CIFAR10 reads the official python batches (pickles from the user's own
    # download of the dataset); its md5 check runs first.
    try:
        ds = torchvision.datasets.CIFAR10(str(root), train=(split == "train"), download=False)
    except RuntimeError as err:
        raise DataError(f"{root}: {err}") from None
    arr = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    source = {"dataset": "cifar10", "layout": "torchvision", "path": str(root), "split": split,
              "format": "batches-py", "classes": list(ds.classes)}
    names = [f"cifar10/{split}/{i}" for i in range(len(arr))]
    return TensorImages(arr, torch.tensor(ds.targets), source, names)


def load_cifar10(root: str | os.PathLike, split: str = "train", workers: int = 0,
                 progress: bool = True) -> TensorImages:
    """CIFAR-10 ``split`` ("train" or "test") from ROOT/{train,test}/<class>/*.jpg|png (ImageFolder,
    like ../shared/data/cifar10) or from ROOT/cifar-10-batches-py (torchvision; ROOT may also be
    that folder itself)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = expand(root)
    if not root.is_dir():
        raise DataError(f"{root}: CIFAR-10 folder not found")
    if (root / split).is_dir():
        return _cifar_imagefolder(root, split, workers, progress)
    if (root / "cifar-10-batches-py").is_dir():
        return _cifar_torchvision(root, split)
    if root.name == "cifar-10-batches-py":
        return _cifar_torchvision(root.parent, split)
    raise DataError(f"{root}: not a CIFAR-10 folder (expected {split}/<class>/*.jpg or cifar-10-batches-py/)")


def skimage_dataset(size: int = 32) -> TensorImages:
    """scikit-image's bundled colour photos, centre-cropped and resized to ``size`` x ``size``.

    Each photo is its own class (labels 0..8), so that DHD can be trained on them in smoke tests.
    """
    import skimage.data

    imgs = [to_tensor(getattr(skimage.data, n)()[..., :3], (size, size)) for n in SKIMAGE_PHOTOS]
    arr = (torch.stack(imgs) * 255).round().to(torch.uint8)
    return TensorImages(arr, torch.arange(len(imgs)), {"dataset": "skimage", "size": size, "images": len(imgs)},
                        [f"skimage:{n}" for n in SKIMAGE_PHOTOS])


# ------------------------------------------------------------------------------ splits

def make_split(n_total: int, sizes: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Disjoint random index lists: a seeded permutation of range(n_total) cut into consecutive
    parts of ``sizes`` (in dict order). Indices inside each part are sorted.

    ``make_split(60000, {"train": 9450, "val": 1050, "test": 2100}, seed=0)``.
    """
    sizes = {k: int(v) for k, v in sizes.items()}
    if any(v < 0 for v in sizes.values()):
        raise ValueError(f"split sizes must be non-negative, got {sizes}")
    if sum(sizes.values()) > n_total:
        raise ValueError(f"split sizes {sizes} add up to {sum(sizes.values())} > {n_total} items")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n_total, generator=g)
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = sorted(perm[start:start + n].tolist())
        start += n
    return out


def save_split(split: dict[str, list[int]], path: str | os.PathLike, **meta) -> None:
    """Write ``{"meta": {...}, "indices": {name: [...]}}`` as JSON (atomically)."""
    from netsim.results import write_json

    write_json({"meta": meta, "indices": {k: [int(i) for i in v] for k, v in split.items()}}, expand(path))


def load_split(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read a split written by ``save_split`` (or a plain ``{name: [indices]}`` JSON object)."""
    p = expand(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{p}: cannot read split file: {err}") from None
    data = data.get("indices", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{p}: a split file maps names to lists of indices")
    try:
        return {str(k): [int(i) for i in v] for k, v in data.items()}
    except (TypeError, ValueError):
        raise DataError(f"{p}: split indices must be integers") from None


# ------------------------------------------------------------------------------ data spec

@dataclass
class DataSpec:
    """Which images train, validate and test a model.

    dataset "cifar10": ``path`` is the CIFAR-10 root. Without ``split``: train = the training
    split less ``val_size`` images held out at random (seeded by ``split_seed``), val = those,
    test = the test split. With ``split`` (JSON from ``save_split``): lists "train", "val" and
    optionally "test" index the 60,000 images of train (0..49,999) followed by test (50,000..).
    dataset "folder": ``path`` a folder of images (random ``crop`` crops for training, centre
    crops for val/test), ``val_size`` images held out (seeded), test = val; or ``test_path`` a
    separate folder. dataset "skimage": the bundled photos at ``crop`` x ``crop`` for all three.
    ``limit`` caps every part (tests, smoke runs).
    """

    dataset: str = "cifar10"
    path: str | None = None
    val_size: int = 1000
    split: str | None = None
    split_seed: int = 0
    limit: int | None = None
    crop: int = 32
    test_path: str | None = None
    workers: int = 0
    cache: bool = True
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        d = {"dataset": self.dataset, "path": self.path, "val_size": self.val_size, "split": self.split,
             "split_seed": self.split_seed, "limit": self.limit}
        if self.dataset != "cifar10":
            d["crop"] = self.crop
        if self.test_path:
            d["test_path"] = self.test_path
        return d


def load_data(spec: DataSpec, parts: Sequence[str] = ("train", "val", "test")) -> dict:
    """The datasets of ``spec`` by part name ("train", "val", "test"), each with ``.batch``."""
    if spec.dataset not in DATASETS:
        raise DataError(f"unknown dataset {spec.dataset!r}; known: {', '.join(DATASETS)}")
    if spec.dataset == "skimage":
        ds = _limit(skimage_dataset(spec.crop), spec)
        return {p: ds for p in parts}
    if spec.path is None:
        raise DataError(f"dataset {spec.dataset!r} needs a data path (--data)")
    if spec.dataset == "folder":
        return _folder_parts(spec, parts)
    return _cifar_parts(spec, parts)


def _limit(ds, spec: DataSpec):
    """At most ``spec.limit`` images of ``ds``: a seeded random subset (seed ``split_seed``), kept
    in dataset order, so that a limited CIFAR-10 still has every class."""
    if spec.limit is None or spec.limit >= len(ds):
        return ds
    idx = make_split(len(ds), {"limit": spec.limit}, spec.split_seed)["limit"]
    return ds.subset(idx, limit=spec.limit)


def _held_out(n: int, val_size: int, seed: int) -> tuple[list[int], list[int]]:
    if val_size >= n:
        raise DataError(f"val_size {val_size} leaves no training images out of {n}")
    s = make_split(n, {"val": val_size}, seed)
    val = set(s["val"])
    return [i for i in range(n) if i not in val], s["val"]


def _cifar_parts(spec: DataSpec, parts: Sequence[str]) -> dict:
    out = {}
    need_train = any(p in parts for p in ("train", "val")) or spec.split is not None
    train = load_cifar10(spec.path, "train", spec.workers, spec.progress) if need_train else None
    need_test = "test" in parts or spec.split is not None
    test = load_cifar10(spec.path, "test", spec.workers, spec.progress) if need_test else None
    if spec.split:
        pool = TensorImages.concat([train, test])
        split = load_split(spec.split)
        for p in parts:
            key = p if p in split else ("val" if p == "test" and "val" in split else None)
            if key is None:
                raise DataError(f"{spec.split}: no {p!r} list in the split file")
            idx = split[key]
            if idx and (min(idx) < 0 or max(idx) >= len(pool)):
                raise DataError(f"{spec.split}: {key} indices outside 0..{len(pool) - 1}")
            out[p] = _limit(pool.subset(idx, split=spec.split, part=key, images=len(idx)), spec)
        return out
    if "train" in parts or "val" in parts:
        tr, va = _held_out(len(train), spec.val_size, spec.split_seed) if spec.val_size else (
            list(range(len(train))), [])
        if "train" in parts:
            out["train"] = _limit(train.subset(tr, part="train", held_out=spec.val_size,
                                        split_seed=spec.split_seed), spec)
        if "val" in parts:
            if va:
                out["val"] = _limit(train.subset(va, part="val", split_seed=spec.split_seed), spec)
            else:  # no held-out images: validate on the test split
                test = test or load_cifar10(spec.path, "test", spec.workers, spec.progress)
                out["val"] = _limit(test, spec)
    if "test" in parts:
        out["test"] = _limit(test, spec)
    return out


def _folder_parts(spec: DataSpec, parts: Sequence[str]) -> dict:
    base = FolderImages(spec.path, spec.crop, train=True, cache=spec.cache, workers=spec.workers)
    out = {}
    if spec.val_size and len(base) > spec.val_size:
        tr, va = _held_out(len(base), spec.val_size, spec.split_seed)
    else:  # too few images to hold any out: validate on (centre crops of) the training images
        tr, va = list(range(len(base))), list(range(len(base)))
    if "train" in parts:
        out["train"] = _limit(base.subset(tr, part="train"), spec)
    if "val" in parts:
        out["val"] = _limit(base.subset(va, part="val").with_mode(False), spec)
    if "test" in parts:
        if spec.test_path:
            out["test"] = _limit(FolderImages(spec.test_path, spec.crop, train=False, cache=spec.cache,
                                              workers=spec.workers), spec)
        else:
            out["test"] = _limit(base.subset(va, part="val").with_mode(False), spec)
    return out


# ------------------------------------------------------------------------------ augmentations

def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _bshape(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def random_crop_flip(S: Tensor, g: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop of the original size from the zero-padded image, then a random horizontal flip.

    S float [B,C,H,W]; g a generator on S's device. Returns float [B,C,H,W].
    """
    B, C, H, W = S.shape
    dev = S.device
    off = torch.randint(0, 2 * pad + 1, (2, B), generator=g, device=dev)
    flip = torch.rand(B, generator=g, device=dev) < 0.5
    padded = F.pad(S, (pad, pad, pad, pad))
    rows = off[0][:, None] + torch.arange(H, device=dev)  # [B, H]
    cols = off[1][:, None] + torch.arange(W, device=dev)  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    b = torch.arange(B, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # [B,H,W,C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_resized_crop_flip(S: Tensor, g: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """Random area fraction in ``scale`` and aspect ratio in ``ratio`` (log-uniform), resized back to
    H x W with bilinear sampling; random horizontal flip. One affine grid_sample for the batch."""
    B, C, H, W = S.shape
    dev = S.device
    area = _uniform(B, *scale, g, dev)
    logr = _uniform(B, math.log(ratio[0]), math.log(ratio[1]), g, dev)
    r = torch.exp(logr)
    sw = torch.sqrt(area * r).clamp(max=1.0)  # width fraction
    sh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(B, generator=g, device=dev) * 2 - 1) * (1 - sw)
    cy = (torch.rand(B, generator=g, device=dev) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(B, generator=g, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev, dtype=S.dtype)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (B, C, H, W), align_corners=False)
    return F.grid_sample(S, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


_GRAY = (0.299, 0.587, 0.114)


def _gray(S: Tensor) -> Tensor:
    w = torch.tensor(_GRAY, device=S.device, dtype=S.dtype).view(1, 3, 1, 1)
    return (S * w).sum(1, keepdim=True)


def color_jitter(S: Tensor, g: torch.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, p: float = 0.8) -> Tensor:
    """Per image with probability ``p``: brightness, contrast, saturation factors in [1-x, 1+x]
    and a hue rotation of up to ``hue`` turns (a rotation about the grey axis in YIQ space).
    Fixed order; output clamped to [0, 1]."""
    B = S.shape[0]
    dev = S.device
    apply = _bshape(torch.rand(B, generator=g, device=dev) < p)
    b = _bshape(_uniform(B, 1 - brightness, 1 + brightness, g, dev))
    c = _bshape(_uniform(B, 1 - contrast, 1 + contrast, g, dev))
    s = _bshape(_uniform(B, 1 - saturation, 1 + saturation, g, dev))
    h = _uniform(B, -hue, hue, g, dev) * (2 * math.pi)
    out = (S * b).clamp(0, 1)
    mean = _gray(out).mean(dim=(2, 3), keepdim=True)
    out = ((out - mean) * c + mean).clamp(0, 1)
    gray = _gray(out)
    out = ((out - gray) * s + gray).clamp(0, 1)
    # hue: RGB -> YIQ, rotate (I, Q) by h, back
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                       device=dev, dtype=S.dtype)
    rgb = torch.linalg.inv(yiq)
    cos, sin = torch.cos(h), torch.sin(h)
    rot = torch.zeros(B, 3, 3, device=dev, dtype=S.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    M = rgb @ rot @ yiq  # [B,3,3]
    out = torch.einsum("bij,bjhw->bihw", M, out).clamp(0, 1)
    return torch.where(apply, out, S)


def random_grayscale(S: Tensor, g: torch.Generator, p: float = 0.2) -> Tensor:
    apply = _bshape(torch.rand(S.shape[0], generator=g, device=S.device) < p)
    return torch.where(apply, _gray(S).expand_as(S), S)


def random_erasing(S: Tensor, g: torch.Generator, p: float = 0.25, scale=(0.02, 0.2)) -> Tensor:
    """Per image with probability ``p`` set a random rectangle (area fraction in ``scale``,
    aspect ratio 1/3..3) to uniform noise drawn from ``g``."""
    B, C, H, W = S.shape
    dev = S.device
    apply = torch.rand(B, generator=g, device=dev) < p
    area = _uniform(B, *scale, g, dev) * H * W
    r = torch.exp(_uniform(B, math.log(1 / 3), math.log(3), g, dev))
    eh = torch.sqrt(area * r).clamp(1, H)
    ew = torch.sqrt(area / r).clamp(1, W)
    top = torch.rand(B, generator=g, device=dev) * (H - eh)
    left = torch.rand(B, generator=g, device=dev) * (W - ew)
    ys = torch.arange(H, device=dev).view(1, H, 1)
    xs = torch.arange(W, device=dev).view(1, 1, W)
    mask = ((ys >= top.view(B, 1, 1)) & (ys < (top + eh).view(B, 1, 1))
            & (xs >= left.view(B, 1, 1)) & (xs < (left + ew).view(B, 1, 1)) & apply.view(B, 1, 1))
    noise = torch.rand(S.shape, generator=g, device=dev, dtype=S.dtype)
    return torch.where(mask[:, None], noise, S)


def weak_augment(S: Tensor, g: torch.Generator) -> Tensor:
    """DHD teacher view: random crop with 4-pixel zero padding + horizontal flip."""
    return random_crop_flip(S, g, pad=4)


def strong_augment(S: Tensor, g: torch.Generator) -> Tensor:
    """DHD student view: random resized crop (area 0.5..1) + flip, colour jitter (p 0.8:
    brightness/contrast/saturation 0.4, hue 0.1), grayscale (p 0.2), random erasing (p 0.25)."""
    S = random_resized_crop_flip(S, g)
    S = color_jitter(S, g)
    S = random_grayscale(S, g)
    return random_erasing(S, g)
