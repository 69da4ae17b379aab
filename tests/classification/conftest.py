"""Tests here run torch on one thread: on a shared 2-core machine two OpenMP threads
contending with other jobs make small convolutions tens of times slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
