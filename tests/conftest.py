"""Fixtures and policies shared by all test folders.

One-thread policy: tests in ``ONE_THREAD_FOLDERS`` run torch on one thread (an autouse
fixture below; any test may also ask for ``one_torch_thread``). On a shared 2-core machine
two OpenMP threads contending with other jobs make small convolutions tens of times slower.
Subprocesses started by tests set ``OMP_NUM_THREADS`` themselves. Under pytest-xdist (`make test`
runs one worker per core) every worker runs torch on one thread unless ``OMP_NUM_THREADS`` says
otherwise: two workers of two threads each on two cores would contend the same way.
"""

import os
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
ONE_THREAD_FOLDERS = ("checkpoint", "classification", "reliability")


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread for the test, then restore the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread_policy(request):
    """Apply ``one_torch_thread`` to every test under ``tests/<ONE_THREAD_FOLDERS>``."""
    relative = Path(request.node.path).relative_to(TESTS)
    if relative.parts[0] in ONE_THREAD_FOLDERS:
        request.getfixturevalue("one_torch_thread")
