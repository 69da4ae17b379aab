"""check_load / log_load_report on plain dicts: the expected reports are written out by hand."""

import logging

import pytest
import torch

from signsym_det.checkpoint import CheckpointMismatchError, LoadReport, check_load
from signsym_det.checkpoint.load_checks import backbone_rule, find_backbone_prefix
from signsym_det.checkpoint.load_report import log_load_report

P = "backbone.bottom_up."
STEM, BLOCK, HEAD = f"{P}stem.conv1", f"{P}res2.0.conv1", "head.cls_score"
RULES = {STEM: "fa", BLOCK: "fa", HEAD: "sign_symmetry"}


def model_state():
    """Two backbone convs (fa: weight + B, the stem with BN) and a head conv (no B)."""
    t = torch.arange
    return {
        f"{STEM}.weight": t(4.0),
        f"{STEM}.feedback_weight": t(4.0) + 10,
        f"{STEM}.norm.weight": t(2.0),
        f"{STEM}.norm.bias": t(2.0),
        f"{STEM}.norm.running_mean": t(2.0),
        f"{STEM}.norm.running_var": t(2.0),
        f"{BLOCK}.weight": t(6.0),
        f"{BLOCK}.feedback_weight": t(6.0) + 20,
        f"{BLOCK}.feedback_step": torch.tensor(3),
        f"{HEAD}.weight": t(3.0),
    }


def test_everything_loaded_restores_every_feedback_tensor():
    state = model_state()
    report = check_load(state, dict(state), layer_rules=RULES, recorded_rule="fa", path="f.pth")
    assert report.feedback_restored == [BLOCK, STEM]
    assert report.feedback_fresh == report.feedback_untouched == report.feedback_unused == []
    assert report.backbone_prefix == P and report.model_rule == "fa"
    weights = [f"{STEM}.weight", f"{STEM}.norm.weight", f"{STEM}.norm.bias", f"{BLOCK}.weight"]
    assert report.backbone_loaded == weights
    assert report.backbone_missing == report.stats_missing == report.unused_stage_keys == []
    assert not report.backbone_mismatch and report.explained_keys == set()


def test_weights_without_feedback_tensors_draw_fresh_ones():
    state = model_state()
    offered = {k: v for k, v in state.items() if "feedback" not in k and not k.startswith(BLOCK)}
    missing = [k for k in state if k not in offered]
    report = check_load(state, offered, missing=missing, layer_rules=RULES)
    assert report.feedback_fresh == [STEM] and report.feedback_fresh_rules == ["fa"]
    assert report.feedback_untouched == [BLOCK]  # neither its W nor its B in the file
    assert report.feedback_restored == []
    assert report.backbone_missing == [f"{BLOCK}.weight"] and report.backbone_mismatch
    assert report.explained_keys == {
        f"{STEM}.feedback_weight",
        f"{BLOCK}.feedback_weight",
        f"{BLOCK}.feedback_step",
    }


def test_feedback_tensors_the_model_cannot_use_are_reported():
    state = {k: v for k, v in model_state().items() if "feedback" not in k}
    offered = {**state, f"{HEAD}.feedback_weight": torch.ones(3)}
    report = check_load(state, offered, unexpected=[f"{HEAD}.feedback_weight"])
    assert report.feedback_unused == [HEAD]
    assert report.explained_keys == {f"{HEAD}.feedback_weight"}
    assert report.unused_stage_keys == []  # not a backbone stage


def test_loaded_feedback_tensor_must_equal_the_file():
    state = model_state()
    offered = {**state, f"{BLOCK}.feedback_weight": torch.zeros(6)}
    with pytest.raises(RuntimeError, match=rf"{BLOCK}.feedback_weight differs from f.pth"):
        check_load(state, offered, path="f.pth")


def test_unused_and_wrong_shape_stage_tensors_are_a_mismatch():
    state = model_state()
    extra = {f"{P}res2.1.conv1.weight": torch.ones(1), f"{P}res2.1.conv1.norm.running_var": 1}
    offered = {**state, **extra, f"{BLOCK}.weight": torch.ones(7)}
    report = check_load(
        state,
        offered,
        unexpected=list(extra),
        wrong_shape=[f"{BLOCK}.weight"],
        missing=[f"{BLOCK}.feedback_weight"],
    )
    assert report.backbone_missing == [f"{BLOCK}.weight"]
    assert report.unused_stage_keys == [f"{P}res2.1.conv1.weight", f"{BLOCK}.weight"]
    assert report.stats_unused == [f"{P}res2.1.conv1.norm.running_var"]
    assert report.backbone_mismatch and report.found_resnet and report.expected_resnet


def test_missing_statistics_are_counted_apart_from_weights():
    state = model_state()
    offered = {k: v for k, v in state.items() if "running" not in k}
    missing = [f"{STEM}.norm.running_mean", f"{STEM}.norm.running_var"]
    report = check_load(state, offered, missing=missing)
    assert report.stats_missing == missing and report.backbone_missing == []
    assert not report.backbone_mismatch


def test_recorded_rule_is_canonical_and_model_rule_is_the_backbones():
    state = model_state()
    rules = {**RULES, "head.a": "bp", "head.b": "bp", "head.c": "bp"}
    report = check_load(state, state, layer_rules=rules, recorded_rule="feedback_alignment")
    assert report.recorded_rule == "fa" and report.model_rule == "fa"  # head layers not counted
    assert check_load(state, state, recorded_rule="my_rule").recorded_rule == "my_rule"
    assert check_load(state, state).model_rule == "bp"  # no conv/linear layers known


def test_no_backbone_no_backbone_checks():
    state = {"head.weight": torch.ones(2)}
    report = check_load(state, {}, missing=["head.weight"])
    assert report.backbone_prefix is None
    assert report.backbone_loaded == report.backbone_missing == [] and not report.backbone_mismatch


def test_backbone_prefix_and_rule():
    keys = ["a.b.stem.conv1.weight", "stem.conv1.weight.x", "z.stem.conv1.weight"]
    assert find_backbone_prefix(keys) == "a.b."
    assert find_backbone_prefix(["conv1.weight"]) is None
    rules = {"x.a": "bp", "x.b": "fa", "x.c": "fa", "y.d": "bp", "y.e": "bp", "y.f": "bp"}
    assert backbone_rule(rules, "x.") == "fa"
    assert backbone_rule(rules, None) == "bp"
    assert backbone_rule({"x.a": "frsf", "x.b": "fa"}, "x") == "frsf"  # a tie: the first
    assert backbone_rule({"xy.a": "fa"}, "x.") == "bp"  # "xy" is not under "x"


def test_report_logging_and_raising(caplog):
    report = LoadReport(path="f.pth", recorded_rule="fa", model_rule="sign_symmetry")
    with caplog.at_level(logging.INFO, logger="signsym_det.checkpoint"):
        log_load_report(report)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'fa'" in warnings[0] and "'sign_symmetry'" in warnings[0]

    report = LoadReport(
        path="f.pth",
        backbone_prefix=P,
        backbone_loaded=["a"],
        backbone_missing=["b", "c"],
        found_resnet="R-34",
        expected_resnet="R-18",
    )
    with pytest.raises(CheckpointMismatchError, match=r"f.pth.*1/3 backbone weights.*has R-34"):
        log_load_report(report)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="signsym_det.checkpoint"):
        log_load_report(report, strict=False)
    assert [r.levelname for r in caplog.records if "BACKBONE MISMATCH" in r.getMessage()] == [
        "WARNING"
    ]
