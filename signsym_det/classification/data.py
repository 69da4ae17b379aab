"""ImageFolder data for pretraining: the standard transforms and a resumable sharded sampler.

Train: RandomResizedCrop(size, scale=(min_scale, 1)) + horizontal flip; val: resize the
short side to size * 256/224, center crop; both ToTensor + ImageNet mean/std (RGB), the
normalisation detectron2 configs here use (PIXEL_MEAN/STD on 0-255).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Sampler
from torchvision import datasets, transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transforms(train: bool, size: int, min_scale: float = 0.08):
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(min_scale, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    return transforms.Compose(
        [
            transforms.Resize(round(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            normalize,
        ]
    )


class ShardedEpochSampler(Sampler):
    """Indices of one epoch for one process, from a given batch on.

    Epoch e is the permutation drawn from (seed, e) (or 0..n-1 if not shuffled), cut to a
    multiple of ``world_size * batch_size`` (train; ``drop_last``) or kept whole (val);
    process r takes every world_size-th index starting at r. ``set_epoch(e, start_batch)``
    skips the first ``start_batch`` batches without reading them (resume mid-epoch).
    """

    def __init__(
        self, size, batch_size, *, rank=0, world_size=1, shuffle=True, seed=0, drop_last=True
    ):
        self.size, self.batch_size = int(size), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch, self.start_batch = 0, 0

    def batches_per_epoch(self) -> int:
        per_rank = self.size // self.world_size
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-len(range(self.rank, self.size, self.world_size)) // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def _indices(self) -> list:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.drop_last:
            order = order[: self.batches_per_epoch() * self.batch_size * self.world_size]
        return order[self.rank :: self.world_size][self.start_batch * self.batch_size :]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def image_folder(root: str, split: str, train: bool, size: int, min_scale: float = 0.08):
    """``torchvision.datasets.ImageFolder(root/split)`` with the transforms above."""
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path} not found: --data must hold train/ and val/ with one folder per class "
            "(ImageNet layout); --make-dataset generates the embedded shapes set"
        )
    return datasets.ImageFolder(path, build_transforms(train, size, min_scale))


def build_loader(dataset, sampler: ShardedEpochSampler, workers: int, pin_memory: bool):
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=sampler.drop_last,
        persistent_workers=False,
    )
