"""detectron2 glue: registered rule-swapped backbones and meta-architectures."""

from .backbone import WRAPPED_BACKBONES, build_feedback_backbone  # noqa: F401
from .meta_arch import FeedbackDetector, FeedbackRetinaNet  # noqa: F401
from .parts import convert_from_config, feedback_overrides, part_patterns  # noqa: F401
