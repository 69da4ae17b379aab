"""The alignment hook logs angle(B, W) per layer and per part, for detectors and classifiers."""

import math

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from signsym_det import convert
from signsym_det.classification.model import stage_of
from signsym_det.engine.alignment_hook import AlignmentHook


def sign_angle(weight):
    """angle(sign(W), W) in degrees: cos = sum|W| / (sqrt(n) * ||W||), whatever B's scale."""
    w = weight.detach().double().flatten()
    return math.degrees(math.acos(float(w.abs().sum() / (math.sqrt(w.numel()) * w.norm()))))


class FakeTrainer:
    def __init__(self, model):
        self.model, self.iter = model, 0


def logged(hook, model, iteration):
    trainer = FakeTrainer(model)
    hook.trainer = trainer
    with EventStorage(iteration) as storage:
        trainer.storage, trainer.iter = storage, iteration
        hook.after_step()
        return {key: values.latest() for key, values in storage.histories().items()}


def test_detector_parts_by_default_and_a_classifiers_own_parts():
    torch.manual_seed(0)
    detector = nn.Module()
    detector.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    detector.head = nn.Sequential(nn.Conv2d(4, 4, 1))
    detector = convert(detector, "sign_symmetry")
    scalars = logged(AlignmentHook(period=2), detector, iteration=1)
    layers = {"backbone.0": detector.backbone[0], "backbone.1": detector.backbone[1]}
    layers["head.0"] = detector.head[0]
    for name, layer in layers.items():
        assert scalars[f"weight_angle_layer/{name}"] == pytest.approx(sign_angle(layer.weight))
    backbone = [sign_angle(layers[n].weight) for n in ("backbone.0", "backbone.1")]
    assert scalars["weight_angle/backbone"] == pytest.approx(sum(backbone) / 2)
    assert scalars["weight_angle/head"] == pytest.approx(sign_angle(layers["head.0"].weight))
    assert logged(AlignmentHook(period=2), detector, iteration=2) == {}  # not due

    classifier = nn.Sequential()
    classifier.add_module("conv1", nn.Conv2d(3, 4, 3))
    classifier.add_module("layer1", nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1)))
    classifier = convert(classifier, "sign_symmetry")
    scalars = logged(AlignmentHook(period=1, part_of=stage_of), classifier, iteration=0)
    assert {k for k in scalars if not k.startswith("weight_angle_layer/")} == {
        "weight_angle/stem",
        "weight_angle/layer1",
    }
    stage = [sign_angle(classifier.layer1[i].weight) for i in (0, 1)]
    assert scalars["weight_angle/layer1"] == pytest.approx(sum(stage) / 2)
