"""Checkpoint files: atomic writes and weights-only reads.

Our files hold only tensors and plain Python values (dict/list/str/int/float/bool/None), so
``torch.load(path, weights_only=True)`` reads them; :func:`check_plain` enforces that before
anything is written.
"""

from __future__ import annotations

import os
import tempfile

import torch

PLAIN_TYPES = (str, int, float, bool, type(None))


def check_plain(obj, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value that is not a tensor or a plain Python value."""
    if isinstance(obj, (torch.Tensor, *PLAIN_TYPES)):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}")
            check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            check_plain(value, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__name__}; checkpoints hold only tensors and plain values "
        "so that torch.load(..., weights_only=True) reads them"
    )


def atomic_save(obj: dict, path: str | os.PathLike) -> str:
    """torch.save ``obj`` to a temporary file next to ``path``, then os.replace it into place."""
    check_plain(obj)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_weights_only(path: str | os.PathLike) -> dict:
    """``torch.load(path, map_location="cpu", weights_only=True)``."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
