"""Unlabelled images for Hebbian pretraining: every image file under a folder, no classes.

Images are read in sorted order of their path relative to the folder; folder names are never
read (an ImageNet-layout ``train/<class>/`` tree is just a tree of images). Each image:
resize the short side to ``size``, centre crop, ToTensor, ImageNet mean/std (RGB), i.e. what
the detectors here feed their stem (PIXEL_MEAN/STD on 0-255) and pretraining's val transform.

Decoding is done once: all images are held as one uint8 (n, 3, size, size) tensor (after the
resize and crop), optionally cached in a weights-only file that records the relative file
list and the size, and reused only when both match; normalisation is applied per item.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms.functional import pil_to_tensor

from ..checkpoint import atomic_save
from ..classification.data import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")
logger = logging.getLogger(__name__)


def image_files(root: str | Path) -> list[Path]:
    """The image files under ``root`` (recursively), sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    files = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


def resize_crop(size: int):
    """PIL image -> PIL image: short side resized to ``size``, centre crop to size x size."""
    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> float, x / 255 then ImageNet mean/std (= ToTensor+Normalize)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (images.float() / 255 - mean) / std


def decoded_images(
    files: Sequence[Path], root: Path, size: int, cache: Optional[str | os.PathLike] = None
) -> torch.Tensor:
    """The uint8 (n, 3, size, size) images of ``files`` (resized, cropped), read from
    ``cache`` when it holds these files (relative to ``root``) at this size, else decoded
    (and written to ``cache`` if given)."""
    names = [Path(f).relative_to(root).as_posix() for f in files]
    if cache is not None and Path(cache).is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["files"] == names and saved["size"] == size:
            return saved["images"]
        logger.info(f"image cache {cache} holds other files or size: decoding again")
    prepare = resize_crop(size)
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for index, path in enumerate(files):
        with Image.open(path) as image:
            images[index] = pil_to_tensor(prepare(image.convert("RGB")))
    if cache is not None:
        atomic_save({"files": names, "size": size, "images": images}, cache)
        logger.info(f"wrote image cache {cache}: {len(files)} images of {size} px")
    return images


class UnlabelledImages(Dataset):
    """Item i: image i of :func:`image_files` as a normalised (3, size, size) tensor; decoded
    once (see :func:`decoded_images`; ``cache``: its file, optional)."""

    def __init__(self, root: str | Path, size: int, cache: Optional[str | os.PathLike] = None):
        self.root, self.files = Path(root), image_files(root)
        self.images = decoded_images(self.files, self.root, size, cache)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return normalise(self.images[index])
