#!/usr/bin/env python3
"""Install detectron2 into the environment of the Python that runs this script.

Run it with the target interpreter (``.venv/bin/python tools/install_detectron2.py``); torch
must be installed there. The first that applies:

1. ``DETECTRON2_SPEC`` is set (any pip requirement: a git URL, a source tree or tarball, a
   wheel). A local source archive (a file such as ``detectron2-main.tar.gz``) is built into a
   wheel once (``pip wheel --no-build-isolation --no-deps``, with its C++ ops) and the wheel is
   cached under the archive's sha256, torch's version and Python's; anything else is installed
   with ``pip install --no-build-isolation "$DETECTRON2_SPEC"``. Then a health check.
2. A healthy detectron2 is already importable: it is used as is.
3. Otherwise the sdist ``pb1-detectron2==0.6`` (detectron2's Python tree of Oct 2021, without
   its C++ sources) from its pinned PyPI URL, sha256-checked, extracted to a fresh temporary
   tree, patched once (tools/detectron2_patches.py) and installed with pip (as version
   ``0.6+signsym1``).

detectron2 main's ``model_zoo.py`` imports ``pkg_resources``, which setuptools >= 82 no longer
ships: when the installed detectron2 fails on exactly that, ``setuptools<82`` is installed.

The verified sdist and the built wheels are cached in ``$SIGNSYM_DET_CACHE``, else
``$XDG_CACHE_HOME/signsym_det``, else ``~/.cache/signsym_det``; the cache is optional, never
required. No detectron2 source is stored in this repository: the patches are pattern
replacements applied to the hash-checked sdist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from detectron2_patches import PatchError, patch_tree

SDIST_NAME = "pb1-detectron2"
SDIST_FILENAME = f"{SDIST_NAME}-0.6.tar.gz"
# pip itself cannot fetch this file: pip >= 26 refuses any sdist hosted on PyPI whose metadata
# declares a direct-URL dependency (this one's extra "all" does), even with --no-deps.
SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    f"48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/{SDIST_FILENAME}"
)
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PROBE = Path(__file__).with_name("detectron2_probe.py")
# The last setuptools with pkg_resources, which detectron2 main's model_zoo.py still imports.
SETUPTOOLS_WITH_PKG_RESOURCES = "setuptools<82"


class InstallError(RuntimeError):
    """A step failed; the message says which and what to do."""


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def cache_dir() -> Path:
    if os.environ.get("SIGNSYM_DET_CACHE"):
        return Path(os.environ["SIGNSYM_DET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "signsym_det"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_sha256(path: Path) -> None:
    digest = sha256_of(path)
    if digest != SDIST_SHA256:
        raise InstallError(f"{path}: sha256 {digest}, expected {SDIST_SHA256}")


def obtain_sdist(workdir: Path, local: Path | None = None) -> Path:
    """A sha256-verified copy of the sdist: ``local``, else the cache, else a download
    into ``workdir`` (then copied into the cache, replacing a corrupt cached file)."""
    if local is not None:
        require_sha256(local)
        return local
    cached = cache_dir() / SDIST_FILENAME
    if cached.is_file():
        if sha256_of(cached) == SDIST_SHA256:
            log(f"using the cached {cached} (sha256 verified)")
            return cached
        log(f"the cached {cached} has a wrong sha256: downloading it again")
    target = workdir / SDIST_FILENAME
    log(f"downloading {SDIST_URL}")
    try:
        with urllib.request.urlopen(SDIST_URL, timeout=120) as resp, open(target, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (OSError, ValueError) as e:  # URLError is an OSError
        raise InstallError(
            f"could not download {SDIST_FILENAME}: {e}. Without network, put the file at "
            f"{cached} or pass --sdist PATH; or set DETECTRON2_SPEC to another detectron2."
        ) from e
    require_sha256(target)
    try:  # the cache is a convenience only
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_name(f"{cached.name}.{os.getpid()}.part")
        shutil.copyfile(target, part)
        part.replace(cached)
        log(f"cached at {cached}")
    except OSError as e:
        log(f"note: could not cache the sdist ({e})")
    return target


def prepare_tree(dest: Path, local_sdist: Path | None = None) -> Path:
    """Extract the verified sdist into ``dest`` (which must not hold a tree yet), apply every
    patch once and verify; return the patched source tree."""
    root = dest / SDIST_FILENAME.removesuffix(".tar.gz")
    if root.exists():
        raise InstallError(f"{root} exists: patches apply to a fresh tree only, remove it")
    dest.mkdir(parents=True, exist_ok=True)
    tarball = obtain_sdist(dest, local_sdist)
    with tarfile.open(tarball, "r:gz") as tar:  # the "data" filter: Python >= 3.10.12
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    if not (root / "setup.py").is_file():
        raise InstallError(f"{tarball}: no {root.name}/setup.py inside")
    patch_tree(root)
    log(f"patched once and verified: {root}")
    return root


def probe_detectron2() -> dict:
    """tools/detectron2_probe.py's report, run by this interpreter outside the repo and without
    PYTHONPATH (so it sees what the environment has installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as cwd:
        cmd = [sys.executable, str(PROBE)]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallError(f"probing detectron2 with {sys.executable} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(info: dict) -> str:
    c_ops = "with C++ ops" if info.get("has_C") else "pure Python, no detectron2._C"
    return f"detectron2 {info.get('version')} at {info.get('file')} [{info.get('dist')}; {c_ops}]"


def check_healthy(info: dict, what: str) -> None:
    if not info.get("importable"):
        raise InstallError(f"{what}: detectron2 is not importable: {info.get('error')}")
    if info.get("errors"):
        raise InstallError(f"{what}: {describe(info)} is broken:\n  " + "\n  ".join(info["errors"]))


def pip(*args: str, quiet: bool = True) -> None:
    cmd = [sys.executable, "-m", "pip", args[0], *(["-q"] if quiet else []), *args[1:]]
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise InstallError(f"pip failed (exit {proc.returncode}): {' '.join(cmd)}")


def wheel_cache_key(archive: Path, torch: str) -> str:
    """A built wheel is reused only for the same archive bytes, torch and Python."""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"{sha256_of(archive)}-torch{torch}-{python}"


def cached_wheel(directory: Path) -> Path | None:
    wheels = sorted(directory.glob("*.whl")) if directory.is_dir() else []
    return wheels[0] if len(wheels) == 1 else None


def build_wheel(archive: Path, cache_entry: Path, workdir: Path, quiet: bool) -> Path:
    """Build ``archive`` into a wheel in ``workdir`` and copy it to ``cache_entry``."""
    log(f"building a wheel of {archive} (with C++ ops: minutes to half an hour)")
    pip("wheel", "--no-build-isolation", "--no-deps", str(archive), "-w", str(workdir), quiet=quiet)
    wheel = cached_wheel(workdir)
    if wheel is None:
        raise InstallError(f"pip wheel {archive} did not leave exactly one wheel in {workdir}")
    try:  # the cache is a convenience only
        cache_entry.mkdir(parents=True, exist_ok=True)
        part = cache_entry / f"{wheel.name}.{os.getpid()}.part"
        shutil.copyfile(wheel, part)
        part.replace(cache_entry / wheel.name)
        log(f"cached the wheel at {cache_entry / wheel.name}")
    except OSError as e:
        log(f"note: could not cache the wheel ({e})")
    return wheel


def install_wheel(wheel: Path, quiet: bool) -> dict:
    """Install ``wheel`` (replacing any detectron2 of the same version), then its dependencies;
    return the probe, settled."""
    pip("install", "--force-reinstall", "--no-deps", str(wheel), quiet=quiet)
    pip("install", str(wheel), quiet=quiet)
    return settle(probe_detectron2(), quiet)


def install_archive(archive: Path, torch: str, quiet: bool) -> dict:
    """A local source archive: install the cached wheel, else build, cache and install one."""
    cache_entry = cache_dir() / "detectron2-wheels" / wheel_cache_key(archive, torch)
    wheel = cached_wheel(cache_entry)
    if wheel is not None:
        log(f"using the cached wheel {wheel}")
        info = install_wheel(wheel, quiet)
        if info.get("importable") and not info.get("errors"):
            return info
        log(f"the cached wheel is broken ({info.get('error') or info.get('errors')}): rebuilding")
        shutil.rmtree(cache_entry, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="signsym_det_wheel_") as tmp:
        return install_wheel(build_wheel(archive, cache_entry, Path(tmp), quiet), quiet)


def settle(info: dict, quiet: bool) -> dict:
    """Install SETUPTOOLS_WITH_PKG_RESOURCES if detectron2 fails only for want of
    pkg_resources; return the (new) probe."""
    errors = info.get("errors") or []
    if errors and all("No module named 'pkg_resources'" in err for err in errors):
        log(f"{errors[0]}: installing {SETUPTOOLS_WITH_PKG_RESOURCES} (it still has it)")
        pip("install", SETUPTOOLS_WITH_PKG_RESOURCES, quiet=quiet)
        return probe_detectron2()
    return info


def install_spec(spec: str, quiet: bool) -> None:
    info = probe_detectron2()
    if info.get("torch") is None:
        raise InstallError(f"torch is not importable by {sys.executable}: install it first")
    if SDIST_NAME in info.get("dist", ""):
        log(f"DETECTRON2_SPEC replaces {describe(info)}")
        pip("uninstall", "-y", SDIST_NAME, quiet=quiet)
    archive = Path(spec).expanduser()
    if archive.is_file() and not archive.name.endswith(".whl"):
        log(f"DETECTRON2_SPEC={spec!r}: a local source archive")
        info = install_archive(archive.resolve(), info["torch"], quiet)
    else:
        log(f"DETECTRON2_SPEC={spec!r}: pip install --no-build-isolation {spec}")
        pip("install", "--no-build-isolation", spec, quiet=quiet)
        info = settle(probe_detectron2(), quiet)
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


def install(force: bool, local_sdist: Path | None, quiet: bool) -> None:
    """The choice of the module docstring (DETECTRON2_SPEC, existing install, patched sdist)."""
    spec = os.environ.get("DETECTRON2_SPEC", "").strip()
    if spec:
        install_spec(spec, quiet)
        return
    info = probe_detectron2()
    if info.get("torch") is None:
        raise InstallError(
            f"torch is not importable by {sys.executable}: install torch (and torchvision) "
            "first, e.g. `make setup` does."
        )
    log(f"torch {info['torch']} found")
    if info.get("importable") and not force:
        if not info.get("errors"):
            log(f"using the already installed {describe(info)}")
            if not info.get("model_zoo_configs"):
                log("note: its model-zoo configs are missing (model_zoo.get_config_file)")
            return
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
    install_patched(local_sdist, quiet)


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
    try:
        if args.prepare_only is not None:
            print(prepare_tree(args.prepare_only.resolve(), args.sdist))
            return 0
        log(f"target interpreter: {sys.executable}")
        if args.check:
            info = probe_detectron2()
            check_healthy(info, "check")
            log(f"OK: {describe(info)}")
            return 0
        install(args.force, args.sdist, quiet=not args.verbose)
        return 0
    except (InstallError, PatchError) as e:
        print(f"[install_detectron2] ERROR: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
