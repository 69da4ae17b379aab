"""The package stands alone: its configs ship inside it, and a wheel installed outside the
repository trains from its packaged config with ``python -m signsym_det.train_net``."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from signsym_det.data.shapes import generate_detection_dataset
from signsym_det.model_zoo import get_config_file

ROOT = Path(__file__).resolve().parents[1]
DEMO = "Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml"
REPO_CONFIGS = sorted(
    p.relative_to(ROOT / "configs").as_posix()
    for p in (ROOT / "configs").rglob("*")
    if p.is_file() and not p.name.startswith(".")
)
TINY_RUN = (
    "SOLVER.MAX_ITER 2 SOLVER.IMS_PER_BATCH 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS () "
    "DATALOADER.NUM_WORKERS 0 MODEL.FPN.OUT_CHANNELS 16 MODEL.FEEDBACK.ALIGNMENT_PERIOD 1"
).split()


def test_repo_configs_are_the_packaged_ones():
    """configs/ in the repository is a link to the package's copy: one file each."""
    assert (ROOT / "configs").is_symlink()
    assert len(REPO_CONFIGS) > 20 and "ImageNet/R-18.args" in REPO_CONFIGS
    for name in REPO_CONFIGS:
        assert Path(get_config_file(name)).samefile(ROOT / "configs" / name)
        assert Path(get_config_file(name)).is_relative_to(ROOT / "signsym_det")


def test_unknown_config_names_the_path_and_the_choices():
    with pytest.raises(FileNotFoundError, match="Shapes-Demo/nope.yaml") as error:
        get_config_file("Shapes-Demo/nope.yaml")
    assert DEMO in str(error.value) and "ImageNet/R-18.args" in str(error.value)
    with pytest.raises(FileNotFoundError, match="not a config"):
        get_config_file("../__init__.py")


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_outside_the_repo_trains_from_its_packaged_config(tmp_path):
    # build from a copy holding only what the wheel is made of (the repo tree stays clean)
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "signsym_det", source / "signsym_det", ignore=ignore)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", wheels], ROOT, env)
    (wheel,) = wheels.glob("signsym_det-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"signsym_det/model_zoo/configs/{name}" for name in REPO_CONFIGS} <= names
    assert "signsym_det/train_net.py" in names
    assert not [n for n in names if n.startswith(("tests/", "tools/", "configs/"))]

    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path, env)
    work = tmp_path / "work"
    work.mkdir()
    generate_detection_dataset(work / "datasets" / "shapes", num_train=4, num_val=3)
    env = {**env, "PYTHONPATH": str(site), "DETECTRON2_DATASETS": str(work / "datasets")}
    env["OMP_NUM_THREADS"] = "1"
    where = "import signsym_det, signsym_det.model_zoo as z; print(signsym_det.__file__); "
    where += f"print(z.get_config_file({DEMO!r}))"
    package, config = _run([sys.executable, "-c", where], work, env).split()
    assert Path(package).is_relative_to(site) and Path(config).is_relative_to(site)

    cmd = [sys.executable, "-m", "signsym_det.train_net", "--config-file", config, *TINY_RUN]
    _run([*cmd, "OUTPUT_DIR", "out"], work, env)
    out = work / "out"
    assert (out / "model_final.pth").is_file()
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "total_loss" in r] == [1]
    assert "bbox/AP" in records[-1]  # the final COCOEvaluator run
