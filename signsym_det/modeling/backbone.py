"""Rule-swapped backbones: detectron2's own builders, then ``convert()``.

Each builder here is registered in ``BACKBONE_REGISTRY``, so any detectron2 detector
takes a rule-swapped backbone by ``MODEL.BACKBONE.NAME`` alone, e.g. Faster R-CNN with a
sign-symmetry ResNet-FPN and backprop heads (``configs/*faster_rcnn*``).
"""

from detectron2.modeling import BACKBONE_REGISTRY

from .parts import convert_from_config

#: Our builder name -> the detectron2 builder it wraps.
WRAPPED_BACKBONES = {
    "build_feedback_resnet_backbone": "build_resnet_backbone",
    "build_feedback_resnet_fpn_backbone": "build_resnet_fpn_backbone",
    "build_feedback_retinanet_resnet_fpn_backbone": "build_retinanet_resnet_fpn_backbone",
}


def build_wrapped_backbone(cfg, input_shape, name):
    """Build the registered backbone ``name`` and swap its layers per cfg.MODEL.FEEDBACK."""
    if name == "build_feedback_backbone" or name in WRAPPED_BACKBONES:
        raise ValueError(
            f"cfg.MODEL.FEEDBACK.BACKBONE_NAME = {name!r} would wrap a feedback backbone in "
            "itself; name a plain detectron2 backbone, e.g. 'build_resnet_fpn_backbone'"
        )
    if name not in BACKBONE_REGISTRY:
        raise ValueError(
            f"cfg.MODEL.FEEDBACK.BACKBONE_NAME = {name!r} is not a registered backbone; "
            f"valid: {sorted(k for k, _ in BACKBONE_REGISTRY)}"
        )
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    return convert_from_config(backbone, cfg, prefix="backbone.")


@BACKBONE_REGISTRY.register()
def build_feedback_backbone(cfg, input_shape):
    """Any registered backbone, named by cfg.MODEL.FEEDBACK.BACKBONE_NAME, rule-swapped."""
    return build_wrapped_backbone(cfg, input_shape, cfg.MODEL.FEEDBACK.BACKBONE_NAME)


def _register_wrapper(ours, theirs):
    def builder(cfg, input_shape):
        return build_wrapped_backbone(cfg, input_shape, theirs)

    builder.__name__ = builder.__qualname__ = ours
    builder.__doc__ = f"detectron2's ``{theirs}``, rule-swapped by cfg.MODEL.FEEDBACK."
    BACKBONE_REGISTRY.register(builder)


for _ours, _theirs in WRAPPED_BACKBONES.items():
    _register_wrapper(_ours, _theirs)
