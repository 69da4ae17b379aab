"""The ``"auto"`` scale: per layer, He fan-out where a normalisation follows, else std(W).

Why: a normalisation after a layer (BatchNorm, GroupNorm, ...) divides its output by the
output's own spread, so the gradient reaching the layer does not grow with a B larger than W;
Xiao et al.'s He fan-out scale (``"xiao"``) is right there. Without one (detection heads and
predictors initialised with std 0.01, FPN top blocks), a He-scale B is several times larger
than W and the error grows by that factor at every layer: the loss goes non-finite. There B
takes its magnitude from W itself (``"weight_std"``: s = std(W)), which gives every rule's
B the Frobenius norm of W (sign(W) * s exactly, N(0, s^2) draws in expectation). Measured on
detectron2's RetinaNet R18-FPN (GN) at init, |dL/dx| at the head's input relative to
backprop's: 0.99-1.05 with std(W), 0.32-0.36 with mean |W| (0.8 per layer, compounding over
the 5 head convs), 590-830 with the He scale.

"Followed by a normalisation" is read from the module tree, in plain torch:

* the layer's own ``norm`` attribute (detectron2's Conv2d applies ``self.norm`` in forward);
* the next module of an ``nn.Sequential`` (torchvision's Conv2dNormActivation, detectron2's
  RetinaNet head with a norm, ResNet ``downsample`` pairs);
* in any other module, a sibling named like the layer with ``conv`` -> ``bn`` (torchvision
  ResNet stems and BasicBlock/Bottleneck: ``conv1`` -> ``bn1``).

Normalisations are torch's batch/instance/group/layer/RMS norms (subclasses included), and a
``nn.ModuleList`` of them (one per input, as detectron2's per-level ``CycleBatchNormList`` in a
RetinaNet head with ``NORM: "BN"``).
detectron2's FrozenBatchNorm2d is not one: its statistics are fixed, so it is a per-channel
affine map and W's scale passes through it.
"""

from __future__ import annotations

from torch import nn

#: What ``"auto"`` resolves to, for a layer followed by a normalisation and for one that is not.
NORMALISED_SCALE = "xiao"
UNNORMALISED_SCALE = "weight_std"

NORMALISATIONS = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*, lazy versions
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
)


def is_normalisation(module) -> bool:
    """True iff ``module`` normalises its input by statistics it computes (not FrozenBN), or is
    a non-empty list of such normalisations (used one per input)."""
    if isinstance(module, nn.ModuleList):
        return len(module) > 0 and all(isinstance(m, NORMALISATIONS) for m in module)
    return isinstance(module, NORMALISATIONS)


def _sibling_norm_name(name: str):
    """The name a torchvision block gives the norm after child ``name`` (conv1 -> bn1)."""
    return name.replace("conv", "bn", 1) if "conv" in name else None


def normalised_layers(module: nn.Module, prefix: str = "") -> set:
    """Qualified names (under ``prefix``) of the submodules followed by a normalisation."""
    found = set()
    for parent_name, parent in module.named_modules(prefix=prefix.rstrip(".")):
        children = list(parent.named_children())
        siblings = dict(children)
        for index, (name, child) in enumerate(children):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if isinstance(parent, nn.Sequential):
                following = children[index + 1][1] if index + 1 < len(children) else None
            else:
                following = siblings.get(_sibling_norm_name(name))
            if is_normalisation(getattr(child, "norm", None)) or is_normalisation(following):
                found.add(qualified)
    if is_normalisation(getattr(module, "norm", None)):
        found.add(prefix.rstrip("."))
    return found


def auto_scale(followed_by_norm: bool) -> str:
    """The scale :data:`AUTO` means for a layer (followed by a normalisation or not)."""
    return NORMALISED_SCALE if followed_by_norm else UNNORMALISED_SCALE
