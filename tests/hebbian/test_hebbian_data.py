"""Decoded-once images: the same tensors as torchvision's per-item transform, a cache file that
is reused only for the same files and size, and unit-p-norm rows."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from signsym_det.classification.data import IMAGENET_MEAN, IMAGENET_STD
from signsym_det.engine.hebbian_data import UnlabelledImages, decoded_images, image_files
from signsym_det.pretrain_hebbian import unit_rows


@pytest.fixture
def folder(tmp_path):
    """Five RGB images of different sizes (non-square: resize and crop both act)."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(20, 30), (24, 24), (40, 18), (17, 17), (33, 21)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    return tmp_path


def torchvision_items(root, size):
    """What the per-item torchvision pipeline (resize, crop, ToTensor, Normalize) gives."""
    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    items = []
    for path in image_files(root):
        with Image.open(path) as image:
            items.append(transform(image.convert("RGB")))
    return torch.stack(items)


def test_items_equal_the_torchvision_transform(folder):
    dataset = UnlabelledImages(folder, 16)
    items = torch.stack([dataset[i] for i in range(len(dataset))])
    torch.testing.assert_close(items, torchvision_items(folder, 16), rtol=0, atol=1e-6)


def test_the_cache_is_reused_for_the_same_files_and_size_only(folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "train.pt"
    files = image_files(folder)
    first = decoded_images(files, folder, 16, cache)
    assert cache.is_file() and first.dtype == torch.uint8 and first.shape == (5, 3, 16, 16)
    # a cache file with other contents under the same files and size is read, not redone
    saved = torch.load(cache, weights_only=True)
    torch.save({**saved, "images": torch.zeros_like(first)}, cache)
    assert not decoded_images(files, folder, 16, cache).any()
    # another size or file list: decoded again (and the cache rewritten)
    assert decoded_images(files, folder, 12, cache).shape == (5, 3, 12, 12)
    assert torch.equal(decoded_images(files[:3], folder, 16, cache), first[:3])


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_unit_rows_scales_every_unit_to_unit_p_norm(p):
    weight = torch.randn(6, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    scaled = unit_rows(weight, p)
    norms = weight.flatten(1).abs().pow(p).sum(1).pow(1 / p)
    for unit in range(6):
        torch.testing.assert_close(scaled[unit], weight[unit] / norms[unit])
        assert scaled[unit].abs().pow(p).sum().item() == pytest.approx(1.0, rel=1e-5)
