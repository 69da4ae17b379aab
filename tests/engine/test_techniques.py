"""Batch Manhattan, per-part gradient clipping and the weight-norm constraint at detection time,
against hand computations."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from signsym_det import convert
from signsym_det.config import add_feedback_config, validate_feedback_config
from signsym_det.engine.optim import build_optimizer
from signsym_det.feedback.weight_norm import constrain_weight_norms


def tiny_detector(rule="sign_symmetry", **kwargs):
    """backbone (2 convs), head (1 conv) and a predictor conv; parts by name as in a detector."""
    torch.manual_seed(0)
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    model.head = nn.Sequential(nn.Conv2d(4, 4, 1))
    model.head.cls_score = nn.Conv2d(4, 2, 1)
    return convert(model, rule, **kwargs)


def forward(model, x):
    return model.head(model.backbone(x))  # head.0 then head.cls_score


def backward(model, seed, factor=1.0):
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    ((forward(model, x) - 1).square().mean() * factor).backward()


def detection_cfg(opts=()):
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_list(
        ["SOLVER.BASE_LR", 0.1, "SOLVER.MOMENTUM", 0.9, "SOLVER.WEIGHT_DECAY", 0.01]
    )
    cfg.merge_from_list(list(opts))
    return validate_feedback_config(cfg)


def test_no_technique_leaves_detectron2s_optimizer():
    optimizer = build_optimizer(detection_cfg(), tiny_detector())
    assert type(optimizer) is torch.optim.SGD


def test_adamw_steps_as_torchs_adamw_with_detectron2s_bias_factors():
    model = tiny_detector()
    opts = ["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BIAS_LR_FACTOR", 2.0]
    opts += ["SOLVER.WEIGHT_DECAY_BIAS", 0.0, "SOLVER.CLIP_GRADIENTS.ENABLED", True]
    opts += ["SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.05]
    optimizer = build_optimizer(detection_cfg(opts), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    reference = copy.deepcopy(model)
    named = dict(reference.named_parameters())
    weights = [p for n, p in named.items() if not n.endswith(".bias")]
    biases = [p for n, p in named.items() if n.endswith(".bias")]
    by_hand = torch.optim.AdamW(
        [{"params": weights}, {"params": biases, "lr": 0.2, "weight_decay": 0.0}],
        lr=0.1,
        weight_decay=0.01,
    )
    for seed in (1, 2, 3):
        for net, opt in ((model, optimizer), (reference, by_hand)):
            opt.zero_grad()
            backward(net, seed, factor=10.0)
            if net is reference:
                for p in net.parameters():
                    p.grad.clamp_(-0.05, 0.05)
            opt.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), named[name].detach(), msg=name)


def test_batch_manhattan_steps_match_a_hand_computation():
    model = tiny_detector()
    cfg = detection_cfg(["MODEL.FEEDBACK.BACKBONE.BATCH_MANHATTAN", True])
    optimizer = build_optimizer(cfg, model)
    lr, mu, wd = 0.1, 0.9, 0.01
    bm, plain = model.backbone[0].weight, model.head.cls_score.weight
    expected = {}
    velocity = {}
    for seed in (1, 2):
        optimizer.zero_grad()
        backward(model, seed)
        for name, param, grad in (("bm", bm, bm.grad.sign()), ("plain", plain, plain.grad)):
            w = param.detach().clone()
            v = grad + wd * w if name not in velocity else mu * velocity[name] + grad + wd * w
            velocity[name], expected[name] = v, w - lr * v
        optimizer.step()
        torch.testing.assert_close(bm.detach(), expected["bm"])
        torch.testing.assert_close(plain.detach(), expected["plain"])


def test_part_clipping_scales_the_parts_joint_gradient_norm_kolen_pollack_b_included():
    model = tiny_detector("kolen_pollack")
    cfg = detection_cfg(
        [
            "SOLVER.MOMENTUM",
            0.0,
            "SOLVER.WEIGHT_DECAY",
            0.0,
            "MODEL.FEEDBACK.HEAD.CLIP_GRADIENTS",
            0.5,
        ]
    )
    optimizer = build_optimizer(cfg, model)
    backward(model, 3, factor=100.0)
    head = [p for n, p in model.named_parameters() if n.startswith("head.0.")]
    assert any(n.endswith("feedback_weight") for n, _ in model.head[0].named_parameters())
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in head]))
    assert norm > 0.5
    others = [p for n, p in model.named_parameters() if not n.startswith("head.0.")]
    expected = [p.detach() - 0.1 * p.grad * 0.5 / norm for p in head]
    expected += [p.detach() - 0.1 * p.grad for p in others]
    optimizer.step()
    for param, value in zip(head + others, expected):
        torch.testing.assert_close(param.detach(), value)


def test_detectron2_clipping_clips_every_gradient_a_rule_produced():
    model = tiny_detector("kolen_pollack")
    clip = ["SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value"]
    clip += ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.01, "SOLVER.MOMENTUM", 0.0]
    clip += ["SOLVER.WEIGHT_DECAY", 0.0, "MODEL.FEEDBACK.PREDICTOR.BATCH_MANHATTAN", True]
    optimizer = build_optimizer(detection_cfg(clip), model)
    backward(model, 4, factor=100.0)
    feedback = model.backbone[2].feedback_weight
    assert isinstance(feedback, nn.Parameter) and feedback.grad.abs().max() > 0.01
    expected = {
        n: p.detach() - 0.1 * p.grad.clamp(-0.01, 0.01) for n, p in model.named_parameters()
    }
    for n, p in model.named_parameters():  # the predictor steps on the sign of the clipped grad
        if n.startswith("head.cls_score."):
            expected[n] = p.detach() - 0.1 * p.grad.clamp(-0.01, 0.01).sign()
    optimizer.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), expected[name], msg=name)


def constrained_training(model, steps, seed=0, state=None):
    """SGD (momentum, weight decay) with the constraint on fa/frsf layers; ``state`` resumes."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.05)
    constraint = constrain_weight_norms(model, optimizer)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    for step in range(steps):
        optimizer.zero_grad()
        backward(model, seed + step)
        optimizer.step()
    return optimizer, constraint


