"""FeedbackTrainer's resume state beyond detectron2 v0.6's checkpoint: the optimizer (unless
the trainer's own state holds it) and RetinaNet's loss_normalizer."""

import torch
from torch import nn

from signsym_det.engine.trainer import ModelAttributes, holds_optimizer


def test_model_attributes_round_trip_only_what_the_model_has():
    model = nn.Linear(2, 2)
    assert ModelAttributes(model).state_dict() == {}  # before RetinaNet's first forward
    model.loss_normalizer = torch.tensor(37.25)
    state = ModelAttributes(model).state_dict()
    assert state == {"loss_normalizer": 37.25} and type(state["loss_normalizer"]) is float
    other = nn.Linear(2, 2)
    ModelAttributes(other).load_state_dict({**state, "weight": 1.0})  # unknown names ignored
    assert other.loss_normalizer == 37.25 and isinstance(other.weight, nn.Parameter)


def test_optimizer_is_added_only_when_the_trainer_state_lacks_it():
    assert not holds_optimizer({"iteration": 3, "hooks": {}})  # detectron2 v0.6
    assert holds_optimizer({"iteration": 3, "_trainer": {"iteration": 3, "optimizer": {}}})
    assert holds_optimizer({"iteration": 3, "optimizer": {}})
