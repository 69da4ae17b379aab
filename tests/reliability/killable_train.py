"""tools/train_net.py that SIGKILLs itself while writing a checkpoint (for the tests only).

``KILL_AT_SAVE=N``: the N-th ``torch.save`` of the process writes half of its bytes to the
file, flushes them, and then the process sends itself SIGKILL: no handler, no cleanup,
as when a job is killed by a scheduler or the OOM killer mid-write.
"""

import io
import os
import runpy
import signal
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[2]
KILL_AT = int(os.environ["KILL_AT_SAVE"])
_save = torch.save
_calls = 0


def dying_save(obj, f, *args, **kwargs):
    """torch.save, except that call number KILL_AT dies half-way through writing."""
    global _calls
    _calls += 1
    if _calls != KILL_AT:
        return _save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    _save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    return None


if __name__ == "__main__":
    torch.save = dying_save
    script = str(ROOT / "tools" / "train_net.py")
    sys.argv = [script, *sys.argv[1:]]
    runpy.run_path(script, run_name="__main__")
