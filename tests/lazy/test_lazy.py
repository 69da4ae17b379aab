"""signsym_det.lazy: MODEL.FEEDBACK for LazyConfig model nodes, and convert() under instantiate."""

import pytest
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from omegaconf import OmegaConf
from torch import nn

import signsym_det
from signsym_det.feedback import conversion_report
from signsym_det.lazy import apply_feedback, detectron2_config, feedback_model


def retinanet_node(num_classes=3):
    """detectron2's RetinaNet node, shrunk to build in a moment (R18, narrow FPN/head)."""
    model = detectron2_config("common/models/retinanet.py", "model")
    stages = model.backbone.bottom_up.stages
    stages.depth = 18
    del stages.stride_in_1x1
    model.backbone.top_block.in_channels = 512
    model.num_classes = num_classes
    return model


def test_convert_takes_omegaconf_containers_in_instantiate():
    node = L(signsym_det.convert)(
        module=L(nn.ModuleList)(
            modules=[
                L(nn.Conv2d)(in_channels=1, out_channels=2, kernel_size=1),
                L(nn.Linear)(in_features=2, out_features=2),
                L(nn.Linear)(in_features=2, out_features=2),
            ]
        ),
        rule="fa",
        overrides=[["0", "bp"], ["1", {"rule": "sign_symmetry", "scale": "unit"}]],
        exclude=["2"],
    )
    layers = conversion_report(instantiate(node)).layers
    assert (layers["0"].rule, layers["1"].rule, layers["1"].scale) == (
        "bp",
        "sign_symmetry",
        "unit",
    )
    assert "2" not in layers
    mapping = L(signsym_det.convert)(
        module=L(nn.Linear)(in_features=2, out_features=2), rule="fa", overrides={"": "bp"}
    )
    assert conversion_report(instantiate(mapping)).layers[""].rule == "bp"


def test_apply_feedback_keeps_keys_and_interpolations():
    root = OmegaConf.create({"model": retinanet_node()}, flags={"allow_objects": True})
    apply_feedback(root.model, rule="fa", parts={"predictor": {"rule": "bp"}}, seed=3)
    assert root.model._target_ is feedback_model
    assert root.model.feedback.target == "detectron2.modeling.meta_arch.retinanet.RetinaNet"
    root.extra = "${model.feedback.rule}"  # an absolute interpolation into the node
    root = LazyConfig.apply_overrides(root, ["model.num_classes=5"])  # after apply_feedback
    model = instantiate(root.model)
    assert model.head.cls_score.out_channels == 5 * 9  # the head's ${..num_classes}
    assert root.extra == "fa"
    report = conversion_report(model)
    assert report.layers["head.cls_score"].rule == "bp"
    assert report.layers["head.bbox_subnet.0"].rule == "fa"
    assert report.layers["backbone.bottom_up.stem.conv1"].rule == "fa"


def test_apply_feedback_again_replaces_the_settings():
    node = apply_feedback(retinanet_node(), rule="fa", overrides=[["head.*", "none"]])
    apply_feedback(node, rule="brsf")
    assert node.feedback.target.endswith("RetinaNet")
    assert node.feedback.overrides == []
    assert set(conversion_report(instantiate(node)).counts) == {"brsf"}


def test_overrides_include_and_fixed_feedback():
    node = apply_feedback(
        retinanet_node(),
        rule="fa",
        overrides=[["head.cls_subnet.*", "sign_symmetry", "unit"], ["head.bbox_subnet.0", "bp"]],
        include=["head.*"],
        fixed_feedback="store",
    )
    model = instantiate(node)
    layers = conversion_report(model).layers
    assert all(name.startswith("head.") for name in layers)
    assert (layers["head.cls_subnet.0"].rule, layers["head.cls_subnet.0"].scale) == (
        "sign_symmetry",
        "unit",
    )
    assert layers["head.bbox_subnet.0"].rule == "bp"
    assert layers["head.bbox_subnet.2"].rule == "fa"
    assert "head.bbox_subnet.2.feedback_weight" in model.state_dict()  # stored, not redrawn


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(rule="sgn"), r"model.feedback.rule = 'sgn' is not a learning rule"),
        (dict(parts={"fpn": {"rule": "fb"}}), r"model.feedback.parts.fpn.rule = 'fb' .*inherit"),
        (dict(parts={"neck": {}}), r"unknown parts \['neck'\]; valid: \["),
        (dict(parts={"fpn": {"scl": 1}}), r"parts.fpn: unknown keys \['scl'\]"),
        (dict(scale="huge"), r"model.feedback.scale = 'huge' is not a feedback scale"),
        (dict(overrides=[["head.*"]]), r"model.feedback.overrides\[0\] = .*expected \[pattern"),
        (dict(include="head.*"), r"model.feedback.include = 'head.\*'; expected a list"),
    ],
)
def test_bad_settings_fail_when_built(settings, message):
    node = apply_feedback(retinanet_node(), rule="fa")
    node.feedback.merge_with(settings)
    with pytest.raises(ValueError, match=message):
        instantiate(node)


def test_apply_feedback_needs_a_lazy_node():
    with pytest.raises(TypeError, match="LazyCall node"):
        apply_feedback({"num_classes": 3})


def test_detectron2_config_names_a_missing_file():
    with pytest.raises(FileNotFoundError, match="common/models/nothing.py"):
        detectron2_config("common/models/nothing.py")
