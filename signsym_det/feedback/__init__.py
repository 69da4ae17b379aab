"""Learning rules as drop-in Conv2d / Linear / LocallyConnected2d layers, in plain torch (no
detectron2 here).

Per layer, y = conv(x, W) + b and g = dL/dy: dL/dx = conv_transpose(g, B) with the rule's B;
dL/dW and dL/db are backprop's. See :mod:`.rules` for the rules and scales, :mod:`.sources`
for where a layer's B comes from, :mod:`.convert` for putting rules on a model,
:mod:`.alignment` for B-vs-W and gradient angles.
"""

from .alignment import gradient_alignment, weight_alignment
from .auto_scale import is_normalisation, normalised_layers
from .convert import (
    ConversionReport,
    LayerFeedback,
    conversion_report,
    convert,
    parse_layer_spec,
    strip,
)
from .layers import (
    FeedbackConv2d,
    FeedbackLayer,
    FeedbackLinear,
    advance_feedback_step,
    install_step_hook,
)
from .locally_connected import FeedbackLocallyConnected2d, LocallyConnected2d
from .rules import (
    AUTO,
    BACKPROP,
    PLAIN,
    SCALES,
    FeedbackRule,
    available_rules,
    check_scale,
    get_rule,
    parse_rule,
    register_rule,
)
from .sources import (
    DEFAULT_FIXED_FEEDBACK,
    FIXED_FEEDBACK,
    FeedbackSource,
    FromWeight,
    PackedFixed,
    RegeneratedFixed,
    StoredFixed,
    Trained,
)

__all__ = [
    "AUTO",
    "BACKPROP",
    "DEFAULT_FIXED_FEEDBACK",
    "FIXED_FEEDBACK",
    "PLAIN",
    "SCALES",
    "ConversionReport",
    "FeedbackConv2d",
    "FeedbackLayer",
    "FeedbackLinear",
    "FeedbackLocallyConnected2d",
    "FeedbackRule",
    "FeedbackSource",
    "FromWeight",
    "LayerFeedback",
    "LocallyConnected2d",
    "PackedFixed",
    "RegeneratedFixed",
    "StoredFixed",
    "Trained",
    "advance_feedback_step",
    "available_rules",
    "check_scale",
    "conversion_report",
    "convert",
    "get_rule",
    "gradient_alignment",
    "install_step_hook",
    "is_normalisation",
    "normalised_layers",
    "parse_layer_spec",
    "parse_rule",
    "register_rule",
    "strip",
    "weight_alignment",
]
