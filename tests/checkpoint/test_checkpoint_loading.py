"""FeedbackCheckpointer's loading semantics: feedback tensors restored exactly or loudly
redrawn, recorded-rule mismatches warned about, wrong backbones refused."""

import logging
import pickle

import pytest
import torch
import torchvision
from checkpoint_helpers import PREFIX, retinanet, tiny_pretrain
from test_checkpoint_mapping import torchvision_source

from signsym_det.checkpoint import (
    CheckpointMismatchError,
    FeedbackCheckpointer,
    atomic_save,
    convert_pretrained,
    to_detectron2,
)
from signsym_det.classification import build_classifier, feedback_record

LOGGER = "signsym_det.checkpoint"
R18_CONVS = 20  # stem + 8 blocks x 2 convs + 3 shortcuts


def feedback_tensors(model):
    return {
        k[len(PREFIX) :]: v.clone()
        for k, v in model.state_dict().items()
        if k.startswith(PREFIX) and k.endswith(".feedback_weight")
    }


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER) and r.levelno >= 30]


def save_torchvision(tmp_path, arch, name="tv.pth"):
    torch.manual_seed(0)
    return str(atomic_save(getattr(torchvision.models, arch)().state_dict(), tmp_path / name))


@pytest.mark.slow  # trains a classifier (2 iterations)
@pytest.mark.parametrize("rule", ["fa", "frsf"])
def test_fixed_feedback_survives_pretrain_convert_load(tmp_path, caplog, rule):
    out = tiny_pretrain(tmp_path, rule)
    pretrained = torch.load(out / "model_final.pth", weights_only=True)["model"]
    converted = tmp_path / "converted.pth"
    convert_pretrained(out / "model_final.pth", converted)

    model = retinanet(rule)
    before = feedback_tensors(model)
    assert len(before) == R18_CONVS
    assert not any(torch.equal(v, pretrained[torchvision_source(k)]) for k, v in before.items())
    checkpointer = FeedbackCheckpointer(model)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        checkpointer.load(str(converted))
    after = feedback_tensors(model)
    for key, value in after.items():
        assert torch.equal(value, pretrained[torchvision_source(key)]), key
    assert len(checkpointer.last_report.feedback_restored) == R18_CONVS
    assert checkpointer.last_report.feedback_fresh == []
    assert warnings_of(caplog) == []
    # the unconverted pretraining checkpoint loads to the same tensors
    model = retinanet(rule)
    FeedbackCheckpointer(model).load(str(out / "model_final.pth"))
    assert all(torch.equal(after[k], v) for k, v in feedback_tensors(model).items())


@pytest.mark.slow
def test_bp_weights_into_fa_model_draw_fresh_feedback_with_a_warning(tmp_path, caplog):
    path = save_torchvision(tmp_path, "resnet18")
    model = retinanet("fa")
    fresh = feedback_tensors(model)
    checkpointer = FeedbackCheckpointer(model)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        checkpointer.load(path)
    messages = warnings_of(caplog)
    assert len(messages) == 1 and "FRESH" in messages[0] and f"{R18_CONVS} layers" in messages[0]
    assert path in messages[0]
    assert all(torch.equal(fresh[k], v) for k, v in feedback_tensors(model).items())
    assert len(checkpointer.last_report.feedback_fresh) == R18_CONVS
    assert checkpointer.last_report.backbone_missing == []

    caplog.clear()  # the same BP weights into a sign-symmetry model need no feedback tensors
    with caplog.at_level(logging.INFO, logger=LOGGER):
        FeedbackCheckpointer(retinanet("sign_symmetry")).load(path)
    assert warnings_of(caplog) == []


@pytest.mark.slow
def test_recorded_rule_mismatch_warns_naming_both(tmp_path, caplog):
    torch.manual_seed(0)
    classifier = build_classifier("resnet18", 10, "fa", seed=3)
    checkpoint = {"model": classifier.state_dict(), "feedback": feedback_record("fa", seed=3)}
    path = str(atomic_save(to_detectron2(checkpoint), tmp_path / "fa.pth"))

    with caplog.at_level(logging.INFO, logger=LOGGER):
        FeedbackCheckpointer(retinanet("sign_symmetry")).load(path)
    messages = warnings_of(caplog)
    assert any("'fa'" in m and "'sign_symmetry'" in m and "MISMATCH" in m for m in messages)
    assert any("NOT used" in m and f"{R18_CONVS} feedback tensors" in m for m in messages)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        FeedbackCheckpointer(retinanet("fa")).load(path)
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    "arch, depth, found, expected",
    [
        ("resnet34", 18, "R-34", "R-18"),
        ("resnet50", 18, "R-50", "R-18"),
        ("resnet18", 50, "R-18", "R-50"),
    ],  # fmt: skip
)
@pytest.mark.slow
def test_wrong_depth_is_an_error(tmp_path, caplog, arch, depth, found, expected):
    path = save_torchvision(tmp_path, arch)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        with pytest.raises(CheckpointMismatchError) as error:
            FeedbackCheckpointer(retinanet("sign_symmetry", depth)).load(path)
    message = str(error.value)
    assert path in message and f"has {found}" in message and f"expects {expected}" in message
    assert any(r.levelname == "ERROR" for r in caplog.records)


@pytest.mark.slow
def test_wrong_layout_is_an_error(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    renamed = {f"encoder.{k.replace('layer', 'stage')}": v for k, v in state.items()}
    path = str(atomic_save(renamed, tmp_path / "other.pth"))
    with pytest.raises(CheckpointMismatchError, match="0/60 backbone weights loaded"):
        FeedbackCheckpointer(retinanet("sign_symmetry")).load(path)
    # opting out keeps the ERROR log but loads what matches
    checkpointer = FeedbackCheckpointer(retinanet("sign_symmetry"), check_backbone=False)
    checkpointer.load(path)
    assert len(checkpointer.last_report.backbone_missing) == 60


@pytest.mark.slow
def test_detectron2_pkl_files_still_load(tmp_path):
    source = retinanet("bp")
    backbone = {
        k[len(PREFIX) :]: v.numpy() for k, v in source.state_dict().items() if k.startswith(PREFIX)
    }
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": backbone, "__author__": "someone", "matching_heuristics": True}, f)
    model = retinanet("bp", 18, "MODEL.FEEDBACK.SEED", 1)
    checkpointer = FeedbackCheckpointer(model)
    checkpointer.load(str(path))
    assert checkpointer.last_report.backbone_missing == []
    for key, value in backbone.items():
        assert torch.equal(model.state_dict()[PREFIX + key], torch.from_numpy(value))


@pytest.mark.slow
def test_detection_checkpoint_records_rule_and_restores_feedback(tmp_path, caplog):
    model = retinanet("frsf")
    FeedbackCheckpointer(model, save_dir=str(tmp_path)).save("model_0000009", iteration=9)
    saved = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    assert saved["feedback"] == {"rule": "frsf"}

    other = retinanet("frsf", 18, "MODEL.FEEDBACK.SEED", 1)
    assert not torch.equal(*(m.head.cls_subnet[0].feedback_state() for m in (model, other)))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        FeedbackCheckpointer(other).load(str(tmp_path / "model_0000009.pth"))
    assert warnings_of(caplog) == []
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
