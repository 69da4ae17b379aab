"""Fixtures shared by all test folders."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread: on a shared 2-core machine two OpenMP threads contending with
    other jobs make small convolutions tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
