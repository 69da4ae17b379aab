#!/usr/bin/env python3
"""Install detectron2 into the environment of the Python that runs this script.

Run it with the target interpreter, e.g. ``.venv/bin/python tools/install_detectron2.py``;
torch must already be installed there. In order of precedence it:

1. ``DETECTRON2_SPEC`` set (a pip requirement: a git URL, a local checkout, a wheel):
   ``pip install --no-build-isolation "$DETECTRON2_SPEC"`` and stop (after an import check).
2. A working detectron2 is already importable: use it and say which one.
3. Otherwise fetch the sdist ``pb1-detectron2==0.6`` (detectron2's Python tree of Oct 2021,
   without its C++ sources) from PyPI, verify its sha256, extract it, apply the
   compatibility patches below (each verified, idempotent) and ``pip install`` the
   patched tree, so ``pip show pb1-detectron2`` / ``pip uninstall`` know it.

The verified tarball is cached in ``~/.cache/signsym_det/`` (``$SIGNSYM_DET_CACHE`` or
``$XDG_CACHE_HOME/signsym_det`` if set); the cache is optional, never required.

Nothing of detectron2 is stored in this repository: the patches are pattern replacements
applied to the downloaded, hash-checked sdist.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILENAME = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Local version label of the patched build: `pip show pb1-detectron2` tells it apart.
PATCHED_VERSION_LABEL = "+signsym1"
DEFAULT_SIMPLE_INDEX = "https://pypi.org/simple"

# Submodules a detectron2 must import for this project (none of them needs detectron2._C).
HEALTH_MODULES = (
    "detectron2.config",
    "detectron2.data",
    "detectron2.engine",
    "detectron2.evaluation",
    "detectron2.modeling",
    "detectron2.checkpoint",
    "detectron2.model_zoo",
)


class InstallError(RuntimeError):
    """A step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """Replace ``pattern`` (a regex, MULTILINE) by ``repl`` in ``path``.

    The pattern must match ``count`` times (``None``: at least once), or the patch fails
    loudly naming the file and the pattern, unless it matches nowhere and ``applied`` (a
    literal, by default ``repl``) is in the file: then it was applied before (idempotent).
    ``repl`` must not match ``pattern`` again.
    """

    path: str
    pattern: str
    repl: str
    why: str
    applied: str | None = None
    count: int | None = None

    @property
    def marker(self) -> str:
        return self.applied if self.applied is not None else self.repl


class PatchError(InstallError):
    pass


def _try_import_c(indent: str = "") -> str:
    return (
        f"{indent}try:  # signsym_det patch: detectron2._C (C++ ops) is optional\n"
        f"{indent}    from detectron2 import _C\n"
        f"{indent}except ImportError:\n"
        f"{indent}    _C = None\n"
    )


_C_MARKER = "try:  # signsym_det patch: detectron2._C (C++ ops) is optional\n"

# NumPy >= 1.24 removed the aliases np.bool/np.int/np.float/np.str/np.object. `\b` on both
# sides keeps np.int64, np.float32, np.bool_, np.str_ ... untouched.
NP_ALIAS_RE = r"\bnp\.(bool|int|float|str|object)\b"
# file -> a literal that is there once the file has been patched
NP_ALIAS_FILES = {
    "detectron2/evaluation/pascal_voc_evaluation.py": ".astype(bool)",
    "detectron2/evaluation/sem_seg_evaluation.py": "dtype=int)",
    "detectron2/structures/masks.py": ".astype(bool)",
    "detectron2/data/datasets/pascal_voc.py": "dtype=str)",
    "detectron2/data/build.py": "dtype=int)",
    "detectron2/utils/visualizer.py": ".astype(bool)",
    "detectron2/utils/video_visualizer.py": "dtype=bool)",
}

