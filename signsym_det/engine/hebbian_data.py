"""Unlabelled images for Hebbian pretraining: every image file under a folder, no classes.

Images are read in sorted order of their path relative to the folder; folder names are never
read (an ImageNet-layout ``train/<class>/`` tree is just a tree of images). Each image:
resize the short side to ``size``, centre crop, ToTensor, ImageNet mean/std (RGB), i.e. what
the detectors here feed their stem (PIXEL_MEAN/STD on 0-255) and pretraining's val transform.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from ..classification.data import IMAGENET_MEAN, IMAGENET_STD

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


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


def image_transform(size: int):
    """PIL image -> normalised (3, size, size) tensor (see the module doc)."""
    return transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class UnlabelledImages(Dataset):
    """Item i: image i of :func:`image_files` as a normalised (3, size, size) tensor."""

    def __init__(self, root: str | Path, size: int):
        self.root, self.files = Path(root), image_files(root)
        self.transform = image_transform(size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB"))
