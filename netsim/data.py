"""Image sources for workloads and training: bundled photos, image folders, CIFAR-10.

Images are float32 tensors [N, 3, H, W] in [0, 1]. Paths may use ~ and environment variables.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Colour photos bundled with scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel",
                  "hubble_deep_field", "retina", "cat")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


class DataError(ValueError):
    """Image data that cannot be read; one-line message naming the path."""


def expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path))))


def to_tensor(img: Image.Image | np.ndarray, hw: tuple[int, int] | None) -> torch.Tensor:
    """RGB image -> float [3, H, W] in [0, 1]; with hw, centre-crop to the aspect ratio then resize."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img = img.convert("RGB")
    if hw is not None:
        h, w = hw
        src_w, src_h = img.size
        scale = min(src_w / w, src_h / h)
        cw, ch = round(w * scale), round(h * scale)
        left, top = (src_w - cw) // 2, (src_h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
        if img.size != (w, h):
            img = img.resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def skimage_photos(hw: tuple[int, int] | None, count: int, offset: int = 0) -> tuple[torch.Tensor, list[str]]:
    import skimage.data

    names = [SKIMAGE_PHOTOS[(offset + i) % len(SKIMAGE_PHOTOS)] for i in range(min(count, len(SKIMAGE_PHOTOS)))]
    images = [to_tensor(getattr(skimage.data, n)()[..., :3], hw) for n in names]
    return torch.stack(images), [f"skimage:{n}" for n in names]


def list_image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def folder_images(root: str | Path, hw: tuple[int, int] | None, count: int, offset: int = 0,
                  landscape: bool = False):
    """Images ``offset .. offset+count`` of a folder tree (sorted paths); ``landscape`` turns portrait
    images a quarter turn before the crop and resize."""
    root = expand(root)
    files = list_image_files(root)[offset:offset + count]
    if not files:
        raise DataError(f"{root}: offset {offset} is past the last image")
    images = []
    for f in files:
        try:
            with Image.open(f) as img:
                if landscape and img.height > img.width:
                    img = img.transpose(Image.Transpose.ROTATE_90)
                images.append(to_tensor(img, hw))
        except OSError as err:
            raise DataError(f"{f}: cannot read image: {err}") from None
    return torch.stack(images), [str(f.relative_to(root)) for f in files]


def cifar10_files(root: str | Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """CIFAR-10 as an ImageFolder tree: ROOT/{train,test}/<class>/*.jpg|png. Returns files, labels, classes."""
    base = expand(root) / split
    if not base.is_dir():
        raise DataError(f"{base}: no CIFAR-10 '{split}' folder (expected ROOT/{split}/<class>/*.jpg)")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((base / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise DataError(f"{base}: no images in class folders")
    return files, labels, classes


def cifar10_images(root: str | Path, split: str, count: int, offset: int = 0, hw=None,
                   split_file: str | Path | None = None):
    """Images ``offset .. offset+count`` of a CIFAR-10 part: the ``split`` set ("train"/"test"), or
    with ``split_file`` (``netsim train split``) its ``split`` list, which indexes the training
    images followed by the test images. At the native 32x32 the decoded-image cache of
    ``netsim.train.datasets.load_cifar10`` is used (fast for thousands of images)."""
    from netsim.train.datasets import load_cifar10, load_split

    native = hw is None or tuple(hw) == (32, 32)
    pools: dict = {}

    def pool(part: str):
        """The part: its decoded images (native size, cached on disk) or its files (to resize)."""
        if part not in pools:
            pools[part] = load_cifar10(root, part, progress=False) if native else cifar10_files(root, part)[0]
        return pools[part]

    if split_file is None:
        chosen = [(split, i) for i in range(offset, min(offset + count, len(pool(split))))]
    else:
        parts = load_split(split_file)
        if split not in parts:
            raise DataError(f"{split_file}: no {split!r} list (has {', '.join(parts)})")
        n_train = len(pool("train"))
        chosen = [("train", i) if i < n_train else ("test", i - n_train) for i in parts[split][offset:offset + count]]
    if not chosen:
        raise DataError(f"{root}: offset {offset} is past the last {split} image")
    for s, i in chosen:
        if not 0 <= i < len(pool(s)):
            raise DataError(f"{split_file}: index {i} is outside the {len(pool(s))} CIFAR-10 {s} images")
    if native:
        images = torch.stack([pool(s).images[i] for s, i in chosen]).float().div_(255.0)
        return images, [pool(s).names[i] for s, i in chosen]
    files = [pool(s)[i] for s, i in chosen]
    images = []
    for f in files:
        with Image.open(f) as img:
            images.append(to_tensor(img, hw))
    return torch.stack(images), [f"cifar10/{f.parent.parent.name}/{f.parent.name}/{f.name}" for f in files]


def image_labels(ids: list[str]) -> list[str] | None:
    """Class names of workload images when their ids carry one (CIFAR-10 and folder trees with class
    subfolders: the parent folder); None for the scikit-image photos and flat folders."""
    parents = [Path(i).parent.name for i in ids]
    if any(i.startswith("skimage:") for i in ids) or not all(parents):
        return None
    return parents


def load_workload_images(spec) -> tuple[torch.Tensor, list[str]]:
    """Images for a flow's workload (``netsim.scenario.ImageSource``)."""
    hw = spec.hw
    if spec.source == "skimage":
        return skimage_photos(hw, spec.count, spec.offset)
    if spec.source == "folder":
        return folder_images(spec.path, hw, spec.count, spec.offset, spec.landscape)
    return cifar10_images(spec.path, spec.split, spec.count, spec.offset, hw, spec.split_file)
