"""Checkpoint files: atomic writes and weights-only reads.

Our files hold only tensors and plain Python values (dict/list/str/int/float/bool/None), so
``torch.load(path, weights_only=True)`` reads them; :func:`check_plain` enforces that before
anything is written.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile

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

    def write(f):
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())

    return _atomic_write(path, "wb", write)


def _atomic_write(path: str | os.PathLike, mode: str, write) -> str:
    """``write(file)`` into a temporary file next to ``path``, then os.replace it into place;
    a failure (or kill) leaves ``path`` as it was and no temporary file behind."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(handle, mode) as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(text: str, path: str | os.PathLike) -> str:
    """Write ``text`` to a temporary file next to ``path``, then os.replace it into place."""
    return _atomic_write(path, "w", lambda f: f.write(text))


class CheckpointReadError(ValueError):
    """A checkpoint file that is truncated, corrupt or not a PyTorch file at all."""


class UnsafeCheckpointError(CheckpointReadError):
    """A checkpoint holding Python objects whose unpickling could run arbitrary code."""


def load_weights_only(path: str | os.PathLike) -> dict:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Raises FileNotFoundError (no such file), :class:`UnsafeCheckpointError` (the file holds
    objects other than tensors and plain values: refused, nothing of it is executed) or
    :class:`CheckpointReadError` (truncated, corrupt, or not a PyTorch file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise CheckpointReadError(_unreadable(path, error)) from None
        found = re.search(r"(?:Unsupported|unsupported) GLOBAL:? (\S+)", str(error))
        detail = re.search(r"(Unsupported operand \d+)", str(error))
        what = (
            f"references the global {found.group(1)}"
            if found
            else f"is pickle data the weights-only reader refuses ({detail.group(1)})"
            if detail
            else "references Python objects"
        )
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it {what}, not just tensors and plain "
            "values, and unpickling it could execute arbitrary code (torch.load "
            "weights_only=True). Do not load it with weights_only=False unless you trust "
            "its source; re-save trusted weights as a plain state dict."
        ) from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointReadError(_unreadable(path, error)) from None


def _unreadable(path: str, error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0][:160]
    return (
        f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format; "
        f"{type(error).__name__}: {first or 'unexpected end of file'})"
    )
