"""The backend that must have detectron2's C++ ops has them (REQUIRE_DETECTRON2_C=1)."""

from __future__ import annotations

import pytest
from detectron2_ops_marks import REQUIRE_C


@pytest.mark.skipif(not REQUIRE_C, reason="only where REQUIRE_DETECTRON2_C=1 (.ci/run, official)")
def test_detectron2_c_imports():
    from detectron2 import _C

    assert _C.__file__.endswith(".so")
