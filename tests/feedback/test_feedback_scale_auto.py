"""The default scale "auto": He fan-out where a normalisation follows a layer, std(W) elsewhere."""

import math

import pytest
import torch
import torchvision
from torch import nn

from signsym_det.feedback import (
    AUTO,
    FeedbackConv2d,
    conversion_report,
    convert,
    is_normalisation,
    normalised_layers,
)


def he_fan_out(weight):
    """Xiao et al.'s scale, written out: sqrt(2 / (kh * kw * C_out)); Linear 1 / sqrt(in)."""
    if weight.dim() == 2:
        return 1 / math.sqrt(weight.shape[1])
    return math.sqrt(2 / (weight.shape[0] * weight.shape[2] * weight.shape[3]))


class NormedConv(nn.Conv2d):
    """detectron2's Conv2d, duck-typed: applies ``self.norm`` and ``self.activation``."""

    def __init__(self, *args, norm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm, self.activation = norm, None

    def forward(self, x):
        x = super().forward(x)
        return x if self.norm is None else self.norm(x)


class AffineOnly(nn.Module):
    """A fixed per-channel affine map, like detectron2's FrozenBatchNorm2d: no statistics."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))

    def forward(self, x):
        return x * self.weight[:, None, None]


class Tree(nn.Module):
    """One layer per way of being (or not being) followed by a normalisation."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.conv1 = nn.Conv2d(8, 8, 1)  # named pair conv1 -> bn1
        self.bn1 = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 8, 1)  # no bn2
        self.lateral = NormedConv(8, 8, 1, norm=nn.GroupNorm(4, 8))
        self.lateral_plain = NormedConv(8, 8, 1)
        self.frozen = NormedConv(8, 8, 1, norm=AffineOnly(8))
        self.fc = nn.Linear(8, 4)
        self.fc_ln = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))


EXPECTED_NORMALISED = {"stem.0", "conv1", "lateral", "fc_ln.0"}
EXPECTED_PLAIN = {"head.0", "head.2", "conv2", "lateral_plain", "frozen", "fc"}


def test_normalised_layers_reads_sequential_names_and_norm_attribute():
    layers = {name for name, m in Tree().named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert layers == EXPECTED_NORMALISED | EXPECTED_PLAIN
    assert normalised_layers(Tree()) & layers == EXPECTED_NORMALISED
    assert normalised_layers(Tree(), prefix="model.") & {f"model.{n}" for n in layers} == {
        f"model.{n}" for n in EXPECTED_NORMALISED
    }


@pytest.mark.parametrize(
    "module, expected",
    [
        (nn.BatchNorm2d(4), True),
        (nn.SyncBatchNorm(4), True),
        (nn.InstanceNorm2d(4), True),
        (nn.GroupNorm(2, 4), True),
        (nn.LayerNorm(4), True),
        (nn.RMSNorm(4), True),
        (nn.ModuleList([nn.BatchNorm2d(4), nn.BatchNorm2d(4)]), True),
        (nn.ModuleList([nn.BatchNorm2d(4), AffineOnly(4)]), False),
        (nn.ModuleList(), False),
        (AffineOnly(4), False),
        (nn.ReLU(), False),
        (None, False),
    ],
)
def test_is_normalisation(module, expected):
    assert is_normalisation(module) is expected


def test_auto_resolves_per_layer_and_b_has_that_magnitude():
    model = convert(Tree(), "sign_symmetry")
    report = conversion_report(model)
    assert {n for n, e in report.layers.items() if e.scale == "xiao"} == EXPECTED_NORMALISED
    assert {n for n, e in report.layers.items() if e.scale == "weight_std"} == EXPECTED_PLAIN
    for name, layer in model.named_modules():
        if name in report.layers:
            weight = layer.weight.detach()
            if name in EXPECTED_NORMALISED:
                expected = he_fan_out(weight)
            else:
                expected = torch.sqrt(((weight - weight.mean()) ** 2).mean())
            magnitude = layer.feedback_matrix().abs()  # sign(W) * s
            torch.testing.assert_close(magnitude, torch.full_like(weight, float(expected)))


@pytest.mark.parametrize("rule", ["fa", "kolen_pollack"])
def test_auto_draws_fixed_b_at_the_resolved_scale(rule):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 256, 3), nn.ReLU(), nn.Conv2d(256, 256, 3))
    nn.init.normal_(model[2].weight, std=0.01)  # a detection head's init
    convert(model, rule, fixed_feedback="store")
    for layer in (model[0], model[2]):
        weight = layer.weight.detach()
        assert layer.scale == "weight_std"
        ratio = layer.feedback_state().detach().std() / weight.std(correction=0)
        assert 0.95 < float(ratio) < 1.05  # B ~ N(0, std(W)^2): W's own magnitude


