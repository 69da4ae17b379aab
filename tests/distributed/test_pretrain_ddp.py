"""The pretraining tool under ``torchrun`` on CPU (gloo) trains what one process trains: 2
processes x 4 images vs 1 process x 8, same seed, 5 iterations, a convnet without
normalisation layers (so nothing depends on the per-process batch).

Data order: ShardedEpochSampler gives process r every world_size-th index of the epoch's
permutation (drawn from the seed), so with one global batch of 8 per epoch the two
processes' 4 + 4 images are the single process's 8. The random train transforms are made
no-ops: every image is already image_size square (RandomResizedCrop with scale 1 keeps it
whole) and mirror-symmetric (a horizontal flip leaves it unchanged)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from signsym_det.engine.latest_checkpoint import latest_checkpoint_path
from signsym_det.engine.targetprop import LayeredPretrainer
from signsym_det.pretrain_net import parse_args

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
TOLERANCE = 2e-5  # float32 sums in another order, then 5 SGD steps


def make_symmetric_image_folder(root: Path) -> Path:
    """train/ (4 images per class) and val/ (1 per class) of left-right symmetric images."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 1)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(per_class):
                half = rng.integers(0, 256, (SIZE, SIZE // 2, 3), dtype=np.uint8)
                image = np.concatenate([half, half[:, ::-1]], axis=1)
                Image.fromarray(image).save(root / split / label / f"{i}.png")
    return root


def options(data: Path, out: Path, rule: str) -> list:
    return [
        *("--data", str(data), "--output-dir", str(out), "--device", "cpu"),
        *("--arch", "convnet", "--rule", rule, "--image-size", str(SIZE)),
        *("--min-crop-scale", "1.0", "--batch-size", "8", "--max-iter", "5", "--workers", "0"),
        *("--lr", "0.05", "--eval-period", "0", "--alignment-period", "0", "--no-tensorboard"),
    ]


def pretrain(data: Path, out: Path, processes: int, rule: str) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the CPU (gloo) path, on GPU machines too
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])),
    }
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [
        *torchrun,
        f"--nproc-per-node={processes}",
        "-m",
        "signsym_det.pretrain_net",
        *options(data, out, rule),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(latest_checkpoint_path(out), weights_only=True)["model"]


@pytest.mark.parametrize("rule", ["fa", "kolen_pollack"])
def test_torchrun_two_processes_train_what_one_does(tmp_path, rule):
    data = make_symmetric_image_folder(tmp_path / "data")
    one = pretrain(data, tmp_path / "one", 1, rule)
    two = pretrain(data, tmp_path / "two", 2, rule)
    assert one.keys() == two.keys()
    # the run trained: a wrong split (e.g. no gradient averaging) would be far outside
    start = LayeredPretrainer(parse_args(options(data, tmp_path / "start", rule))).model
    change = max((one[k] - v).abs().max().item() for k, v in start.state_dict().items())
    assert change > 100 * TOLERANCE
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=TOLERANCE, msg=key)
