"""Multi-process training on CPU: DistributedDataParallel for CPU models and a fair share of
the cores per process.

detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]``, which torch's DDP
refuses for a module on the CPU (it wants ``device_ids=None`` there); this one gives DDP
``device_ids=None`` for a CPU model and is detectron2's otherwise. ``launch`` (detectron2 main,
or v0.6 with this project's install patch) starts the workers with gloo without CUDA.
"""

from __future__ import annotations

import contextlib
import os

import detectron2.engine.defaults as d2_defaults
import torch
from detectron2.utils import comm

_d2_create_ddp_model = d2_defaults.create_ddp_model


def create_ddp_model(model: torch.nn.Module, **kwargs):
    """detectron2's ``create_ddp_model(model, **kwargs)``; a model whose parameters are on the
    CPU gets ``device_ids=None`` (unless given), as DDP requires for CPU modules."""
    if comm.get_world_size() > 1 and "device_ids" not in kwargs:
        if all(p.device.type == "cpu" for p in model.parameters()):
            kwargs["device_ids"] = None
    return _d2_create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def cpu_aware_ddp():
    """Within the block, detectron2's ``DefaultTrainer.__init__`` (which calls the module-level
    ``create_ddp_model`` of ``detectron2.engine.defaults``) wraps with :func:`create_ddp_model`."""
    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = _d2_create_ddp_model


def share_cpu_threads(device: str, processes: int) -> int:
    """On the CPU, give each of a machine's ``processes`` cores / processes intra-op threads
    (``torch.set_num_threads``) unless ``OMP_NUM_THREADS`` sets them; return the count."""
    if device == "cpu" and processes > 1 and not os.environ.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // processes))
    return torch.get_num_threads()
