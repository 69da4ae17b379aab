"""The compatibility patches that make the sdist pb1-detectron2 0.6 work on today's libraries.

Data (PATCHES) plus the code that applies them once to a freshly extracted tree: each pattern
must match exactly where expected, else PatchError names file and pattern. They fix what
upstream detectron2 fixed later; no detectron2 source is stored here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

PATCHED_VERSION_LABEL = "+signsym1"  # `pip show pb1-detectron2` tells the patched build apart


class PatchError(RuntimeError):
    """A patch did not match where expected, or the patched tree still has a known problem."""


class Patch(NamedTuple):
    """In ``path``, ``pattern`` (a MULTILINE regex) must match exactly ``count`` times; each
    match is replaced by ``repl`` (``re.sub`` syntax)."""

    path: str
    pattern: str
    repl: str
    why: str
    count: int = 1


TRY_IMPORT_C = (
    "try:  # signsym_det patch: detectron2._C (C++ ops) is optional\n"
    "    from detectron2 import _C\n"
    "except ImportError:\n"
    "    _C = None\n"
)
# `\b` on both sides keeps np.int64, np.float32, np.bool_, np.str_ ... untouched.
NP_ALIAS_RE = r"\bnp\.(bool|int|float|str|object)\b"
NP_ALIAS_COUNTS = {  # file -> number of aliases in the sdist
    "detectron2/data/build.py": 2,
    "detectron2/data/datasets/pascal_voc.py": 1,
    "detectron2/evaluation/pascal_voc_evaluation.py": 2,
    "detectron2/evaluation/sem_seg_evaluation.py": 7,
    "detectron2/structures/masks.py": 3,
    "detectron2/utils/video_visualizer.py": 1,
    "detectron2/utils/visualizer.py": 3,
}

PATCHES: tuple[Patch, ...] = (
    # setup.py: build pure Python, installable from modern pip, configs packaged, labelled
    Patch(
        "setup.py",
        r"^    ext_modules=get_extensions\(\),$",
        "    ext_modules=[],  # signsym_det patch: this sdist ships no C++ sources",
        "build pure Python: the sdist has no detectron2/layers/csrc",
    ),
    Patch(
        "setup.py",
        r'^        "black==21\.4b2",$',
        '        # "black==21.4b2",  # signsym_det patch: only LazyConfig.save uses black, lazily',
        "drop the black==21.4b2 pin, which clashes with modern dependencies",
    ),
    Patch(
        "setup.py",
        r'^            "panopticapi @ https://github\.com/cocodataset/panopticapi/archive/'
        r'master\.zip",$',
        "            # signsym_det patch: direct-URL dependency of the extra 'all' dropped",
        "pip refuses direct-URL dependencies in index-hosted distributions",
    ),
    Patch(
        "setup.py",
        r'"configs/\*\*/\*\.(yaml|py)", recursive=True',
        r'"configs/**/*.\1", root_dir="detectron2/model_zoo", recursive=True',
        "install the model-zoo configs (the sdist has them in detectron2/model_zoo only)",
        count=2,
    ),
    Patch(
        "setup.py",
        r"^    version=get_version\(\),$",
        f'    version=get_version() + "{PATCHED_VERSION_LABEL}",  # signsym_det patch',
        "mark the patched build with a local version label",
    ),
    # 1. Pillow >= 10
    Patch(
        "detectron2/data/transforms/transform.py",
        r"\bImage\.LINEAR\b",
        "Image.BILINEAR",
        "Pillow >= 10 removed Image.LINEAR",
    ),
    # 2. NumPy >= 1.24
    *(
        Patch(f, NP_ALIAS_RE, r"\1", "NumPy >= 1.24 removed np.bool/np.int/np.float/np.str", n)
        for f, n in NP_ALIAS_COUNTS.items()
    ),
    # 3. setuptools >= 82 has no pkg_resources
    Patch(
        "detectron2/model_zoo/model_zoo.py",
        r"^import pkg_resources\n",
        "# signsym_det patch: `import pkg_resources` dropped (gone from setuptools >= 82)\n",
        "setuptools >= 82 removed pkg_resources",
    ),
    Patch(
        "detectron2/model_zoo/model_zoo.py",
        r"^    cfg_file = pkg_resources\.resource_filename\(\n"
        r'        "detectron2\.model_zoo", os\.path\.join\("configs", config_path\)\n'
        r"    \)$",
        "    # signsym_det patch: the configs lie in this package's directory\n"
        "    cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "
        '"configs", config_path)',
        "setuptools >= 82 removed pkg_resources",
    ),
    # 4. detectron2._C is optional
    *(
        Patch(f, r"^from detectron2 import _C\n", TRY_IMPORT_C, "no C++ ops at import time")
        for f in (
            "detectron2/layers/deform_conv.py",
            "detectron2/layers/rotated_boxes.py",
            "detectron2/layers/roi_align_rotated.py",
            "detectron2/evaluation/fast_eval_api.py",
        )
    ),
    # 5. COCOEvaluator falls back to pycocotools
    Patch(
        "detectron2/evaluation/coco_evaluation.py",
        r"^from detectron2\.evaluation\.fast_eval_api import COCOeval_opt\n",
        "try:  # signsym_det patch: the fast COCOeval needs detectron2._C\n"
        "    from detectron2 import _C  # noqa: F401\n"
        "    from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
        "except ImportError:\n"
        "    COCOeval_opt = COCOeval  # pycocotools' reference implementation\n",
        "fall back to pycocotools' COCOeval without detectron2._C",
    ),
    # 6. torch 2.x schedulers do not subclass _LRScheduler
    Patch(
        "detectron2/engine/hooks.py",
        r"\btorch\.optim\.lr_scheduler\._LRScheduler\)",
        "torch.optim.lr_scheduler.LRScheduler)",
        "torch 2.x schedulers are not _LRScheduler: their state was silently not saved",
        count=2,
    ),
    # 7. detectron2.export must import without caffe2
    Patch(
        "detectron2/export/__init__.py",
        r"^from \.api import \*\n",
        "try:  # signsym_det patch: caffe2 (gone from torch) is needed by the caffe2 API only\n"
        "    from caffe2.proto import caffe2_pb2 as _caffe2_pb2  # noqa: F401\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    from .api import *\n",
        "import detectron2.export without caffe2",
    ),
    # 8. launch() on machines without CUDA: gloo, no device pinning (as upstream main does)
    Patch(
        "detectron2/engine/launch.py",
        r'^    assert torch\.cuda\.is_available\(\), "cuda is not available\. Please check your '
        r'installation\."$',
        "    has_gpu = torch.cuda.is_available()  # signsym_det patch: CPU workers use gloo",
        "launch() asserted CUDA for more than one process",
    ),
    Patch(
        "detectron2/engine/launch.py",
        r'^            backend="NCCL",$',
        '            backend="NCCL" if has_gpu else "GLOO",  # signsym_det patch',
        "launch() hard-coded the NCCL backend, which needs CUDA",
    ),
    Patch(
        "detectron2/engine/launch.py",
        r"^    assert num_gpus_per_machine <= torch\.cuda\.device_count\(\)\n"
        r"    torch\.cuda\.set_device\(local_rank\)\n",
        "    if has_gpu:  # signsym_det patch: pin a GPU only when there is one\n"
        "        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
        "        torch.cuda.set_device(local_rank)\n",
        "launch() pinned a CUDA device in every worker",
    ),
)

# After patching, none of these may remain anywhere in the detectron2 package.
FORBIDDEN_AFTER_PATCH = (
    (r"\bImage\.LINEAR\b", "Image.LINEAR (Pillow >= 10)"),
    (NP_ALIAS_RE, "deprecated NumPy alias (NumPy >= 1.24)"),
    (r"^\s*import pkg_resources\b", "import pkg_resources (setuptools >= 82)"),
    (r"^from detectron2 import _C\b", "unguarded module-level `from detectron2 import _C`"),
)


def apply_patch(root: Path, patch: Patch) -> None:
    """Apply ``patch`` to the tree ``root``, or raise PatchError naming file and pattern."""
    target = root / patch.path
    if not target.is_file():
        raise PatchError(f"patch target missing: {target} ({patch.why})")
    text, n = re.subn(patch.pattern, patch.repl, target.read_text("utf-8"), flags=re.MULTILINE)
    if n != patch.count:
        raise PatchError(
            f"patch failed: {patch.path}: pattern {patch.pattern!r} matched {n} time(s), "
            f"expected {patch.count} ({patch.why}). Is this the pb1-detectron2 0.6 sdist?"
        )
    target.write_text(text, "utf-8")


def verify_patched_tree(root: Path) -> None:
    """Raise PatchError listing every FORBIDDEN_AFTER_PATCH match under root/detectron2."""
    problems = []
    for py in sorted((root / "detectron2").rglob("*.py")):
        text = py.read_text("utf-8")
        for pattern, what in FORBIDDEN_AFTER_PATCH:
            for m in re.finditer(pattern, text, re.MULTILINE):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{py.relative_to(root)}:{line}: {what}")
    if problems:
        raise PatchError("patched tree still has known problems:\n  " + "\n  ".join(problems))


def patch_tree(root: Path) -> None:
    """Apply every patch of PATCHES once to the fresh sdist tree ``root``, then verify it."""
    for patch in PATCHES:
        apply_patch(root, patch)
    verify_patched_tree(root)