def frobenius(tensor):
    return float(torch.linalg.vector_norm(tensor.detach().double()))


def test_weight_norm_constraint_keeps_initial_norms_of_trainable_fixed_feedback_weights():
    model = tiny_detector("fa", overrides=[("head.0", "frsf"), ("head.cls_score", "bp")])
    start = {n: frobenius(p) for n, p in model.named_parameters() if n.endswith("weight")}
    optimizer, constraint = constrained_training(model, 4)
    constrained = ["backbone.0", "backbone.2", "head.0"]
    assert sorted(constraint.initial_norms()) == constrained
    held = [p for group in optimizer.param_groups for p in group["params"]]
    for name in constrained:
        weight = model.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter) and weight.requires_grad
        assert any(weight is p for p in held)
        assert frobenius(weight) == pytest.approx(start[f"{name}.weight"], rel=1e-6)
        assert constraint.initial_norms()[name] == pytest.approx(start[f"{name}.weight"], rel=1e-6)
    # the bp layer is not constrained: weight decay and the steps change its norm
    assert frobenius(model.head.cls_score.weight) != pytest.approx(start["head.cls_score.weight"])


def test_weight_norm_constraint_with_adamw_rescales_adams_own_step():
    """Adam initialises a parameter's state only while it is empty: the constraint must not
    fill it first. Step 1 = AdamW's unconstrained step, then rescaled to the initial norm."""
    plain, constrained = tiny_detector("fa"), tiny_detector("fa")
    start = frobenius(constrained.backbone[0].weight)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.01) for m in (plain, constrained)]
    constrain_weight_norms(constrained, optimizers[1])
    for model, optimizer in zip((plain, constrained), optimizers):
        backward(model, 0)
        optimizer.step()
    expected = plain.backbone[0].weight * (start / frobenius(plain.backbone[0].weight))
    assert torch.allclose(constrained.backbone[0].weight, expected, atol=1e-6)
    state = optimizers[1].state[constrained.backbone[0].weight]
    assert torch.equal(state["exp_avg"], optimizers[0].state[plain.backbone[0].weight]["exp_avg"])
    assert float(state["initial_norm"]) == pytest.approx(start, rel=1e-6)


