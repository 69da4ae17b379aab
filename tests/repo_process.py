"""Run the repository's scripts in a subprocess, as a user would (shared by all test folders;
importable by name because tests/ is on sys.path through its conftest.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run_python(env, *args, timeout=300):
    """``python <args>`` in the repo root; the CompletedProcess (output as text)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
