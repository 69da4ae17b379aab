"""The layered convnet as a detectron2 backbone: shapes, strides, and checked loading of a
DTP-pretrained checkpoint through convert_pretrained and the FeedbackCheckpointer."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_model

from signsym_det.checkpoint import (
    CheckpointMismatchError,
    FeedbackCheckpointer,
    atomic_save,
    convert_pretrained,
)
from signsym_det.classification.model import build_convnet, convnet_spec
from signsym_det.engine import setup_cfg
from signsym_det.model_zoo import get_config_file
from signsym_det.targetprop import DTPStep, make_dtp_optimizers

CONFIG = "Shapes-ConvNet/Base-Shapes-RetinaNet-ConvNet.yaml"
CHANNELS = (4, 6, 8)


def tiny_cfg(*opts):
    return setup_cfg(
        get_config_file(CONFIG),
        ["MODEL.CONVNET.CHANNELS", f"[{', '.join(map(str, CHANNELS))}]",
         "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1", *opts],
    )  # fmt: skip


def test_backbone_output_shapes_and_strides():
    cfg = tiny_cfg()
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, ShapeSpec(channels=3))
    x = torch.randn(2, 3, 64, 48)
    bottom = backbone.bottom_up(x)
    assert sorted(bottom) == ["conv2", "conv3"]
    for name, stride, channels in (("conv2", 4, CHANNELS[1]), ("conv3", 8, CHANNELS[2])):
        assert bottom[name].shape == (2, channels, 64 // stride, 48 // stride)
        assert backbone.bottom_up.output_shape()[name].stride == stride
    out = backbone(x)
    strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    assert sorted(out) == sorted(strides)
    for name, stride in strides.items():
        assert backbone.output_shape()[name].stride == stride
        assert out[name].shape == (2, 32, -(-64 // stride), -(-48 // stride))


def test_unknown_out_feature_names_the_choices():
    cfg = tiny_cfg("MODEL.CONVNET.OUT_FEATURES", "['conv4']")
    with pytest.raises(ValueError, match=r"conv4.*conv1"):
        BACKBONE_REGISTRY.get("build_convnet_backbone")(cfg, ShapeSpec(channels=3))


def dtp_checkpoint(path, locally_connected=False):
    """A layered checkpoint of a convnet after two DTP steps (pretrain_net's layout)."""
    arch = "convnet_lc" if locally_connected else "convnet"
    spec = convnet_spec(arch, 6, 16, channels=CHANNELS, activation="relu")
    torch.manual_seed(0)
    net = build_convnet(spec, "dtp")
    forward, inverse = make_dtp_optimizers(net, "dtp", 1e-2, 1e-2)
    step = DTPStep(net, forward, inverse, variant="dtp")
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 6
    for iteration in range(2):
        step(x, y, iteration)
    state = {
        "model": net.state_dict(),
        "arch": arch,
        "algorithm": "dtp",
        "convnet": {**spec.__dict__},
        "layout": "layered",
        "feedback": None,
    }
    atomic_save(state, path)
    return net


@pytest.mark.parametrize("converted", [True, False])
def test_dtp_pretrained_checkpoint_loads_checked(tmp_path, converted):
    net = dtp_checkpoint(tmp_path / "dtp.pth")
    path = tmp_path / "dtp.pth"
    if converted:
        written = convert_pretrained(path, tmp_path / "d2.pth")
        output = ["layers.3.1.bias", "layers.3.1.weight"]
        assert sorted(k for k in written["dropped"] if not k.startswith("inverses.")) == output
        path = tmp_path / "d2.pth"
    model = build_model(tiny_cfg())
    checkpointer = FeedbackCheckpointer(model)
    checkpointer.load(str(path))
    report = checkpointer.last_report
    assert report.backbone_prefix == "backbone.bottom_up."
    assert report.backbone_missing == [] and len(report.backbone_loaded) == 2 * len(CHANNELS)
    loaded = model.backbone.bottom_up.layers
    for index in range(len(CHANNELS)):
        assert torch.equal(loaded[index][0].weight, net.layers[index][0].weight)
        assert torch.equal(loaded[index][0].bias, net.layers[index][0].bias)


def test_mismatched_widths_fail_the_backbone_check(tmp_path):
    dtp_checkpoint(tmp_path / "dtp.pth")
    model = build_model(tiny_cfg("MODEL.CONVNET.CHANNELS", "[4, 6, 9]"))
    with pytest.raises(CheckpointMismatchError, match="BACKBONE MISMATCH"):
        FeedbackCheckpointer(model).load(str(tmp_path / "dtp.pth"))


def test_locally_connected_checkpoint_is_refused(tmp_path):
    dtp_checkpoint(tmp_path / "lc.pth", locally_connected=True)
    with pytest.raises(ValueError, match="only --arch convnet"):
        convert_pretrained(tmp_path / "lc.pth", tmp_path / "out.pth")
