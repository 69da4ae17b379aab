"""torchvision ResNet state_dict -> detectron2 ResNet names (a pure function on a dict).

Renames (N = 1..4, i = block, K = 1..3, T = weight/bias/running_*/feedback_*):

    conv1.T                  -> stem.conv1.T
    bn1.T                    -> stem.conv1.norm.T
    layerN.i.convK.T         -> res{N+1}.i.convK.T
    layerN.i.bnK.T           -> res{N+1}.i.convK.norm.T
    layerN.i.downsample.0.T  -> res{N+1}.i.shortcut.T
    layerN.i.downsample.1.T  -> res{N+1}.i.shortcut.norm.T

A layer's rule state (``feedback_weight``, ``feedback_step``) moves with its layer. Dropped,
and reported: the classifier ``fc.*``, BatchNorm's ``num_batches_tracked`` (detectron2's
FrozenBN has no counter; BN restarts it) and the ``stride_tensor``/``padding_tensor``
buffers of Xiao et al.'s conv layers (copies of the layer's own stride/padding). Any
other key is an error: nothing is dropped silently. A ``module.`` prefix (DDP /
DataParallel) is removed first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LAYER_TENSORS = (
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "feedback_weight",
    "feedback_step",
)
DROPPED_TENSORS = {
    "num_batches_tracked": "BatchNorm batch counter (FrozenBN has none; BN restarts it)",
    "stride_tensor": "stride copy of Xiao et al.'s conv layer (the layer's own stride)",
    "padding_tensor": "padding copy of Xiao et al.'s conv layer (the layer's own padding)",
}
CLASSIFIER_PREFIX = "fc."

_TORCHVISION_KEY = re.compile(
    r"^(?:(?P<stem>conv1|bn1)"
    r"|layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<part>conv\d|bn\d|downsample\.[01]))"
    r"\.(?P<tensor>[A-Za-z_]+)$"
)
_D2_STAGE_KEY = re.compile(r"(?:^|\.)(?P<stage>stem|res[2-5])\.(?:(?P<block>\d+)\.)?")

#: detectron2's block counts per stage and block type -> depth.
RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


@dataclass
class Conversion:
    """The renamed state dict and what was left out (original key -> reason)."""

    state_dict: dict
    dropped: dict = field(default_factory=dict)
    renamed: dict = field(default_factory=dict)  # original key -> new key


def strip_module_prefix(state_dict: dict) -> dict:
    """Remove a ``module.`` prefix that every key has (DDP / DataParallel state dicts)."""
    keys = list(state_dict)
    if keys and all(key.startswith("module.") for key in keys):
        return {key[len("module.") :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def is_torchvision_resnet(keys) -> bool:
    """True for torchvision-layout ResNet keys (``conv1.weight`` and ``layer1.*``)."""
    keys = {key[len("module.") :] if key.startswith("module.") else key for key in keys}
    return "conv1.weight" in keys and any(key.startswith("layer1.") for key in keys)


def _rename(match: re.Match) -> str:
    tensor = match["tensor"]
    if match["stem"] is not None:
        return "stem.conv1." + ("norm." if match["stem"] == "bn1" else "") + tensor
    stage = f"res{int(match['stage']) + 1}.{match['block']}."
    part = match["part"]
    if part == "downsample.0":
        return stage + "shortcut." + tensor
    if part == "downsample.1":
        return stage + "shortcut.norm." + tensor
    if part.startswith("bn"):
        return stage + "conv" + part[2:] + ".norm." + tensor
    return stage + part + "." + tensor


def torchvision_to_d2(state_dict: dict) -> Conversion:
    """Rename a torchvision ResNet state dict to detectron2's ResNet names (module docstring).

    Raises ValueError listing every key that is neither mapped nor a known drop.
    """
    state_dict = strip_module_prefix(state_dict)
    out, dropped, renamed, unknown = {}, {}, {}, []
    for key, value in state_dict.items():
        tensor = key.rsplit(".", 1)[-1]
        if key.startswith(CLASSIFIER_PREFIX):
            dropped[key] = "classifier (detection heads replace it)"
            continue
        if tensor in DROPPED_TENSORS:
            dropped[key] = DROPPED_TENSORS[tensor]
            continue
        match = _TORCHVISION_KEY.match(key)
        if match is None or tensor not in LAYER_TENSORS:
            unknown.append(key)
            continue
        new = _rename(match)
        out[new] = value
        renamed[key] = new
    if unknown:
        shown = ", ".join(unknown[:8]) + (
            f", ... ({len(unknown)} in all)" if len(unknown) > 8 else ""
        )
        raise ValueError(
            f"not a torchvision ResNet state dict: no detectron2 name for {shown}. "
            "Expected conv1/bn1, layerN.i.{convK,bnK,downsample.0/1} and fc keys."
        )
    return Conversion(out, dropped, renamed)


def describe_resnet(keys) -> dict:
    """Block type, blocks per stage and depth of the detectron2-named ResNet in ``keys``.

    Returns ``{"block": "basic"|"bottleneck"|None, "blocks": (n2, n3, n4, n5), "depth":
    int|None, "stem": bool}``; blocks are counted from ``res{2..5}.<i>.`` anywhere in a key.
    """
    blocks = {f"res{stage}": set() for stage in range(2, 6)}
    bottleneck = stem = False
    for key in keys:
        match = _D2_STAGE_KEY.search(key)
        if match is None:
            continue
        if match["stage"] == "stem":
            stem = True
            continue
        if match["block"] is not None:
            blocks[match["stage"]].add(int(match["block"]))
            bottleneck |= ".conv3." in key[match.end() - 1 :]
    counts = tuple(max(found) + 1 if found else 0 for found in blocks.values())
    block = None if not any(counts) else ("bottleneck" if bottleneck else "basic")
    return {
        "block": block,
        "blocks": counts,
        "depth": RESNET_DEPTHS.get((block, counts)),
        "stem": stem,
    }


def format_resnet(description: dict) -> str:
    """One phrase for :func:`describe_resnet`'s result, e.g. 'R-18 (basic blocks 2-2-2-2)'."""
    if description["block"] is None:
        return "no detectron2-named ResNet stages" + (
            " (a stem only)" if description["stem"] else ""
        )
    depth = description["depth"]
    name = f"R-{depth}" if depth else "an unknown ResNet"
    counts = "-".join(map(str, description["blocks"]))
    return f"{name} ({description['block']} blocks {counts})"


def stage_of(key: str):
    """The ResNet stage (``stem``, ``res2`` .. ``res5``) a key belongs to, or None."""
    match = _D2_STAGE_KEY.search(key)
    return None if match is None else match["stage"]
