"""Write a generated directory (a dataset) so that readers only ever see a complete one.

The new content is built in a temporary sibling of the target, then swapped in by rename.
An existing target is replaced only if it is empty or one of ours (``is_ours``), and only
once the new content is complete: a write that fails leaves the old directory as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def check_replaceable(
    out_dir: str | os.PathLike, is_ours: Callable[[Path], bool], what: str
) -> None:
    """Refuse (FileExistsError) a target that is a file, or a non-empty directory that
    ``is_ours`` does not recognise as a previously generated ``what``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_ours(out):
        raise FileExistsError(
            f"{out} exists, is not empty and is not a generated {what}: refusing to overwrite "
            "it (choose another directory)"
        )


def write_dir_atomically(
    out_dir: str | os.PathLike,
    write: Callable[[Path], T],
    is_ours: Callable[[Path], bool],
    what: str,
) -> T:
    """``write(tmp)`` fills a fresh temporary sibling of ``out_dir``, which then replaces
    ``out_dir`` (see :func:`check_replaceable`); returns what ``write`` returned.

    Nothing of ``out_dir`` changes before ``write`` has returned; if it raises, the
    temporary directory is removed and the exception propagates.
    """
    out = Path(out_dir).absolute()
    check_replaceable(out, is_ours, what)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a dataset is ordinary data
    old = None
    try:
        result = write(tmp)
        check_replaceable(out, is_ours, what)  # something may have appeared meanwhile
        if out.is_dir() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "data")
        try:
            os.replace(tmp, out)  # also onto an empty directory
        except OSError:
            if old is not None:
                os.replace(old / "data", out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return result