def test_explicit_scales_are_unchanged():
    for scale in ("xiao", "weight_mean", 0.5):
        report = conversion_report(convert(Tree(), "sign_symmetry", scale=scale))
        assert {entry.scale for entry in report.layers.values()} == {scale}
    report = conversion_report(convert(Tree(), "sign_symmetry", scale=None))
    assert {entry.scale for entry in report.layers.values()} == {"xiao"}  # the rule's default


def test_overrides_inherit_auto_or_set_their_own_scale():
    model = convert(Tree(), "fa", overrides={"head.*": {"rule": "sign_symmetry"}, "stem.*": "bp"})
    report = conversion_report(model)
    assert report.layers["head.0"].scale == "weight_std"
    assert report.layers["conv1"].scale == "xiao"
    assert report.layers["stem.0"].scale is None  # bp has no scale
    model = convert(Tree(), "fa", overrides={"conv1": {"scale": "unit"}}, scale=AUTO)
    assert conversion_report(model).layers["conv1"].scale == "unit"


def test_auto_is_only_for_convert():
    with pytest.raises(ValueError, match=r"'auto' is decided per layer by convert\(\)"):
        FeedbackConv2d(3, 4, 3, rule="sign_symmetry", scale=AUTO)
    with pytest.raises(ValueError, match=r"invalid feedback scale 'huge'; valid: auto, xiao"):
        convert(Tree(), "fa", scale="huge")


def test_report_prints_the_resolved_scale():
    text = str(conversion_report(convert(Tree(), "fa")))
    rows = {line.split()[0]: line.split()[-1] for line in text.splitlines()[1:-1]}
    assert rows["conv1"] == "xiao" and rows["head.2"] == "weight_std"


def test_torchvision_resnet_convs_are_normalised_head_is_not():
    model = torchvision.models.resnet18()
    model.fc = nn.Linear(512, 3)
    report = conversion_report(convert(model, "sign_symmetry"))
    convs = {n for n, e in report.layers.items() if e.layer_type == "Conv2d"}
    assert len(convs) == 20
    assert {report.layers[n].scale for n in convs} == {"xiao"}
    assert report.layers["fc"].scale == "weight_std"


def test_detectron2_conv_norm_attribute():
    layers = pytest.importorskip("detectron2.layers")
    convs = nn.ModuleDict(
        {
            "gn": layers.Conv2d(4, 32, 3, norm=layers.get_norm("GN", 32)),
            "bn": layers.Conv2d(4, 32, 3, norm=layers.get_norm("BN", 32)),
            "frozen": layers.Conv2d(4, 32, 3, norm=layers.get_norm("FrozenBN", 32)),
            "plain": layers.Conv2d(4, 32, 3),
        }
    )
    report = conversion_report(convert(convs, "sign_symmetry"))
    scales = {name: entry.scale for name, entry in report.layers.items()}
    assert scales == {"gn": "xiao", "bn": "xiao", "frozen": "weight_std", "plain": "weight_std"}
    single = convert(layers.Conv2d(4, 32, 3, norm=layers.get_norm("GN", 32)), "fa")
    assert single.scale == "xiao"


def test_retinanet_head_with_per_level_batchnorm_is_normalised():
    """RetinaNetHead(norm="BN") puts a CycleBatchNormList (a BatchNorm per FPN level) after each
    subnet conv: those convs get the He scale, the predictors (no norm) std(W)."""
    retinanet = pytest.importorskip("detectron2.modeling.meta_arch.retinanet")
    from detectron2.layers import ShapeSpec

    head = retinanet.RetinaNetHead(
        input_shape=[ShapeSpec(channels=8)] * 3,
        num_classes=2,
        num_anchors=1,
        conv_dims=[8, 8],
        norm="BN",
    )
    report = conversion_report(convert(head, "sign_symmetry"))
    scales = {name: entry.scale for name, entry in report.layers.items()}
    subnet = {n for n in scales if "subnet" in n}
    assert len(subnet) == 4 and {scales[n] for n in subnet} == {"xiao"}
    assert scales["cls_score"] == scales["bbox_pred"] == "weight_std"
