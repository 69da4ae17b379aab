"""Summaries of a learned filter bank."""

import torch

from signsym_det.hebbian.filters import direction_groups


def test_direction_groups_counts_filters_pointing_the_same_way():
    generator = torch.Generator().manual_seed(0)
    distinct = torch.linalg.qr(torch.randn(12, 12, generator=generator))[0][:5]  # orthonormal
    assert direction_groups(distinct.view(5, 3, 2, 2)) == [1, 1, 1, 1, 1]
    copies = torch.cat([distinct[:1] * 3.0, distinct[:1] * 0.5, distinct[1:2], distinct[:1]])
    copies[1] += 0.01 * distinct[2]  # nearly the same direction: still a copy
    assert direction_groups(copies.view(4, 3, 2, 2)) == [3, 1]
    assert direction_groups(-distinct[:1].expand(4, 12).reshape(4, 3, 2, 2)) == [4]
