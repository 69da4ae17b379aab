"""The training techniques as LazyConfig arguments (optimizer.techniques.*): Batch Manhattan,
the weight-norm constraint and per-part clipping act as hand computations say, from the
shipped config with command-line overrides, and a run with them trains end to end."""

import json
import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from repo_process import ROOT, run_python

from signsym_det.data.shapes import generate_detection_dataset
from signsym_det.lazy import apply_techniques, detectron2_config, technique_optimizer
from signsym_det.lazy_train_net import load_config

CONFIG = str(ROOT / "configs/Lazy/Shapes-Demo/retinanet_R_18_FPN.py")
TECHNIQUES = [
    "model.feedback.rule=fa",
    "optimizer.techniques.parts.backbone.batch_manhattan=True",
    "optimizer.techniques.parts.head.weight_norm_constraint=True",
    "optimizer.techniques.parts.fpn.clip_gradients=0.001",
]


def batch():
    """Two 64 px images with one box each, in detectron2's input format."""
    torch.manual_seed(0)
    items = []
    for label in (0, 3):
        instances = Instances((64, 64))
        instances.gt_boxes = Boxes(torch.tensor([[8.0, 10.0, 40.0, 44.0]]))
        instances.gt_classes = torch.tensor([label])
        image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
        items.append({"image": image, "instances": instances, "height": 64, "width": 64})
    return items


def norm(t):
    return float(torch.linalg.vector_norm(t.detach().double()))


def test_config_techniques_act_as_hand_computations_say():
    # a large lr, so that one plain step visibly changes a weight's norm
    cfg = load_config(CONFIG, [*TECHNIQUES, "model.backbone.out_channels=32", "optimizer.lr=20.0"])
    cfg.model.head.input_shape = [{"channels": 32}] * 5
    model = instantiate(cfg.model)
    model.train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr, wd = cfg.optimizer.lr, cfg.optimizer.weight_decay
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    with EventStorage():
        sum(model(batch()).values()).backward()
    grads = {n: p.grad.clone() for n, p in params.items() if p.grad is not None}
    optimizer.step()

    # Batch Manhattan in the backbone: w <- w - lr * (sign(g) + wd * w) on the first step
    name = "backbone.bottom_up.res2.0.conv1.weight"
    expected = before[name] - lr * (grads[name].sign() + wd * before[name])
    assert torch.allclose(params[name], expected, atol=1e-5)

    # FPN: the part's joint gradient norm clipped to 0.001, then plain SGD
    fpn = [n for n in grads if n.startswith(("backbone.fpn_", "backbone.top_block."))]
    total = sum(float(grads[n].double().square().sum()) for n in fpn) ** 0.5
    assert total > 0.001  # the clip bites
    name = "backbone.fpn_lateral3.weight"
    clipped = grads[name] * (0.001 / total)
    expected = before[name] - lr * (clipped + wd * before[name])
    assert torch.allclose(params[name], expected, atol=1e-5)

    # the head's fa weights keep their norm; a plain SGD step would have changed it
    name = "head.cls_subnet.0.weight"
    plain = before[name] - lr * (grads[name] + wd * before[name])
    assert norm(params[name]) == pytest.approx(norm(before[name]), rel=1e-6)
    assert norm(plain) != pytest.approx(norm(before[name]), rel=1e-3)
    assert torch.allclose(params[name], plain * (norm(before[name]) / norm(plain)), atol=1e-6)
    # the predictor (no technique): plain SGD
    name = "head.cls_score.weight"
    assert torch.allclose(params[name], before[name] - lr * (grads[name] + wd * before[name]))


def test_techniques_off_build_the_node_before_and_replace_on_reapply():
    node = detectron2_config("common/optim.py", "SGD")
    apply_techniques(node, parts={"fpn": {"clip_gradients": 2.0}})
    apply_techniques(node, weight_norm_rules=["fa"])  # replaces: clipping off again
    assert node._target_ is technique_optimizer
    assert node.techniques.target == "torch.optim.sgd.SGD"
    assert node.techniques.parts.fpn.clip_gradients == 0.0
    assert list(node.techniques.weight_norm_rules) == ["fa"]
    model = torch.nn.Linear(2, 2)
    node.params.model = model
    optimizer = instantiate(node)
    assert type(optimizer) is torch.optim.SGD  # nothing on: the node's own optimizer


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.techniques.parts.fpn.clip_gradients=-1", "parts.fpn.clip_gradients = -1"),
        ("optimizer.techniques.parts.head.batch_manhattan=1", "valid: True, False"),
        ("optimizer.techniques.weight_norm_rules=[nope]", "nope"),
        ("+optimizer.techniques.parts.neck.batch_manhattan=True", "unknown parts ['neck']"),
        ("+optimizer.techniques.parts.fpn.manhattan=True", "unknown keys ['manhattan']"),
        ("optimizer.techniques.target=torch.optim.AdamW", "valid: torch.optim.SGD"),
    ],
)
def test_bad_technique_arguments_fail_when_built(override, message):
    cfg = load_config(CONFIG, [override, "optimizer.techniques.parts.fpn.batch_manhattan=True"])
    cfg.optimizer.params.model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        instantiate(cfg.optimizer)


@pytest.mark.slow
def test_a_run_with_the_techniques_trains_and_checkpoints_them(tmp_path):
    generate_detection_dataset(tmp_path / "datasets" / "shapes", num_train=4, num_val=3)
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    tiny = ["train.max_iter=2", "train.log_period=1", "dataloader.train.total_batch_size=2"]
    tiny += ["dataloader.train.num_workers=0", "dataloader.test.num_workers=0"]
    proc = run_python(
        env,
        "-m",
        "signsym_det.lazy_train_net",
        "--config-file",
        CONFIG,
        *TECHNIQUES,
        *tiny,
        f"train.output_dir={out}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(out / "model_final.pth", weights_only=True)
    assert state["iteration"] == 1
    groups = state["trainer"]["optimizer"]["param_groups"]
    assert {g["clip_set"] for g in groups if g["batch_manhattan"]} == {"BACKBONE"}
    assert {g["clip_set"] for g in groups if g["max_grad_norm"] > 0} == {"FPN"}
    # the constrained head weights are at their recorded initial norms after 2 steps
    states = state["trainer"]["optimizer"]["state"].values()
    initial = sorted(float(s["initial_norm"]) for s in states if "initial_norm" in s)
    subnets = ("head.cls_subnet.", "head.bbox_subnet.")
    head = [
        norm(w)
        for n, w in state["model"].items()
        if n.startswith(subnets) and n.endswith(".weight")
    ]
    head = sorted(head)
    assert len(initial) == len(head) == 4  # cls/bbox subnets, 2 convs each
    assert initial == pytest.approx(head, rel=1e-5)
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in r for r in records)