PATCHES: tuple[Patch, ...] = (
    # ---- setup.py ------------------------------------------------------------------------
    Patch(
        "setup.py",
        r"^    ext_modules=get_extensions\(\),$",
        "    ext_modules=[],  # signsym_det patch: this sdist ships no C++ sources",
        "build pure Python: the sdist has no detectron2/layers/csrc",
        count=1,
    ),
    Patch(
        "setup.py",
        r'^        "black==21\.4b2",$',
        '        # "black==21.4b2",  # signsym_det patch: black is imported lazily, only by\n'
        "        # LazyConfig.save to pretty-print; that exact pin clashes with modern deps.",
        "drop the black==21.4b2 pin",
        count=1,
    ),
    Patch(
        "setup.py",
        r'^            "panopticapi @ https://github\.com/cocodataset/panopticapi/archive/'
        r'master\.zip",$',
        "            # signsym_det patch: direct-URL dependency dropped (extra 'all' only;\n"
        "            # pip refuses such dependencies in index-hosted distributions).",
        "drop the direct-URL extra that makes `pip download` refuse the sdist",
        count=1,
    ),
    Patch(
        "setup.py",
        r'^    config_paths = glob\.glob\("configs/\*\*/\*\.yaml", recursive=True\) '
        r'\+ glob\.glob\(\n        "configs/\*\*/\*\.py", recursive=True\n    \)$',
        "    # signsym_det patch: the sdist ships the configs inside detectron2/model_zoo\n"
        '    zoo_dir = path.join(path.dirname(path.realpath(__file__)), "detectron2", '
        '"model_zoo")\n'
        "    config_paths = [\n"
        "        path.relpath(p, zoo_dir)\n"
        '        for ext in ("yaml", "py")\n'
        '        for p in glob.glob(path.join(zoo_dir, "configs", "**", "*." + ext), '
        "recursive=True)\n"
        "    ]",
        "install the model-zoo configs (the sdist has no top-level configs/)",
        count=1,
    ),
    Patch(
        "setup.py",
        r"^    version=get_version\(\),$",
        f'    version=get_version() + "{PATCHED_VERSION_LABEL}",  # signsym_det patch',
        "mark the patched build with a local version label",
        count=1,
    ),
    # ---- 1. Pillow >= 10 -----------------------------------------------------------------
    Patch(
        "detectron2/data/transforms/transform.py",
        r"\bImage\.LINEAR\b",
        "Image.BILINEAR",
        "Pillow >= 10 removed Image.LINEAR",
        applied="interp=Image.BILINEAR",
        count=1,
    ),
    # ---- 2. NumPy >= 1.24 aliases --------------------------------------------------------
    *(
        Patch(
            f,
            NP_ALIAS_RE,
            r"\1",
            "NumPy >= 1.24 removed np.bool/np.int/np.float/np.str",
            applied=marker,
        )
        for f, marker in NP_ALIAS_FILES.items()
    ),
    # ---- 3. setuptools >= 82 has no pkg_resources ----------------------------------------
    Patch(
        "detectron2/model_zoo/model_zoo.py",
        r"^import pkg_resources\n",
        "# signsym_det patch: `import pkg_resources` dropped (gone from setuptools >= 82)\n",
        "setuptools >= 82 removed pkg_resources",
        count=1,
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
        count=1,
    ),
    # ---- 4. detectron2._C is optional ----------------------------------------------------
    *(
        Patch(f, r"^from detectron2 import _C\n", _try_import_c(), "no C++ ops", _C_MARKER, 1)
        for f in (
            "detectron2/layers/deform_conv.py",
            "detectron2/layers/rotated_boxes.py",
            "detectron2/layers/roi_align_rotated.py",
            "detectron2/evaluation/fast_eval_api.py",
        )
    ),
    # ---- 5. COCOEvaluator falls back to pycocotools --------------------------------------
    Patch(
        "detectron2/evaluation/coco_evaluation.py",
        r"^from detectron2\.evaluation\.fast_eval_api import COCOeval_opt\n",
        "try:  # signsym_det patch: the fast COCOeval needs detectron2._C\n"
        "    from detectron2 import _C  # noqa: F401\n"
        "    from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
        "except ImportError:\n"
        "    COCOeval_opt = COCOeval  # pycocotools' reference implementation\n",
        "fall back to pycocotools' COCOeval without detectron2._C",
        count=1,
    ),
    # ---- 6. torch 2.x schedulers do not subclass _LRScheduler ----------------------------
    Patch(
        "detectron2/engine/hooks.py",
        r"\btorch\.optim\.lr_scheduler\._LRScheduler\)",
        "torch.optim.lr_scheduler.LRScheduler)",
        "torch 2.x schedulers are not _LRScheduler: their state was silently not saved",
        count=2,
    ),
    # ---- 7. detectron2.export must import without caffe2 ---------------------------------
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
        count=1,
    ),
)

