"""Tests here run torch on one thread: on a shared 2-core machine two OpenMP threads
contending with other jobs make small convolutions tens of times slower."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (tests/conftest.py)."""
