"""Bartunov et al. 2018's algorithms in plain torch: DTP, SDTP, AO-SDTP and DFA.

:mod:`.networks` builds layered classifiers (Bartunov's strided-conv family, with inverses for
target propagation), :mod:`.dtp` does one target-propagation training step, :mod:`.dfa` trains
by direct feedback alignment under ``loss.backward()``, :mod:`.diagnostics` measures the angle
between an algorithm's weight update and backprop's.
"""

from .dfa import DFAClassifier, build_dfa_classifier
from .diagnostics import backprop_gradients, layer_gradients, update_angles
from .dtp import (
    VARIANTS,
    DTPStep,
    hidden_targets,
    inverse_layers,
    make_dtp_optimizers,
    make_inverse_optimizers,
    output_error,
    train_inverse,
)
from .networks import (
    ACTIVATIONS,
    ConvNetSpec,
    LayeredClassifier,
    TargetPropNet,
    build_classifier,
    build_dtp_classifier,
)

__all__ = [
    "ACTIVATIONS",
    "VARIANTS",
    "ConvNetSpec",
    "DFAClassifier",
    "DTPStep",
    "LayeredClassifier",
    "TargetPropNet",
    "backprop_gradients",
    "build_classifier",
    "build_dfa_classifier",
    "build_dtp_classifier",
    "hidden_targets",
    "inverse_layers",
    "layer_gradients",
    "make_dtp_optimizers",
    "make_inverse_optimizers",
    "output_error",
    "train_inverse",
    "update_angles",
]