# After patching, none of these may remain anywhere in the detectron2 package.
FORBIDDEN_AFTER_PATCH = (
    (r"\bImage\.LINEAR\b", "Image.LINEAR (Pillow >= 10)"),
    (NP_ALIAS_RE, "deprecated NumPy alias (NumPy >= 1.24)"),
    (r"^\s*import pkg_resources\b", "import pkg_resources (setuptools >= 82)"),
    (r"^from detectron2 import _C\b", "unguarded module-level `from detectron2 import _C`"),
)


def apply_patch(root: Path, patch: Patch) -> str:
    """Apply one patch under ``root``; return "applied" or "already applied"."""
    target = root / patch.path
    if not target.is_file():
        raise PatchError(f"patch target missing: {target} ({patch.why})")
    text = target.read_text(encoding="utf-8")
    new_text, n = re.subn(patch.pattern, patch.repl, text, flags=re.MULTILINE)
    if n == 0 and patch.marker in text:
        return "already applied"
    if n == 0 or (patch.count is not None and n != patch.count):
        expected = "at least 1" if patch.count is None else str(patch.count)
        raise PatchError(
            f"patch failed: {patch.path}: pattern {patch.pattern!r} matched {n} time(s), "
            f"expected {expected} ({patch.why}). Is this really {SDIST_FILENAME}?"
        )
    if patch.marker not in new_text:
        raise PatchError(f"patch {patch.path}: marker {patch.marker!r} missing after patching")
    target.write_text(new_text, encoding="utf-8")
    return "applied"


def verify_patched_tree(root: Path) -> None:
    problems = []
    for py in sorted((root / "detectron2").rglob("*.py")):
        text = py.read_text(encoding="utf-8")
        for pattern, what in FORBIDDEN_AFTER_PATCH:
            for m in re.finditer(pattern, text, re.MULTILINE):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{py.relative_to(root)}:{line}: {what}")
    if problems:
        raise PatchError("patched tree still has known problems:\n  " + "\n  ".join(problems))


def patch_tree(root: Path) -> None:
    for patch in PATCHES:
        status = apply_patch(root, patch)
        log(f"  patch {patch.path}: {patch.why}: {status}")
    verify_patched_tree(root)
    log(f"patched tree verified: {root}")


