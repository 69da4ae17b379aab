"""MODEL.WEIGHTS holding only part of a backbone (a Hebbian stem): refused by default,
trained from with MODEL.FEEDBACK.CHECK_BACKBONE False (the stem loaded and kept frozen)."""

import pytest
import torch
from repo_process import run_python

from signsym_det.engine.hebbian_stem import save_stem_checkpoint, stem_conv
from signsym_det.hebbian import Conv2dHebbianLearner

pytestmark = pytest.mark.slow  # subprocess training runs

CONFIG = "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml"
STEM = "backbone.bottom_up.stem.conv1.weight"


def test_a_stem_only_file_needs_check_backbone_false(tmp_path, tiny_shapes_env, tiny_run):
    learner = Conv2dHebbianLearner(stem_conv(), 1, max_patches=100, generator=torch.Generator())
    learner.step(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    stem_file = tmp_path / "stem_detectron2.pth"
    save_stem_checkpoint(learner, {"target": "stem"}, stem_file)

    def train(out, *opts):
        args = ["--config-file", CONFIG, *tiny_run, "MODEL.WEIGHTS", str(stem_file)]
        return run_python(tiny_shapes_env, "tools/train_net.py", *args, "OUTPUT_DIR", out, *opts)

    refused = train(str(tmp_path / "refused"))
    assert refused.returncode != 0
    assert "backbone weights loaded" in refused.stderr + refused.stdout

    out = tmp_path / "partial"
    done = train(
        str(out), "MODEL.FEEDBACK.CHECK_BACKBONE", "False", "MODEL.BACKBONE.FREEZE_AT", "1"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final = torch.load(out / "model_final.pth", weights_only=True)["model"]
    assert torch.equal(final[STEM], torch.load(stem_file, weights_only=True)["model"][STEM])
