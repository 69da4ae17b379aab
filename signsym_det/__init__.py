"""signsym_det: object detectors trained with asymmetric-feedback learning rules.

The learning rules (``signsym_det.feedback``) are plain torch and work on any model.
When detectron2 is importable, importing this package also registers the
detectron2 backbone and meta-architecture builders (``signsym_det.modeling``).
"""

from .feedback import (  # noqa: F401
    FeedbackConv2d,
    FeedbackLinear,
    available_rules,
    convert,
    register_rule,
    strip,
)

__version__ = "0.1.0"

try:  # detectron2 glue is optional: the rules work without it
    import detectron2  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without detectron2
    pass
else:
    from . import modeling  # noqa: F401  (registers the builders)
    from .config import add_feedback_config  # noqa: F401
