"""Rule-swapped detectors, registered in ``META_ARCH_REGISTRY``.

``FeedbackRetinaNet`` is detectron2's RetinaNet whose backbone, FPN, head subnets and
predictors are trained by the rules of cfg.MODEL.FEEDBACK. ``FeedbackDetector`` does
the same to any registered meta-architecture named by cfg.MODEL.FEEDBACK.META_ARCHITECTURE
(e.g. GeneralizedRCNN for Faster/Mask R-CNN). Both keep detectron2's classes and
parameter names, so stock checkpoints load; layers a feedback backbone builder already
converted are left as they are.
"""

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet

from .parts import convert_from_config


@META_ARCH_REGISTRY.register()
class FeedbackRetinaNet(RetinaNet):
    """RetinaNet (Lin et al. 2017) with asymmetric-feedback convolutions everywhere."""

    @configurable
    def __init__(self, *, feedback_cfg=None, **kwargs):
        super().__init__(**kwargs)
        if feedback_cfg is not None:
            convert_from_config(self, feedback_cfg)

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), "feedback_cfg": cfg}


@META_ARCH_REGISTRY.register()
def FeedbackDetector(cfg):
    """The meta-architecture cfg.MODEL.FEEDBACK.META_ARCHITECTURE, rule-swapped."""
    name = cfg.MODEL.FEEDBACK.META_ARCHITECTURE
    if name in ("FeedbackDetector", "FeedbackRetinaNet") or name not in META_ARCH_REGISTRY:
        raise ValueError(
            f"cfg.MODEL.FEEDBACK.META_ARCHITECTURE = {name!r} is not a plain registered "
            f"meta-architecture; valid: "
            f"{sorted(k for k, _ in META_ARCH_REGISTRY if not k.startswith('Feedback'))}"
        )
    return convert_from_config(META_ARCH_REGISTRY.get(name)(cfg), cfg)
