"""detectron2 glue: registered rule-swapped backbones and meta-architectures."""

from .backbone import WRAPPED_BACKBONES, build_feedback_backbone  # noqa: F401
from .convnet_backbone import ConvNetBackbone, add_convnet_config  # noqa: F401
from .meta_arch import FeedbackDetector, FeedbackRetinaNet  # noqa: F401
from .parts import convert_arguments, convert_from_config, part_patterns  # noqa: F401
