"""Fixtures and policies shared by all test folders.

One-thread policy: tests in ``ONE_THREAD_FOLDERS`` run torch on one thread (an autouse
fixture below; any test may also ask for ``one_torch_thread``). On a shared 2-core machine
two OpenMP threads contending with other jobs make small convolutions tens of times slower.
Subprocesses started by tests set ``OMP_NUM_THREADS`` themselves. Under pytest-xdist (`make test`
runs one worker per core) every worker runs torch on one thread unless ``OMP_NUM_THREADS`` says
otherwise: two workers of two threads each on two cores would contend the same way.

Dataset policy: a dataset a test registers in detectron2's catalogs (e.g. ``shapes_train`` under
a temporary $DETECTRON2_DATASETS) is forgotten after the test, so a later test in the same
process registers it afresh instead of meeting the old paths.
"""

import os
import sys
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


def _dataset_catalogs():
    """detectron2's (DatasetCatalog, MetadataCatalog) if the test process imported them."""
    catalog = sys.modules.get("detectron2.data.catalog")
    return (catalog.DatasetCatalog, catalog.MetadataCatalog) if catalog else (None, None)


@pytest.fixture(autouse=True)
def _forget_datasets_registered_by_the_test():
    datasets, _ = _dataset_catalogs()
    before = set(datasets.list()) if datasets else set()
    yield
    datasets, metadata = _dataset_catalogs()
    for name in set(datasets.list()) - before if datasets else ():
        datasets.remove(name)
        metadata.remove(name)
