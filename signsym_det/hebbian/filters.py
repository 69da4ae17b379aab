"""A PNG grid of learned filters: each filter an RGB tile, scaled by its own largest |w|.

Tile = 0.5 + w / (2 max|w|) per filter (grey is 0, the filter's extremes are black/white or
saturated colours), as in Krotov & Hopfield's figures. Needs matplotlib (imported here only).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor


def filter_tiles(filters: Tensor) -> Tensor:
    """(n, 3, h, w) filters -> (n, h, w, 3) RGB tiles in [0, 1], each scaled by its max |w|."""
    if filters.dim() != 4 or filters.shape[1] != 3:
        raise ValueError(f"filters must be (n, 3, h, w) RGB filters, got {tuple(filters.shape)}")
    filters = filters.detach().float().cpu()
    largest = filters.abs().flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny)
    return (0.5 + filters / (2 * largest[:, None, None, None])).permute(0, 2, 3, 1)


def direction_groups(filters: Tensor, cosine: float = 0.95) -> list[int]:
    """Sizes (largest first) of the groups of filters pointing the same way: greedily, the
    lowest-index filter left and every filter left whose cosine with it exceeds ``cosine``.
    64 distinct filters give 64 ones; a bank collapsed onto one direction gives [64]."""
    flat = filters.detach().float().flatten(1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    similar = (unit @ unit.T) > cosine
    left, sizes = torch.ones(len(flat), dtype=torch.bool), []
    while left.any():
        first = int(left.nonzero()[0])
        group = left & (similar[first] | (torch.arange(len(flat)) == first))
        sizes.append(int(group.sum()))
        left &= ~group
    return sorted(sizes, reverse=True)


def save_filter_grid(filters: Tensor, path: str | os.PathLike, title: str = "") -> str:
    """Draw the (n, 3, h, w) ``filters`` as a near-square grid of RGB tiles into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiles = filter_tiles(filters)
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.8, rows * 0.8 + 0.4))
    for index, axis in enumerate(axes.flat if hasattr(axes, "flat") else [axes]):
        axis.axis("off")
        if index < len(tiles):
            axis.imshow(tiles[index].numpy(), interpolation="nearest")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.1, hspace=0.1)
    if title:
        figure.suptitle(title, fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return os.fspath(path)
