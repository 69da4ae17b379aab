"""Top-k accuracy: counts per batch and a (sharded, all-reduced) pass over a loader."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from detectron2.utils import comm


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list:
    """Number of samples whose target is among the k largest logits, for each k."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top.eq(target[:, None])
    return [float(hits[:, : min(k, k_max)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model, loader, device, amp: bool = False) -> dict:
    """{"top1", "top5" (percent), "loss", "count"} over the loader, summed over processes."""
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # correct@1, correct@5, loss sum, count
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16) if amp else nullcontext():
            logits = model(images)
        top1, top5 = topk_correct(logits, target)
        loss = float(F.cross_entropy(logits.float(), target, reduction="sum"))
        sums = [a + b for a, b in zip(sums, (top1, top5, loss, len(target)))]
    top1, top5, loss, count = (sum(column) for column in zip(*comm.all_gather(sums)))
    model.train()
    count = max(count, 1.0)
    return {
        "top1": 100 * top1 / count,
        "top5": 100 * top5 / count,
        "loss": loss / count,
        "count": int(count),
    }
