"""torch.distributed for pretraining: one process per GPU (or CPU process), started by torchrun.

``torchrun --nnodes N --nproc-per-node G tools/pretrain_net.py ...`` sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous; a plain ``python`` start is a single process. Backend: nccl
on CUDA, gloo on CPU (detectron2's ``launch`` spawns CUDA workers only). Once joined, ranks
and collectives come from ``detectron2.utils.comm``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick the GPU."""
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
