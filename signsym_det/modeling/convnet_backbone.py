"""Bartunov et al.'s layered convnet (``--arch convnet``) as a detectron2 backbone, FPN on top.

:class:`ConvNetBackbone` holds the classifier's hidden layers under the classifier's own names
(``layers.{l}.0`` = the l-th conv, ``layers.{l}.1`` its activation), so a checkpoint trained by
any algorithm (``pretrain_net``, the Bartunov study) loads by name once its output layer and
DTP inverses are dropped (:func:`signsym_det.checkpoint.layered_to_d2`). Output ``conv{l+1}``
has ``channels[l]`` channels and stride ``stride ** (l + 1)``.

``build_convnet_fpn_backbone`` / ``build_retinanet_convnet_fpn_backbone``: detectron2's
:class:`~detectron2.modeling.backbone.FPN` over ``MODEL.FPN.IN_FEATURES`` (the RetinaNet one
with ``LastLevelP6P7`` on the last conv's output). Settings: ``MODEL.CONVNET`` (the
pretraining run's ``--channels --kernel-size --stride --activation``).
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from torch import nn

from ..targetprop.networks import make_activation


def add_convnet_config(cfg) -> None:
    """``cfg.MODEL.CONVNET``: the layered convnet's geometry, as ``pretrain_net``'s options."""
    node = cfg.MODEL.CONVNET = CN()
    node.CHANNELS = [32, 64]
    node.KERNEL_SIZE = 5
    node.STRIDE = 2
    node.ACTIVATION = "tanh"
    node.OUT_FEATURES = ["conv1", "conv2"]


class ConvNetBackbone(Backbone):
    """``h_{l+1} = activation(conv_l(h_l))`` for each width in ``channels`` (padding k // 2)."""

    def __init__(self, in_channels, channels, kernel_size, stride, activation, out_features):
        super().__init__()
        if not channels:
            raise ValueError("MODEL.CONVNET.CHANNELS must name at least one conv layer")
        widths = (in_channels, *channels)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2),
                make_activation(activation),
            )
            for c_in, c_out in zip(widths, widths[1:])
        )
        names = [f"conv{index + 1}" for index in range(len(channels))]
        unknown = [name for name in out_features if name not in names]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.CONVNET.OUT_FEATURES {list(out_features)}: valid are {names} "
                "(one per conv of MODEL.CONVNET.CHANNELS)"
            )
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(names, channels))
        self._out_feature_strides = {name: stride ** (i + 1) for i, name in enumerate(names)}

    def forward(self, x):
        outputs = {}
        for index, layer in enumerate(self.layers):
            x = layer(x)
            name = f"conv{index + 1}"
            if name in self._out_features:
                outputs[name] = x
            if len(outputs) == len(self._out_features):
                break
        return outputs

    def output_shape(self):
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_convnet_backbone(cfg, input_shape: ShapeSpec):
    """The layered convnet of ``cfg.MODEL.CONVNET`` alone."""
    node = cfg.MODEL.CONVNET
    return ConvNetBackbone(
        input_shape.channels,
        list(node.CHANNELS),
        node.KERNEL_SIZE,
        node.STRIDE,
        node.ACTIVATION,
        node.OUT_FEATURES,
    )


def _fpn(cfg, input_shape, top_block):
    bottom_up = build_convnet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block(bottom_up),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_convnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """FPN over the convnet, with a max-pooled extra level (as the ResNet-FPN for R-CNNs)."""
    return _fpn(cfg, input_shape, lambda bottom_up: LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_convnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """FPN over the convnet plus P6/P7 computed from the last FPN input (as RetinaNet's)."""

    def top_block(bottom_up):
        last = cfg.MODEL.FPN.IN_FEATURES[-1]
        channels = bottom_up.output_shape()[last].channels
        return LastLevelP6P7(channels, cfg.MODEL.FPN.OUT_CHANNELS, in_feature=last)

    return _fpn(cfg, input_shape, top_block)
