"""skipif marks for tests of detectron2's compiled ops, which only some builds have.

The official detectron2 (docs/install.md) has ``detectron2._C``; the offline v0.6 build has
not. ``REQUIRE_DETECTRON2_C=1`` (set by .ci/run on the official backend) makes these tests run
anyway, so a missing op is a failure there instead of a silent skip.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_C = os.environ.get("REQUIRE_DETECTRON2_C") == "1"


def has_detectron2_c() -> bool:
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def deform_conv_builds() -> bool:
    """detectron2's DeformConv is a real layer here (official builds without _C replace it
    with a stand-in whose constructor raises ImportError)."""
    from detectron2.layers import DeformConv

    try:
        DeformConv(1, 1, 1)
    except ImportError:
        return False
    return True


WHY = "; REQUIRE_DETECTRON2_C=1 turns this skip into a failure"
needs_detectron2_c = pytest.mark.skipif(
    not (REQUIRE_C or has_detectron2_c()),
    reason="needs detectron2._C (the official detectron2 build, docs/install.md)" + WHY,
)
needs_deform_conv = pytest.mark.skipif(
    not (REQUIRE_C or deform_conv_builds()),
    reason="detectron2's DeformConv needs detectron2._C in this build" + WHY,
)
