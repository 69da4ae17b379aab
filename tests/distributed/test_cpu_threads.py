"""share_cpu_threads: cores / processes intra-op threads per process on the CPU."""

import pytest
import torch

from signsym_det.engine import distributed


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("processes, expected", [(2, 2), (3, 1), (8, 1)])
def test_each_process_gets_its_share_of_the_cores(four_cores, processes, expected):
    assert distributed.share_cpu_threads("cpu", processes) == expected == torch.get_num_threads()


def test_threads_are_left_alone_for_one_process_cuda_or_omp(four_cores, monkeypatch):
    assert distributed.share_cpu_threads("cpu", 1) == 3
    assert distributed.share_cpu_threads("cuda", 2) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert distributed.share_cpu_threads("cpu", 2) == 3


def test_one_process_model_is_not_wrapped():
    model = torch.nn.Linear(2, 2)
    assert distributed.create_ddp_model(model, broadcast_buffers=False) is model
