"""A 3-iteration RetinaNet run (tiny, in-process, FeedbackTrainer) with every technique on."""

import math

import pytest
import torch

from signsym_det.data.classification import generate_classification_dataset
from signsym_det.data.shapes import generate_detection_dataset
from signsym_det.engine import FeedbackTrainer, setup_cfg
from signsym_det.feedback.weight_norm import STATE_KEY
from signsym_det.pretrain_net import main as pretrain_main

pytestmark = pytest.mark.slow

CONFIG = "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml"


def test_retinanet_trains_with_every_technique(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    generate_detection_dataset(tmp_path / "ds" / "shapes", num_train=4, num_val=2)
    opts = "SOLVER.MAX_ITER 3 SOLVER.IMS_PER_BATCH 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS () "
    opts += "DATALOADER.NUM_WORKERS 0 MODEL.FPN.OUT_CHANNELS 32 TEST.EVAL_PERIOD 0 "
    opts += "MODEL.FEEDBACK.ALIGNMENT_PERIOD 0 MODEL.FEEDBACK.GRADIENT_ALIGNMENT_PERIOD 0 "
    opts += "MODEL.FEEDBACK.BACKBONE.RULE fa MODEL.FEEDBACK.BACKBONE.WEIGHT_NORM_CONSTRAINT True "
    opts += "MODEL.FEEDBACK.FPN.RULE kolen_pollack MODEL.FEEDBACK.FPN.CLIP_GRADIENTS 1.0 "
    opts += "MODEL.FEEDBACK.HEAD.BATCH_MANHATTAN True SOLVER.CLIP_GRADIENTS.ENABLED True "
    opts += "MODEL.FEEDBACK.PREDICTOR.BATCH_MANHATTAN True"
    cfg = setup_cfg(CONFIG, opts.split() + ["OUTPUT_DIR", str(tmp_path / "out")])
    trainer = FeedbackTrainer(cfg)
    trainer.resume_or_load(resume=False)
    weight = trainer.model.backbone.bottom_up.res2[0].conv1.weight
    start = float(torch.linalg.vector_norm(weight.detach()))
    trainer.train()
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(math.isfinite(v) for v, _ in losses)
    assert float(torch.linalg.vector_norm(weight.detach())) == pytest.approx(start, rel=1e-5)
    assert trainer.optimizer.state[weight][STATE_KEY] == pytest.approx(start, rel=1e-6)
    groups = trainer.optimizer.param_groups
    assert {g["clip_set"] for g in groups if g["batch_manhattan"]} == {"HEAD", "PREDICTOR"}
    assert {g["clip_set"] for g in groups if g["max_grad_norm"]} == {"FPN"}


def test_pretraining_keeps_fa_weight_norms_with_the_flag(tmp_path):
    data, out = tmp_path / "cls", tmp_path / "pretrain"
    generate_classification_dataset(data, num_train=12, num_val=6, image_size=32)
    args = ["--data", str(data), "--output-dir", str(out), "--rule", "fa", "--arch", "resnet18"]
    args += ["--image-size", "32", "--batch-size", "4", "--max-iter", "2", "--workers", "0"]
    args += ["--device", "cpu", "--lr", "0.05", "--no-tensorboard", "--weight-norm-constraint"]
    pretrain_main(args)
    state = torch.load(out / "model_final.pth", weights_only=True)
    model, norms = state["model"], state["optimizer"]["state"]
    # the optimizer state is keyed by parameter index: match saved norms to weights by value
    saved = sorted(float(s[STATE_KEY]) for s in norms.values() if STATE_KEY in s)
    conv_weights = [w for n, w in model.items() if n.endswith("conv1.weight")]
    assert len(saved) >= len(conv_weights) > 0
    for weight in conv_weights:  # every fa conv kept its initial norm: one saved norm equals it
        norm = float(torch.linalg.vector_norm(weight))
        assert min(abs(norm - s) for s in saved) <= 1e-5 * norm