def test_resume_with_the_constraint_continues_exactly(tmp_path):
    straight = tiny_detector("fa")
    constrained_training(straight, 5)

    first = tiny_detector("fa")
    optimizer, constraint = constrained_training(first, 3)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, path)
    state = torch.load(path, weights_only=True)

    resumed = tiny_detector("fa")
    with torch.no_grad():
        for p in resumed.parameters():
            p.mul_(3.0)  # a different start: only the checkpoint can give the norms back
    optimizer, restored = constrained_training(resumed, 0, state=state)
    assert restored.initial_norms() == constraint.initial_norms()
    for step in (3, 4):
        optimizer.zero_grad()
        backward(resumed, step)
        optimizer.step()
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_weight_norm_constraint_needs_the_weights_in_the_optimizer():
    model = tiny_detector("fa")
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    with pytest.raises(
        ValueError, match=r"backbone.0.weight is trainable but not in the optimizer"
    ):
        constrain_weight_norms(model, optimizer)


def test_weight_norm_constraint_per_part_and_rule_from_the_config():
    model = tiny_detector("fa", overrides=[("head.0", "sign_symmetry")])
    cfg = detection_cfg(
        [
            "MODEL.FEEDBACK.BACKBONE.WEIGHT_NORM_CONSTRAINT", True,
            "MODEL.FEEDBACK.HEAD.WEIGHT_NORM_CONSTRAINT", True,
        ]
    )  # fmt: skip
    start = {n: frobenius(m.weight) for n, m in model.named_modules() if hasattr(m, "weight")}
    optimizer = build_optimizer(cfg, model)
    for seed in range(3):
        optimizer.zero_grad()
        backward(model, seed)
        optimizer.step()
    for name in ("backbone.0", "backbone.2"):  # fa in BACKBONE: constrained
        assert frobenius(model.get_submodule(name).weight) == pytest.approx(start[name], rel=1e-6)
    # head.0: sign_symmetry (not in WEIGHT_NORM_RULES); cls_score: PREDICTOR (off)
    for name in ("head.0", "head.cls_score"):
        assert frobenius(model.get_submodule(name).weight) != pytest.approx(start[name], rel=1e-6)


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "MODEL.FEEDBACK.FPN.BATCH_MANHATTAN",
            "yes",
            r"cfg.MODEL.FEEDBACK.FPN.BATCH_MANHATTAN = 'yes'; valid: True, False",
        ),
        (
            "MODEL.FEEDBACK.HEAD.WEIGHT_NORM_CONSTRAINT",
            1,
            r"cfg.MODEL.FEEDBACK.HEAD.WEIGHT_NORM_CONSTRAINT = 1; valid: True, False",
        ),
        (
            "MODEL.FEEDBACK.BACKBONE.CLIP_GRADIENTS",
            -1.0,
            r"cfg.MODEL.FEEDBACK.BACKBONE.CLIP_GRADIENTS = -1.0; expected a number >= 0",
        ),
        ("SOLVER.OPTIMIZER", "Adam", r"cfg.SOLVER.OPTIMIZER = 'Adam'; valid: \['SGD', 'AdamW'\]"),
        (
            "MODEL.FEEDBACK.HEAD.BATCH_MANHATTAN",
            True,
            r"HEAD.BATCH_MANHATTAN = True is an SGD technique here, "
            r"but cfg.SOLVER.OPTIMIZER = 'AdamW'",
        ),
        (
            "MODEL.FEEDBACK.WEIGHT_NORM_RULES",
            ["fa", "fx"],
            r"cfg.MODEL.FEEDBACK.WEIGHT_NORM_RULES holds 'fx', not a learning rule; valid: .*frsf",
        ),
    ],
)
def test_bad_technique_settings_name_key_value_and_choices(key, value, message):
    cfg = detection_cfg(["SOLVER.OPTIMIZER", "AdamW"] if "BATCH_MANHATTAN" in key else [])
    node, _, leaf = key.rpartition(".")
    cfg_node = cfg
    for part in node.split("."):
        cfg_node = cfg_node[part]
    cfg_node[leaf] = value  # bypass yacs' type coercion: what a Python caller can do
    with pytest.raises(ValueError, match=message):
        validate_feedback_config(cfg)
