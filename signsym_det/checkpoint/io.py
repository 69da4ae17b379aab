"""Checkpoint files: atomic writes and weights-only reads.

Our files hold only tensors and plain Python values (dict/list/str/int/float/bool/None), so
``torch.load(path, weights_only=True)`` reads them: :func:`atomic_save` checks the object
(:func:`check_plain`) before writing it; :class:`AtomicLocalWrites` (a checkpointer's path
manager) checks the written file (:func:`check_weights_only`) before putting it in place.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import tempfile
import zipfile
from contextlib import contextmanager

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
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return os.fspath(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> str:
    """Write ``text`` to a temporary file next to ``path``, then os.replace it into place."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return os.fspath(path)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", check=None):
    """A file for writing ``path``, opened at a temporary name next to it; on a clean exit
    it is synced to disk, checked (``check(temporary path)``, if given) and os.replace'd into
    place. A failure leaves ``path`` as it was and no temporary file; a kill leaves ``path``
    as it was (and the temporary file: see :class:`AtomicLocalWrites`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), dir=directory)
    try:
        with os.fdopen(handle, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


class AtomicLocalWrites:
    """A path manager (iopath's interface) whose writes to local files are atomic
    (:func:`atomic_open`; a binary file must be readable weights-only, else TypeError and
    nothing is written); reads, URLs and everything else are ``path_manager``'s.

    Opening ``path`` for writing first removes the temporary files of earlier writes of
    ``path`` that were killed (one writer per file, as a checkpointer).
    """

    def __init__(self, path_manager):
        self.path_manager = path_manager

    def open(self, path, mode: str = "r", **kwargs):
        if "w" not in mode or "://" in str(path):
            return self.path_manager.open(path, mode, **kwargs)
        stale = os.path.join(os.path.dirname(path), _temporary_prefix(path))
        for name in glob.glob(glob.escape(stale) + "*"):
            os.remove(name)
        check = (lambda tmp: check_weights_only(tmp, path)) if "b" in mode else None
        return atomic_open(path, mode, check)

    def __getattr__(self, name):  # exists, ls, isfile, rm, get_local_path, ...
        return getattr(self.path_manager, name)


def check_weights_only(path: str | os.PathLike, name: str | os.PathLike | None = None) -> None:
    """TypeError naming ``name`` (default ``path``) unless torch.load(weights_only=True) reads
    the file at ``path`` (tensor storages are memory-mapped, not read)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise TypeError(
            f"{name or path}: not saved: it {_refused(error)}; checkpoints hold only tensors "
            "and plain values so that torch.load(..., weights_only=True) reads them"
        ) from None


def _refused(error: pickle.UnpicklingError) -> str:
    """What in a file the weights-only reader refused, from its error."""
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL:? (\S+)", str(error))
    detail = re.search(r"(Unsupported operand \d+)", str(error))
    if found:
        return f"references the global {found.group(1)}"
    if detail:
        return f"is pickle data the weights-only reader refuses ({detail.group(1)})"
    return "references Python objects"


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
        raise UnsafeCheckpointError(
            f"{path}: refused to load: it {_refused(error)}, not just tensors and plain "
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
