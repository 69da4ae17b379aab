"""torchvision ResNet -> detectron2: every backbone tensor is the source tensor it came from.

The expected source of each detectron2 key is derived here in the other direction (from the
detectron2 name back to torchvision's), independently of signsym_det's mapping.
"""

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_resnet_backbone

from signsym_det.checkpoint import (
    FeedbackCheckpointer,
    atomic_save,
    convert_pretrained,
    torchvision_to_d2,
)

ARCH = {18: "resnet18", 50: "resnet50"}


def torchvision_source(d2_key):
    """The torchvision name a detectron2 ResNet key must come from (written independently)."""
    parts = d2_key.split(".")
    tensor = parts[-1]
    if parts[0] == "stem":  # stem.conv1.weight | stem.conv1.norm.<t>
        return ("bn1." if parts[2] == "norm" else "conv1.") + tensor
    stage, block, layer = int(parts[0][len("res") :]) - 1, parts[1], parts[2]
    is_norm = parts[3] == "norm"
    if layer == "shortcut":
        sub = "downsample.1" if is_norm else "downsample.0"
    else:
        sub = ("bn" if is_norm else "conv") + layer[len("conv") :]
    return f"layer{stage}.{block}.{sub}.{tensor}"


def d2_resnet(depth, norm="FrozenBN"):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def random_torchvision(depth, seed=0):
    """A torchvision ResNet with random weights AND random BN statistics/affine terms."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, ARCH[depth])(weights=None).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("depth, form", [(18, "plain"), (18, "ddp"), (50, "ddp")])
def test_every_backbone_tensor_is_its_source(tmp_path, depth, form):
    source = random_torchvision(depth)
    state = source.state_dict()
    if form == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    path = atomic_save(state, tmp_path / "tv.pth")
    out = tmp_path / "d2.pth"
    convert_pretrained(path, out, rule="bp")
    written = torch.load(out, weights_only=True)
    assert written["__author__"] == "signsym_det" and written["matching_heuristics"] is True
    assert written["feedback"] == {"rule": "bp"}

    backbone = d2_resnet(depth)
    FeedbackCheckpointer(backbone).load(str(out))
    expected = source.state_dict()
    loaded = backbone.state_dict()
    assert len(loaded) == sum(not k.endswith("num_batches_tracked") for k in expected) - 2
    for key, value in loaded.items():
        assert torch.equal(value, expected[torchvision_source(key)]), key

    # and the networks agree: detectron2's res5 == torchvision's layer4
    x = torch.randn(2, 3, 64, 64)
    body = torch.nn.Sequential(*list(source.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["res5"], body(x), rtol=1e-4, atol=1e-4)


def test_torchvision_file_loads_directly_through_feedback_checkpointer(tmp_path):
    """No conversion step: the checkpointer converts torchvision layout in memory."""
    source = random_torchvision(18, seed=1)
    path = atomic_save(source.state_dict(), tmp_path / "resnet18.pth")
    backbone = d2_resnet(18, norm="BN")
    checkpointer = FeedbackCheckpointer(backbone)
    checkpointer.load(str(path))
    for key, value in backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, source.state_dict()[torchvision_source(key)]), key
    assert len(checkpointer.last_report.backbone_missing) == 0


def test_dropped_and_unknown_keys_are_reported():
    state = torchvision.models.resnet18(weights=None).state_dict()
    conversion = torchvision_to_d2(state)
    assert {"fc.weight", "fc.bias", "bn1.num_batches_tracked"} <= set(conversion.dropped)
    assert len(conversion.state_dict) + len(conversion.dropped) == len(state)
    with pytest.raises(ValueError, match="layer5.0.conv1.weight"):
        torchvision_to_d2({**state, "layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="layer1.0.conv1.mystery"):
        torchvision_to_d2({**state, "layer1.0.conv1.mystery": torch.zeros(1)})
    from signsym_det.checkpoint import to_detectron2

    with pytest.raises(ValueError, match=r"key 3 \(int\) is not a parameter name"):
        to_detectron2({**state, 3: torch.zeros(1)}, source="int_key.pth")
    with pytest.raises(ValueError, match="'feedback' record is a float"):
        to_detectron2({"model": state, "feedback": 1.5}, source="feedback.pth")


def test_feedback_tensors_follow_their_layer():
    """Xiao et al.'s layout: feedback_weight buffers, stride/padding copies, DataParallel."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    extra = {
        "conv1.feedback_weight": torch.randn(64, 3, 7, 7),
        "layer2.0.downsample.0.feedback_weight": torch.randn(128, 64, 1, 1),
        "layer3.1.conv2.feedback_weight": torch.randn(256, 256, 3, 3),
        "layer3.1.conv2.stride_tensor": torch.tensor([1, 1], dtype=torch.int32),
    }
    checkpoint = {"state_dict": {f"module.{k}": v for k, v in {**state, **extra}.items()}}
    from signsym_det.checkpoint import to_detectron2

    converted = to_detectron2(checkpoint, rule="feedback_alignment")
    model = converted["model"]
    assert converted["feedback"]["rule"] == "fa"
    assert model["stem.conv1.feedback_weight"] is extra["conv1.feedback_weight"]
    assert (
        model["res3.0.shortcut.feedback_weight"] is extra["layer2.0.downsample.0.feedback_weight"]
    )
    assert model["res4.1.conv2.feedback_weight"] is extra["layer3.1.conv2.feedback_weight"]
    assert "module.layer3.1.conv2.stride_tensor" not in model
    assert "layer3.1.conv2.stride_tensor" in converted["dropped"]
