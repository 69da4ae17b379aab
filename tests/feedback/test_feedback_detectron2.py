"""Converting detectron2 ResNet blocks keeps norm/activation, Parameters, keys and outputs."""

import copy

import pytest
import torch
import torch.nn.functional as F
from feedback_reference import reference_feedback
from torch import nn

pytest.importorskip("detectron2")
from detectron2.layers import Conv2d, FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling.backbone.resnet import (  # noqa: E402
    BasicBlock,
    BasicStem,
    BottleneckBlock,
)

from signsym_det.feedback import FeedbackConv2d, convert, strip  # noqa: E402

BLOCKS = {
    "stem": lambda norm: BasicStem(3, 8, norm=norm),
    "basic": lambda norm: BasicBlock(4, 8, stride=2, norm=norm),
    "bottleneck": lambda norm: BottleneckBlock(4, 8, bottleneck_channels=4, stride=2, norm=norm),
}
INPUT_CHANNELS = {"stem": 3, "basic": 4, "bottleneck": 4}


def _block(name, norm):
    torch.manual_seed(0)
    block = BLOCKS[name](norm)
    for module in block.modules():  # non-trivial norm statistics and affine terms
        if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return block


@pytest.mark.parametrize("rule", ["sign_symmetry", "kolen_pollack", "brsf"])
@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_convert_and_strip_detectron2_block(name, norm, rule):
    block = _block(name, norm)
    reference = copy.deepcopy(block)
    convs = {key: module for key, module in block.named_modules() if isinstance(module, Conv2d)}
    norms = {key: module.norm for key, module in convs.items()}
    parameters = {key: id(p) for key, p in block.named_parameters()}
    keys = list(block.state_dict())

    convert(block, rule)
    for key, conv in convs.items():
        assert type(conv) is FeedbackConv2d and conv._plain_class is Conv2d
        assert conv.norm is norms[key] and conv.norm is not None
    assert all(id(p) == parameters[key] for key, p in block.named_parameters() if key in parameters)
    extra = set(block.state_dict()) - set(keys)
    assert set(keys) <= set(block.state_dict())
    feedback_keys = {f"{key}.feedback_weight" for key in convs} | {
        f"{key}.feedback_step" for key in convs
    }
    assert extra <= feedback_keys and bool(extra) == (rule != "sign_symmetry")
    if rule != "kolen_pollack":
        assert sum(p.numel() for p in block.parameters()) == sum(
            p.numel() for p in reference.parameters()
        )

    x = torch.randn(2, INPUT_CHANNELS[name], 16, 16)
    for training in (True, False):
        block.train(training)
        reference.train(training)
        assert torch.equal(block(x.requires_grad_(training)), reference(x))
        with torch.no_grad():
            assert torch.equal(block(x), reference(x))

    strip(block)
    assert list(block.state_dict()) == keys
    assert all(type(conv) is Conv2d and conv.norm is norms[key] for key, conv in convs.items())
    assert {key: id(p) for key, p in block.named_parameters()} == parameters


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_bp_block_gradients_match_detectron2(norm):
    block = _block("bottleneck", norm)
    reference = copy.deepcopy(block)
    convert(block, "bp")
    x = torch.randn(2, 4, 12, 12)
    grads = []
    for model in (block, reference):
        inputs = x.clone().requires_grad_(True)
        model(inputs).pow(2).sum().backward()
        grads.append([inputs.grad] + [p.grad for p in model.parameters()])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_frozen_block_input_grad_uses_feedback():
    block = _block("basic", "BN").freeze()
    convert(block, "sign_symmetry", scale="xiao")
    conv = block.conv2
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    out = conv(x)
    g = torch.randn_like(out)
    out.backward(g)
    before_norm = F.conv2d(
        x.detach(), conv.weight, None, conv.stride, conv.padding
    ).requires_grad_()
    grad_before_norm = torch.autograd.grad(conv.norm(before_norm), before_norm, g)[0]
    expected = F.conv_transpose2d(grad_before_norm, reference_feedback(conv), padding=1)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)


def test_norm_then_activation_applied_inside_and_backward_through_them():
    torch.manual_seed(1)
    conv = Conv2d(3, 4, 3, padding=1, norm=nn.BatchNorm2d(4), activation=F.relu)
    reference = copy.deepcopy(conv)
    convert(conv, "fa")
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = conv(x)
    expected_out = reference(x)
    assert torch.equal(out, expected_out)
    g = torch.randn_like(out)
    out.backward(g)

    before_norm = F.conv2d(x.detach(), reference.weight, reference.bias, padding=1)
    before_norm.requires_grad_()
    grad_before_norm = torch.autograd.grad(F.relu(reference.norm(before_norm)), before_norm, g)[0]
    expected = F.conv_transpose2d(grad_before_norm, conv.feedback_state(), padding=1)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)