# --------------------------------------------------------------------------------------
# Download, verify, cache
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    if os.environ.get("SIGNSYM_DET_CACHE"):
        return Path(os.environ["SIGNSYM_DET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "signsym_det"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def find_sdist_url(index: str) -> str:
    """The sdist's download URL from a PEP 503/691 simple index.

    (`pip download pb1-detectron2==0.6` cannot do it: pip rejects the sdist's metadata,
    which declares a direct-URL dependency, and building that metadata imports torch.)
    """
    page = f"{index.rstrip('/')}/{SDIST_NAME}/"
    req = urllib.request.Request(
        page,
        headers={
            "Accept": "application/vnd.pypi.simple.v1+json, "
            "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
        },
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        ctype = resp.headers.get("Content-Type", "")
        body = resp.read().decode("utf-8", "replace")
    if "json" in ctype:
        urls = [f["url"] for f in json.loads(body).get("files", [])]
    else:
        parser = _LinkParser()
        parser.feed(body)
        urls = parser.links
    for url in urls:
        url = urllib.parse.urljoin(page, url)
        if urllib.parse.urlsplit(url).path.endswith("/" + SDIST_FILENAME):
            return url
    raise InstallError(f"{SDIST_FILENAME} not listed on {page}")


def download_sdist(dest: Path) -> None:
    index = os.environ.get("SIGNSYM_DET_SIMPLE_INDEX", DEFAULT_SIMPLE_INDEX)
    url = find_sdist_url(index)
    log(f"downloading {url}")
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    tmp.replace(dest)


def obtain_sdist(workdir: Path, local: Path | None = None) -> Path:
    """A verified copy of the sdist: ``local``, else the cache, else a download."""
    if local is not None:
        if sha256_of(local) != SDIST_SHA256:
            raise InstallError(f"{local}: sha256 mismatch, expected {SDIST_SHA256}")
        log(f"using local sdist {local} (sha256 verified)")
        return local

    cached = cache_dir() / SDIST_FILENAME
    if cached.is_file():
        if sha256_of(cached) == SDIST_SHA256:
            log(f"using cached sdist {cached} (sha256 verified)")
            return cached
        log(f"cached {cached} has a wrong sha256: ignoring it")

    target = workdir / SDIST_FILENAME
    try:
        download_sdist(target)
    except (OSError, ValueError) as e:  # URLError is an OSError
        raise InstallError(
            f"could not download {SDIST_FILENAME}: {e}. Without network, put the file at "
            f"{cached} or pass --sdist PATH; or set DETECTRON2_SPEC to another detectron2."
        ) from e
    digest = sha256_of(target)
    if digest != SDIST_SHA256:
        raise InstallError(
            f"downloaded {SDIST_FILENAME} has sha256 {digest}, expected {SDIST_SHA256}"
        )
    log("sha256 verified")
    try:  # the cache is a convenience only
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + f".{os.getpid()}.part")
        shutil.copyfile(target, tmp)
        tmp.replace(cached)
        log(f"cached at {cached}")
    except OSError as e:
        log(f"note: could not cache the sdist ({e})")
    return target


def extract_sdist(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without PEP 706
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise InstallError(f"unsafe path in {tarball}: {member.name}")
            tar.extractall(dest)
    root = dest / f"{SDIST_NAME}-{SDIST_VERSION}"
    if not (root / "setup.py").is_file():
        raise InstallError(f"{tarball}: no {root.name}/setup.py inside")
    return root


def prepare_tree(dest: Path, local_sdist: Path | None = None) -> Path:
    """Download/verify/extract/patch into ``dest``; return the patched source tree."""
    dest.mkdir(parents=True, exist_ok=True)
    tarball = obtain_sdist(dest, local_sdist)
    root = extract_sdist(tarball, dest)
    patch_tree(root)
    return root


# --------------------------------------------------------------------------------------
# The target environment
# --------------------------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys
    out = {}
    try:
        import detectron2
    except ImportError as e:
        out["importable"] = False
        out["error"] = repr(e)
        print(json.dumps(out)); sys.exit(0)
    out["importable"] = True
    out["file"] = os.path.dirname(detectron2.__file__)
    out["version"] = getattr(detectron2, "__version__", "?")
    try:
        from importlib import metadata
        dists = metadata.packages_distributions().get("detectron2", [])
        out["dist"] = ", ".join(f"{d} {metadata.version(d)}" for d in dists) or "?"
    except Exception as e:
        out["dist"] = "? (%r)" % (e,)
    errors = []
    for mod in MODULES:
        try:
            importlib.import_module(mod)
        except Exception as e:
            errors.append(f"{mod}: {e!r}")
    out["errors"] = errors
    try:
        from detectron2 import _C  # noqa: F401
        out["has_C"] = True
    except ImportError:
        out["has_C"] = False
    try:
        from detectron2 import model_zoo
        model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
        out["model_zoo_configs"] = True
    except Exception:
        out["model_zoo_configs"] = False
    print(json.dumps(out))
    """
)


def probe_detectron2(python: str = sys.executable) -> dict:
    """What detectron2 ``python`` sees (run in a clean subprocess, outside the repo)."""
    code = f"MODULES = {list(HEALTH_MODULES)!r}\n{_PROBE}"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(
            [python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise InstallError(f"probing detectron2 with {python} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(info: dict) -> str:
    c_ops = "with C++ ops" if info.get("has_C") else "pure Python, no detectron2._C"
    return f"detectron2 {info.get('version')} at {info.get('file')} [{info.get('dist')}; {c_ops}]"


def pip(*args: str, quiet: bool = True) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    if quiet:
        cmd.insert(4, "-q")  # after `pip <command>`
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise InstallError(f"pip failed (exit {proc.returncode}): {' '.join(cmd)}")


def require_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise InstallError(
            f"torch is not importable by {sys.executable}: install torch (and torchvision) "
            f"first, e.g. `make setup` does. ({proc.stderr.strip().splitlines()[-1:]})"
        )
    log(f"torch {proc.stdout.strip()} found")


def check_healthy(info: dict, what: str) -> None:
    if not info.get("importable"):
        raise InstallError(f"{what}: detectron2 is not importable: {info.get('error')}")
    if info.get("errors"):
        raise InstallError(f"{what}: {describe(info)} is broken:\n  " + "\n  ".join(info["errors"]))


def install_spec(spec: str, quiet: bool) -> None:
    log(f"DETECTRON2_SPEC={spec!r}: pip install --no-build-isolation {spec}")
    pip("install", "--no-build-isolation", spec, quiet=quiet)
    info = probe_detectron2()
    check_healthy(info, f"after installing DETECTRON2_SPEC={spec!r}")
    log(f"installed {describe(info)}")


def install_patched(local_sdist: Path | None, quiet: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="signsym_det_d2_") as tmp:
        root = prepare_tree(Path(tmp), local_sdist)
        pip("install", "--no-build-isolation", str(root), quiet=quiet)
    info = probe_detectron2()
    check_healthy(info, "after installing the patched pb1-detectron2")
    if not info.get("model_zoo_configs"):
        raise InstallError("patched pb1-detectron2 was installed without its model-zoo configs")
    log(f"installed {describe(info)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--force",
        action="store_true",
        help="install the patched pb1-detectron2 even if a detectron2 is importable",
    )
    parser.add_argument(
        "--sdist", type=Path, help=f"use this local {SDIST_FILENAME} (still sha256-checked)"
    )
    parser.add_argument(
        "--prepare-only",
        type=Path,
        metavar="DIR",
        help="only download/verify/extract/patch into DIR and print the tree's path "
        "(e.g. for DETECTRON2_SPEC); installs nothing",
    )
    parser.add_argument(
        "--check", action="store_true", help="only report the detectron2 the target sees"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="don't pass -q to pip")
    args = parser.parse_args(argv)
    quiet = not args.verbose

    try:
        if args.prepare_only is not None:
            root = prepare_tree(args.prepare_only.resolve(), args.sdist)
            print(root)
            return 0

        log(f"target interpreter: {sys.executable}")
        if args.check:
            info = probe_detectron2()
            check_healthy(info, "check")
            log(f"OK: {describe(info)}")
            return 0

        spec = os.environ.get("DETECTRON2_SPEC", "").strip()
        if spec:
            install_spec(spec, quiet)
            return 0

        require_torch()
        info = probe_detectron2()
        if info.get("importable") and not args.force:
            if not info.get("errors"):
                log(f"using the already installed {describe(info)}")
                if not info.get("model_zoo_configs"):
                    log("note: its model-zoo configs are missing (model_zoo.get_config_file)")
                return 0
            if SDIST_NAME not in info.get("dist", ""):
                check_healthy(info, "existing install")  # raises with the details
            log(f"existing {describe(info)} is broken: replacing it with the patched build")
            for err in info["errors"]:
                log(f"  {err}")
            pip("uninstall", "-y", SDIST_NAME, quiet=quiet)
        elif info.get("importable"):
            log(f"--force: replacing {describe(info)}")
            if SDIST_NAME in info.get("dist", ""):
                pip("uninstall", "-y", SDIST_NAME, quiet=quiet)
        else:
            log("no detectron2 importable: installing the patched pb1-detectron2 sdist")
        install_patched(args.sdist, quiet)
        return 0
    except InstallError as e:
        print(f"[install_detectron2] ERROR: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
