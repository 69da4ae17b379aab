"""Peak memory of one step, measured so that variants in ONE process are comparable.

peak = state + growth, where

* ``state``: bytes of the tensors the variant holds between steps: parameters and their
  gradients, buffers, optimizer state, tensors a module keeps in its attributes (rule state,
  caches) and the input batch (storages counted once);
* ``growth``: the largest rise above the start of the step of the bytes held in tensors
  during the step: activations saved for backward, temporaries, new gradients. On CPU it is
  read from torch.profiler's allocation events (every allocation and free of torch's CPU
  allocator, replayed in time order); on CUDA it is ``max_memory_allocated`` minus
  ``memory_allocated`` at the start.

Neither counts the process's code, the allocator's cached or fragmented pages, nor the
scratch memory of libraries that bypass torch's allocator (oneDNN, BLAS): the same for every
variant, and the part a learning rule could change is exactly the tensors.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

MEMORY_MEANING = {
    "cpu": (
        "peak tensor bytes = state between steps (params, grads, buffers, optimizer and rule "
        "state, input) + largest rise during one step, from torch.profiler allocation events "
        "of torch's CPU allocator; not RSS"
    ),
    "cuda": (
        "peak tensor bytes = state between steps + (torch.cuda.max_memory_allocated - "
        "memory_allocated at the step's start); not reserved/cached memory"
    ),
}


def _tensors_in(value, depth: int = 0) -> Iterable[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif depth < 3 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item, depth + 1)
    elif depth < 3 and hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
        for item in vars(value).values():
            yield from _tensors_in(item, depth + 1)


def held_tensors(model: nn.Module, optimizer=None, extra=()) -> Iterable[Tensor]:
    """Every tensor held by ``model`` (with grads), ``optimizer``'s state and ``extra``."""
    for module in model.modules():
        for name, value in vars(module).items():
            if name not in ("_modules", "_forward_pre_hooks", "_forward_hooks"):
                yield from _tensors_in(value)
    for parameter in model.parameters():
        if parameter.grad is not None:
            yield parameter.grad
    if optimizer is not None:
        for state in optimizer.state.values():
            yield from _tensors_in(state)
    yield from _tensors_in(list(extra))


def storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[(tensor.device, storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def _marker(index: int) -> str:
    return f"signsym_det.benchmark.step{index}"


def cpu_growth(step: Callable[[], object], state: Callable[[], int]) -> tuple[int, int]:
    """(state bytes, peak rise) of torch CPU tensors over the second of two calls of ``step``.

    The profiler sees no free of a block allocated before it started, so the first call
    only brings every block the measured call frees into view; ``state()`` is read between
    the two calls.
    """
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with record_function(_marker(0)):
            step()
        held = state()
        with record_function(_marker(1)):
            step()
    events = prof.profiler.kineto_results.events()
    window = [e for e in events if e.name() == _marker(1)]
    if len(window) != 1:
        raise RuntimeError("torch.profiler recorded no window for the measured step")
    begin, end = window[0].start_ns(), window[0].end_ns()
    allocations = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    level = 0
    peak = None
    for time_ns, nbytes in allocations:
        if time_ns > end:
            break
        if time_ns >= begin and peak is None:
            peak = start = level
        level += nbytes
        if peak is not None:
            peak = max(peak, level)
    return held, (0 if peak is None else peak - start)


def cuda_growth(step: Callable[[], object], state: Callable[[], int]) -> tuple[int, int]:
    """(state bytes, peak rise) of memory allocated on the current CUDA device by ``step()``."""
    torch.cuda.synchronize()
    held = state()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return held, torch.cuda.max_memory_allocated() - start


def peak_memory(step, model, optimizer=None, extra=(), device: str = "cpu") -> dict:
    """``{"peak", "state", "growth"}`` in bytes for one call of ``step`` (see the module doc)."""
    measure = cuda_growth if str(device).startswith("cuda") else cpu_growth
    state, growth = measure(step, lambda: storage_bytes(held_tensors(model, optimizer, extra)))
    return {"peak": state + growth, "state": state, "growth": growth}
