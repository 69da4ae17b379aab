"""DFA: the gradient arriving at each hidden pre-activation is (B_l e) * f'(a_l)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from signsym_det.feedback.rules import derive_seed
from signsym_det.targetprop import ConvNetSpec, DFAClassifier, build_dfa_classifier


def capture_preactivation_grads(net):
    """Per hidden layer, the input to its activation and the gradient arriving there."""
    records = []

    def hook(module, inputs, output):
        record = {"h_in": inputs[0].detach(), "a": output.detach()}
        output.register_hook(lambda grad: record.update(grad=grad))
        records.append(record)

    for layer in net.layers[:-1]:
        layer[0].register_forward_hook(hook)
    return records


def test_dfa_delta_matches_the_formula_on_a_three_layer_mlp():
    torch.manual_seed(0)
    layers = [
        nn.Sequential(nn.Linear(6, 5), nn.Tanh()),
        nn.Sequential(nn.Linear(5, 4), nn.Tanh()),
        nn.Linear(4, 3),
    ]
    net = DFAClassifier(layers, num_classes=3, input_shape=(6,), seed=7)
    records = capture_preactivation_grads(net)
    x, labels = torch.randn(10, 6), torch.randint(0, 3, (10,))
    logits = net(x)
    F.cross_entropy(logits, labels).backward()
    error = (logits.detach().softmax(1) - F.one_hot(labels, 3)) / len(x)
    for index, record in enumerate(records):
        feedback = getattr(net, f"feedback_{index}")
        delta = (error @ feedback.t()) * (1 - torch.tanh(record["a"]) ** 2)
        torch.testing.assert_close(record["grad"], delta)
        torch.testing.assert_close(net.layers[index][0].weight.grad, delta.t() @ record["h_in"])
    hidden = torch.tanh(records[-1]["a"])
    torch.testing.assert_close(net.layers[2].weight.grad, error.t() @ hidden)


def test_dfa_conv_error_is_projected_to_channels_and_broadcast_over_positions():
    torch.manual_seed(0)
    spec = ConvNetSpec(in_channels=2, image_size=8, num_classes=4, channels=(3,), kernel_size=3)
    net = build_dfa_classifier(spec, seed=1)
    records = capture_preactivation_grads(net)
    x, labels = torch.randn(5, 2, 8, 8), torch.randint(0, 4, (5,))
    logits = net(x)
    F.cross_entropy(logits, labels).backward()
    error = (logits.detach().softmax(1) - F.one_hot(labels, 4)) / len(x)
    (record,) = records
    assert net.feedback_0.shape == (3, 4)
    delta = (error @ net.feedback_0.t())[:, :, None, None] * (1 - torch.tanh(record["a"]) ** 2)
    torch.testing.assert_close(record["grad"], delta)
    conv = net.layers[0][0]
    expected = torch.nn.grad.conv2d_weight(x, conv.weight.shape, delta, stride=2, padding=1)
    torch.testing.assert_close(conv.weight.grad, expected)


def test_dfa_feedback_is_seeded_and_saved_as_buffers():
    spec = ConvNetSpec(image_size=8, num_classes=4, channels=(3, 5), kernel_size=3)
    torch.manual_seed(0)
    first, again = build_dfa_classifier(spec, seed=3), build_dfa_classifier(spec, seed=3)
    other = build_dfa_classifier(spec, seed=4)
    expected = torch.randn(5, 4, generator=torch.Generator().manual_seed(derive_seed(3, "dfa", 1)))
    torch.testing.assert_close(first.feedback_1, expected / 2)
    assert torch.equal(first.feedback_0, again.feedback_0)
    assert not torch.equal(first.feedback_0, other.feedback_0)
    assert {"feedback_0", "feedback_1"} <= set(first.state_dict())


def test_dfa_rejects_auxiliary_outputs_and_bad_scale():
    spec = ConvNetSpec(image_size=8, num_classes=4, channels=(3,), kernel_size=3, aux_outputs=2)
    with pytest.raises(ValueError, match="no auxiliary units"):
        build_dfa_classifier(spec)
    with pytest.raises(ValueError, match="scale must be > 0"):
        build_dfa_classifier(ConvNetSpec(image_size=8, channels=(3,)), scale=0.0)
