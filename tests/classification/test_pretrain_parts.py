"""Pieces of the pretraining loop against independent computations."""

import math

import numpy as np
import pytest
import torch
from detectron2.solver import LRMultiplier
from PIL import Image
from torch import nn

from signsym_det.classification import (
    BatchManhattanSGD,
    build_classifier,
    build_optimizer,
    lr_multiplier,
)
from signsym_det.classification.data import ShardedEpochSampler
from signsym_det.classification.metrics import topk_correct
from signsym_det.data.classification import (
    generate_classification_dataset,
    render_classification_sample,
)
from signsym_det.data.shapes import SHAPE_CLASSES
from signsym_det.feedback import FeedbackConv2d, FeedbackLinear


def test_sampler_resumes_mid_epoch_and_shards_without_overlap():
    full = ShardedEpochSampler(50, 4, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert len(order) == 48 and len(set(order)) == 48  # 12 batches, the rest dropped
    resumed = ShardedEpochSampler(50, 4, seed=3)
    resumed.set_epoch(2, start_batch=5)
    assert list(resumed) == order[20:]
    full.set_epoch(3)
    assert list(full) != order

    shards = []
    for rank in range(3):
        sampler = ShardedEpochSampler(50, 4, rank=rank, world_size=3, seed=3)
        sampler.set_epoch(2)
        assert sampler.batches_per_epoch() == 4 and len(sampler) == 16
        shards.append(list(sampler))
    seen = [i for shard in shards for i in shard]
    assert len(seen) == len(set(seen)) == 48

    val = [list(ShardedEpochSampler(7, 2, rank=r, world_size=3, shuffle=False, drop_last=False))
           for r in range(3)]  # fmt: skip
    assert sorted(i for shard in val for i in shard) == list(range(7))


def test_batch_manhattan_steps_on_the_sign_of_the_gradient():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(5))
    start_a, start_b = a.detach().clone(), b.detach().clone()
    groups = [{"params": [a], "batch_manhattan": True}, {"params": [b]}]
    optimizer = BatchManhattanSGD(groups, lr=0.1, weight_decay=0.01)
    grad = torch.tensor([3.0, -0.002, 0.0, -7.0, 0.5])
    a.grad, b.grad = grad.clone(), grad.clone()
    optimizer.step()
    sign = torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0])
    torch.testing.assert_close(a.detach(), start_a - 0.1 * (sign + 0.01 * start_a))
    torch.testing.assert_close(b.detach(), start_b - 0.1 * (grad + 0.01 * start_b))


def test_schedules_match_their_formulas():
    step = lr_multiplier("step", total_iters=100, milestones=[30, 60], warmup_iters=10)
    expected = {0: 0.04, 5: 0.04 + 0.36 * 0.5, 10: 0.4, 29: 0.4, 30: 0.04, 59: 0.04, 60: 0.004}
    for t, lr in expected.items():
        assert 0.4 * step(t / 100) == pytest.approx(lr), t
    cosine = lr_multiplier("cosine", total_iters=110, warmup_iters=10)
    for t in (10, 35, 60, 109):
        lr = 0.2 * (1 + math.cos(math.pi * (t - 10) / 100))
        assert 0.4 * cosine(t / 110) == pytest.approx(lr), t
    # milestones at 0, repeated, or past the end: gamma ** (number of milestones <= t)
    odd = lr_multiplier("step", total_iters=10, milestones=[0, 5, 5, 200], gamma=0.5)
    assert [odd(t / 10) for t in (0, 4, 5, 9)] == [0.5, 0.5, 0.125, 0.125]
    short = lr_multiplier("cosine", total_iters=4, warmup_iters=8)  # ends inside the warmup
    assert short(3 / 4) == pytest.approx(0.1 + 0.9 * 3 / 8)
    # resuming at iteration 109 (detectron2's LRScheduler hook): the lr follows from t alone
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=123.0)
    optimizer.param_groups[0]["initial_lr"] = 0.4
    LRMultiplier(optimizer, cosine, 110, last_iter=108)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * (1 + math.cos(math.pi * 0.99)))


def test_classifier_rule_is_backprop_by_default():
    model = build_classifier("resnet50", 7, "sign_symmetry")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 53 and all(isinstance(m, FeedbackConv2d) for m in convs)
    assert {m.rule for m in convs} == {"sign_symmetry"}
    assert type(model.fc) is nn.Linear and model.fc.out_features == 7
    fa_head = build_classifier("resnet34", 3, "frsf", classifier_rule="fa")
    assert isinstance(fa_head.fc, FeedbackLinear) and fa_head.fc.rule == "fa"
    with pytest.raises(ValueError, match="resnet"):
        build_classifier("vgg11", 3, "fa")


def test_topk_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 2, 0]), ks=(1, 2)) == [1.0, 2.0]


def test_classification_set_is_balanced_deterministic_and_labelled_by_shape(tmp_path):
    first = generate_classification_dataset(tmp_path / "a", num_train=12, num_val=6, image_size=32)
    generate_classification_dataset(tmp_path / "b", num_train=12, num_val=6, image_size=32)
    for split, count in (("train", 2), ("val", 1)):
        for name in SHAPE_CLASSES:
            files = sorted((tmp_path / "a" / split / name).glob("*.png"))
            assert len(files) == count
            for f in files:
                assert f.read_bytes() == (tmp_path / "b" / split / name / f.name).read_bytes()
    image, label = render_classification_sample(first["params"], "train", 9)
    assert SHAPE_CLASSES[label] == SHAPE_CLASSES[9 % 6]
    stored = np.asarray(Image.open(tmp_path / "a" / "train" / SHAPE_CLASSES[label] / "000009.png"))
    assert np.array_equal(stored, image)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_classification_dataset(tmp_path / "c", num_train=6, num_val=6, image_size=32)


def test_optimizer_choice():
    model = build_classifier("resnet18", 3, "bp")
    sgd = build_optimizer(model, lr=0.1, batch_manhattan=True)
    assert [g["batch_manhattan"] for g in sgd.param_groups] == [True, False]
    assert [len(g["params"]) for g in sgd.param_groups][1] == 2  # fc weight and bias
    adamw = build_optimizer(model, lr=1e-3, optimizer="adamw", classifier_lr=1e-2)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["lr"] for g in adamw.param_groups] == [1e-3, 1e-2]
    with pytest.raises(ValueError, match="Batch Manhattan"):
        build_optimizer(model, lr=1e-3, optimizer="adamw", batch_manhattan=True)
