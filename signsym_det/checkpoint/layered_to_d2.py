"""A layered convnet checkpoint (``--arch convnet``) -> the detectron2 backbone's tensors.

The classifier is ``layers.{l}.0`` (conv) + ``layers.{l}.1`` (activation) for the hidden layers
``l < len(channels)`` and ``layers.{L}.1`` (Linear) for the output; the detector's
:class:`~signsym_det.modeling.convnet_backbone.ConvNetBackbone` has the same names for the
hidden layers. Kept: every tensor of a hidden conv (weight, bias, a rule's ``feedback_*``
state: it moves with its layer). Dropped, and reported: the output layer ``layers.{L}.*`` and
DFA's ``feedback_{l}`` matrices (both belong to the classifier), DTP's inverses ``inverses.*``
(if a file keeps them beside the layers). A locally connected net (``convnet_lc``) has no
detector backbone: error.
"""

from __future__ import annotations

import re

from .torchvision_to_d2 import Conversion

_HIDDEN = re.compile(r"^layers\.(?P<layer>\d+)\.0\.(?P<tensor>[A-Za-z_]+)$")
_OUTPUT = re.compile(r"^layers\.(?P<layer>\d+)\.1\.(?:weight|bias|feedback_[a-z]+)$")
_DFA = re.compile(r"^feedback_\d+$")
_INVERSE = re.compile(r"^inverses\.\d+\.")


def is_layered(checkpoint) -> bool:
    """True for a checkpoint of a layered convnet (``"layout": "layered"``)."""
    return isinstance(checkpoint, dict) and checkpoint.get("layout") == "layered"


def layered_to_d2(state_dict: dict, convnet: dict, arch: str = "convnet") -> Conversion:
    """The hidden convs' tensors of a layered classifier (``convnet``: its ConvNetSpec fields)."""
    if arch != "convnet" or convnet.get("locally_connected"):
        raise ValueError(
            f"a {arch} (locally connected: {bool(convnet.get('locally_connected'))}) has no "
            "detectron2 backbone; only --arch convnet (shared conv weights) loads into one"
        )
    hidden = len(convnet["channels"])
    conversion = Conversion({})
    for key, value in state_dict.items():
        match = _HIDDEN.match(key)
        if match and int(match["layer"]) < hidden:
            conversion.state_dict[key] = value
        elif (match := _OUTPUT.match(key)) and int(match["layer"]) == hidden:
            conversion.dropped[key] = "classifier output layer"
        elif _DFA.match(key):
            conversion.dropped[key] = "DFA feedback matrix of the classifier"
        elif _INVERSE.match(key):
            conversion.dropped[key] = "DTP inverse (target propagation only)"
        else:
            raise ValueError(
                f"unexpected tensor {key!r} in a layered convnet with {hidden} hidden layers "
                "(expected layers.{l}.0.* for l < hidden, layers.{hidden}.1.*, feedback_{l}, "
                "inverses.*)"
            )
    return conversion
