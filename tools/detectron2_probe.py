#!/usr/bin/env python3
"""Print, as one JSON line, which detectron2 this interpreter imports and whether it is healthy.

Healthy: every module of HEALTH_MODULES imports (none needs detectron2._C). Also reported:
torch's version, detectron2's version and distribution, whether its C++ ops exist and whether
its model-zoo configs are installed.
tools/install_detectron2.py runs this file with the target interpreter.
"""

from __future__ import annotations

import importlib
import json
import os
from importlib import metadata

HEALTH_MODULES = (
    "detectron2.config",
    "detectron2.data",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.modeling",
    "detectron2.checkpoint",
    "detectron2.model_zoo",
)
MODEL_ZOO_CONFIG = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"


def has_c_ops() -> bool:
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def has_model_zoo_configs() -> bool:
    try:
        from detectron2 import model_zoo

        model_zoo.get_config_file(MODEL_ZOO_CONFIG)  # raises if the file is not installed
    except Exception:
        return False
    return True


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def probe() -> dict:
    """{"torch", "importable": False, "error"} or {"torch", "importable": True, "file", "version",
    "dist", "errors" (one "module: exception" per HEALTH_MODULES failure), "has_C",
    "model_zoo_configs"}; "torch" is torch's version or None."""
    torch = torch_version()
    try:
        import detectron2
    except ImportError as e:
        return {"torch": torch, "importable": False, "error": repr(e)}
    errors = []
    for module in HEALTH_MODULES:
        try:
            importlib.import_module(module)
        except Exception as e:
            errors.append(f"{module}: {e!r}")
    dists = metadata.packages_distributions().get("detectron2", [])
    return {
        "torch": torch,
        "importable": True,
        "file": os.path.dirname(detectron2.__file__),
        "version": getattr(detectron2, "__version__", "?"),
        "dist": ", ".join(f"{d} {metadata.version(d)}" for d in dists) or "?",
        "errors": errors,
        "has_C": has_c_ops(),
        "model_zoo_configs": has_model_zoo_configs(),
    }


if __name__ == "__main__":
    print(json.dumps(probe()))
