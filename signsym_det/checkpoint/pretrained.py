"""Pretrained classification checkpoints -> detectron2 checkpoints (the dict and the file).

Accepted inputs (read weights-only):

* ours (``tools/pretrain_net.py``): ``{"model": torchvision-layout state dict,
  "feedback": {"rule", ...}, "layout": "torchvision", ...}``;
* Xiao et al.'s training script: ``{"state_dict": ..., "arch": ..., "epoch": ...}``, keys
  ``module.``-prefixed, fixed feedback tensors in buffers ``feedback_weight``;
* a plain torchvision state dict (e.g. torchvision's ImageNet weights), with or without
  ``module.``;
* a layered convnet of ``pretrain_net --arch convnet`` or the Bartunov study
  (``"layout": "layered"``, any algorithm): its hidden convs (:mod:`.layered_to_d2`);
* an already converted file (``"layout": "detectron2"``): returned as it is.

:func:`read_checkpoint` reads any ``.pth`` file into detectron2's form (converting these).

The output is ``{"model": detectron2-named backbone tensors, "__author__": "signsym_det",
"matching_heuristics": True, "layout": "detectron2", "feedback": {...} (if known),
"source": {...}, "dropped": [...]}``: ``DetectionCheckpointer`` loads it (its name
heuristics add ``backbone.bottom_up.``), and :class:`FeedbackCheckpointer` checks it.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from ..feedback import BACKPROP, PLAIN, get_rule
from .io import atomic_save, load_weights_only
from .layered_to_d2 import is_layered, layered_to_d2
from .torchvision_to_d2 import is_torchvision_resnet, strip_module_prefix, torchvision_to_d2

logger = logging.getLogger(__name__)

AUTHOR = "signsym_det"

#: Rule names of Xiao et al.'s script (``--algo``) that are not aliases of ours.
FOREIGN_RULE_NAMES = {
    "sham": BACKPROP,
    PLAIN: BACKPROP,
    "sign_symmetry_random_magnitude": "frsf",
    # a fixed B = sign(W0) * s: a fixed buffer, restored and used exactly as fa's
    "feedback_alignment_signed_init": "fa",
}


def canonical_rule(name) -> str:
    """Our canonical rule name for ``name`` (ours, an alias, or Xiao et al.'s ``--algo``)."""
    if name is None:
        return BACKPROP
    key = str(name).strip().lower()
    return FOREIGN_RULE_NAMES.get(key) or get_rule(key).name


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _check_names(state_dict: dict, source: str) -> None:
    """ValueError naming the first key of ``state_dict`` that is not a string."""
    bad = next((key for key in state_dict if not isinstance(key, str)), None)
    if bad is not None:
        raise ValueError(
            f"{source or 'checkpoint'}: state dict key {bad!r} ({type(bad).__name__}) is not "
            "a parameter name"
        )


def read_classification_checkpoint(obj: dict, source: str = "") -> dict:
    """Normalise a loaded classification checkpoint to ``{"state_dict", "feedback",
    "source"}`` (torchvision layout, no ``module.``); see the module docstring."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source or 'checkpoint'}: expected a dict, got {type(obj).__name__}")
    if _is_state_dict(obj):
        fmt, state_dict, meta = "torchvision state dict", obj, {}
    elif "state_dict" in obj and _is_state_dict(obj["state_dict"]):
        fmt, state_dict, meta = "Xiao et al. sign-symmetry script", obj["state_dict"], obj
    elif "model" in obj and _is_state_dict(obj["model"]):
        fmt, state_dict, meta = "signsym_det pretraining", obj["model"], obj
    else:
        raise ValueError(
            f"{source or 'checkpoint'}: no state dict found (expected a state dict, or one "
            f"under 'model' or 'state_dict'; top-level keys: {sorted(map(str, obj))[:10]})"
        )
    _check_names(state_dict, source)
    state_dict = strip_module_prefix(state_dict)
    info = {"path": str(source), "format": fmt}
    for key in ("arch", "epoch", "iteration", "num_classes"):
        if isinstance(meta.get(key), (int, str)):
            info[key] = meta[key]
    feedback = meta.get("feedback")
    if feedback is not None and not isinstance(feedback, dict):
        raise ValueError(
            f"{source or 'checkpoint'}: its 'feedback' record is a {type(feedback).__name__}, "
            "not a dict such as {'rule': 'fa', ...}"
        )
    return {
        "state_dict": state_dict,
        "feedback": dict(feedback) if feedback else None,
        "source": info,
    }


def _feedback_tensor_layers(state_dict: dict) -> list:
    return sorted(k.rsplit(".", 1)[0] for k in state_dict if k.endswith(".feedback_weight"))


def to_detectron2(obj: dict, *, rule: str | None = None, source: str = "") -> dict:
    """A detectron2 checkpoint dict from a loaded classification checkpoint ``obj``.

    ``rule`` records the learning rule when the file has no record (e.g. torchvision BP
    weights: ``"bp"``; Xiao et al.'s files: their ``--algo``); it must agree with a record.
    """
    if isinstance(obj, dict) and obj.get("layout") == "detectron2":
        if rule is not None:
            recorded = (obj.get("feedback") or {}).get("rule")
            if recorded is not None and canonical_rule(recorded) != canonical_rule(rule):
                raise ValueError(f"{source}: records rule {recorded!r}, not {rule!r}")
        return obj
    read = read_classification_checkpoint(obj, source)
    layered = is_layered(obj)
    if not layered and not is_torchvision_resnet(read["state_dict"]):
        raise ValueError(
            f"{source or 'checkpoint'} ({read['source']['format']}) is not a torchvision-layout "
            "ResNet (no conv1.weight / layer1.*): cannot map its names to detectron2's"
        )
    feedback = read["feedback"]
    if rule is not None:
        recorded = (feedback or {}).get("rule")
        if recorded is not None and canonical_rule(recorded) != canonical_rule(rule):
            raise ValueError(
                f"{source}: the file records rule {recorded!r}, but rule={rule!r} was given"
            )
        feedback = {**(feedback or {}), "rule": canonical_rule(rule)}
    elif feedback is not None and "rule" in feedback:
        feedback = {**feedback, "rule": canonical_rule(feedback["rule"])}
    if layered:
        convnet = obj.get("convnet") or {}
        conversion = layered_to_d2(read["state_dict"], convnet, obj.get("arch", "convnet"))
    else:
        conversion = torchvision_to_d2(read["state_dict"])
    _warn_inconsistent(feedback, conversion.state_dict, source)
    checkpoint = {
        "model": conversion.state_dict,
        "__author__": AUTHOR,
        "matching_heuristics": True,
        "layout": "detectron2",
        "source": read["source"],
        "dropped": sorted(conversion.dropped),
    }
    if feedback is not None:
        checkpoint["feedback"] = feedback
    if layered:
        checkpoint.update(convnet=dict(convnet), algorithm=obj.get("algorithm"))
    return checkpoint


def _warn_inconsistent(feedback, state_dict: dict, source: str) -> None:
    """Warn when the recorded rule and the presence of fixed feedback tensors disagree."""
    layers = _feedback_tensor_layers(state_dict)
    if feedback is None or "rule" not in feedback:
        if layers:
            logger.warning(
                "%s: %d layers carry feedback tensors but no rule is recorded; pass the rule "
                "(e.g. --rule fa) so that loading can check it",
                source,
                len(layers),
            )
        return
    record = get_rule(feedback["rule"])
    if record.state is not None and not layers:
        logger.warning(
            "%s records rule %r, whose fixed feedback tensors are NOT in the file: a model "
            "loading it will draw fresh ones",
            source,
            record.name,
        )
    if record.state is None and layers:
        logger.warning(
            "%s records rule %r (no feedback tensors), yet %d layers carry feedback_weight",
            source,
            record.name,
            len(layers),
        )


def convert_pretrained(
    in_path: str | os.PathLike, out_path: str | os.PathLike, *, rule: str | None = None
) -> dict:
    """Read ``in_path`` (weights-only), convert it (:func:`to_detectron2`) and write
    ``out_path`` atomically. Returns the written checkpoint."""
    source = os.fspath(in_path)
    checkpoint = to_detectron2(load_weights_only(source), rule=rule, source=source)
    atomic_save(checkpoint, out_path)
    return checkpoint


def read_checkpoint(path: str) -> dict:
    """A ``.pth`` file as detectron2 loads it: ``{"model": state dict, ...}``, read
    weights-only; a torchvision-layout ResNet (any form above) is converted in memory."""
    loaded = load_weights_only(path)
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: unknown checkpoint layout: a {type(loaded).__name__}, not a dict "
            "(expected a state dict or {'model': state dict, ...})"
        )
    if loaded.get("layout") == "detectron2":
        return loaded
    inner = loaded.get("model", loaded.get("state_dict", loaded))
    if is_layered(loaded):
        logger.info("%s is a layered convnet: converting it in memory", path)
        return to_detectron2(loaded, source=path)
    if isinstance(inner, dict) and is_torchvision_resnet(inner.keys()):
        logger.info("%s is a torchvision-layout ResNet: converting it in memory", path)
        return to_detectron2(loaded, source=path)
    return loaded if "model" in loaded else {"model": loaded}


def check_model_layout(checkpoint, path: str) -> None:
    """ValueError naming ``path`` unless ``checkpoint["model"]`` maps names to arrays."""
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    bad = None
    if not isinstance(model, dict):
        bad = f"'model' is a {type(model).__name__}, not a dict"
    else:
        bad = next(
            (
                f"{key!r} is a {type(value).__name__}"
                for key, value in model.items()
                if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray))
            ),
            None,
        )
    if bad is not None:
        keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else []
        raise ValueError(
            f"{path}: unknown checkpoint layout: {bad} (top-level keys {keys}); expected a "
            "state dict of tensors, or one under 'model' (detectron2) or 'state_dict'"
        )
