"""DTP / SDTP / AO-SDTP against independent computations."""

import pytest
import torch
import torch.nn.functional as F
from targetprop_reference import blobs, loss_gradient, tanh_mlp
from torch import nn

from signsym_det.targetprop import (
    ConvNetSpec,
    DTPStep,
    TargetPropNet,
    build_dtp_classifier,
    hidden_targets,
    make_dtp_optimizers,
    train_inverse,
)


def orthogonal_linear_net(width, depth, generator):
    """Linear layers with orthogonal weights and their exact inverses, in float64."""
    layers, inverses = [], {}
    for index in range(depth):
        q, _ = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
        bias = torch.randn(width, generator=generator, dtype=torch.float64)
        layer = nn.Linear(width, width).double()
        inverse = nn.Linear(width, width).double()
        with torch.no_grad():
            layer.weight.copy_(q)
            layer.bias.copy_(bias)
            inverse.weight.copy_(torch.linalg.inv(q))
            inverse.bias.copy_(-torch.linalg.inv(q) @ bias)
        layers.append(layer)
        if index:
            inverses[index] = inverse
    return TargetPropNet(layers, inverses, num_classes=width)


@pytest.mark.parametrize("variant", ["dtp", "sdtp"])
def test_targets_point_down_the_gradient_with_exact_inverses(variant):
    generator = torch.Generator().manual_seed(0)
    net = orthogonal_linear_net(width=5, depth=4, generator=generator)
    x = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 5, (8,), generator=generator)
    states = [x]
    for layer in net.layers:
        states.append(layer(states[-1]).detach())
    beta = 1e-4
    targets = hidden_targets(net, states, labels, beta, variant)
    assert sorted(targets) == [1, 2, 3]
    for index, target in targets.items():
        step = (target - states[index]).flatten()
        grad = loss_gradient(net.layers[index:], states[index], labels, 5).flatten()
        assert F.cosine_similarity(step, -grad, dim=0) > 0.99
        assert step.norm() == pytest.approx(beta * float(grad.norm()), rel=1e-3)


def test_inverse_loss_falls_on_a_fixed_layer():
    torch.manual_seed(0)
    net = build_dtp_classifier(ConvNetSpec(image_size=12, channels=(6, 6), num_classes=3))
    layer, inverse = net.layers[1], net.inverse(1)
    inputs = net.layers[0](torch.randn(16, 1, 12, 12)).detach()
    noisy = inputs + 0.1 * torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        independent_first = (inverse(layer(noisy)) - noisy).pow(2).sum() / len(noisy)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer = torch.optim.Adam(inverse.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = [
        train_inverse(layer, inverse, inputs, optimizer, 0.1, 1, generator) for _ in range(80)
    ]
    assert losses[0] == pytest.approx(float(independent_first), rel=1e-5)
    assert sum(losses[-10:]) / 10 < 0.5 * losses[0]
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("variant, expect_through", [("sdtp", False), ("dtp", True)])
def test_sdtp_never_backpropagates_through_the_last_layer(variant, expect_through):
    torch.manual_seed(0)
    net = tanh_mlp([4, 8, 8], num_classes=2)
    last = net.layers[-1]
    input_grads = []
    last.register_full_backward_hook(lambda m, gin, gout: input_grads.append(gin[0] is not None))
    forward, inverse = make_dtp_optimizers(net, variant, 1e-3, 1e-3)
    step = DTPStep(net, forward, inverse, variant=variant)
    x, labels = blobs(16)
    for iteration in range(2):
        step(x, labels, iteration)
    assert input_grads, "the last layer's weights should still get the loss gradient"
    assert any(input_grads) == expect_through


@pytest.mark.parametrize("variant, aux", [("dtp", 0), ("sdtp", 0), ("ao_sdtp", 3)])
def test_training_loss_falls_on_separable_blobs(variant, aux):
    torch.manual_seed(0)
    net = tanh_mlp([4, 16, 16], num_classes=2, aux_outputs=aux)
    forward, inverse = make_dtp_optimizers(net, variant, 1e-2, 1e-2)
    step = DTPStep(net, forward, inverse, variant=variant, beta=0.5, noise=0.1)
    x, labels = blobs(64)
    first = F.cross_entropy(net(x), labels).item()
    metrics = [step(x, labels, iteration) for iteration in range(60)]
    assert metrics[0]["total_loss"] == pytest.approx(first, rel=1e-6)
    final = F.cross_entropy(net(x), labels).item()
    assert final < 0.3 * first
    assert (net(x).argmax(1) == labels).float().mean() > 0.95
    expected = {"total_loss", "forward_loss/0", "forward_loss/1", "forward_loss/2"}
    expected |= {f"inverse_loss/{i}" for i in ([1] if variant == "dtp" else [1, 2])}
    assert set(metrics[-1]) == expected


@pytest.mark.slow
@pytest.mark.parametrize("variant, aux", [("dtp", 0), ("ao_sdtp", 3)])
def test_trained_inverses_turn_hidden_targets_towards_the_gradient(variant, aux):
    torch.manual_seed(0)
    net = tanh_mlp([4, 16, 16], num_classes=2, aux_outputs=aux)
    _, inverse = make_dtp_optimizers(net, variant, 1e-2, 1e-2)
    step = DTPStep(net, {}, inverse, variant=variant)
    x, labels = blobs(64, seed=1)

    def first_layer_cosine():
        states = [x]
        for layer in net.layers:
            states.append(layer(states[-1]).detach())
        target = hidden_targets(net, states, labels, 0.5, variant)[1]
        grad = loss_gradient(net.layers[1:], states[1], labels, 2)
        return float(F.cosine_similarity((target - states[1]).flatten(), -grad.flatten(), dim=0))

    before = first_layer_cosine()
    for iteration in range(200):
        step(x, labels, iteration)
    assert first_layer_cosine() > max(before + 0.1, 0.3)


def run_steps(seed, steps=3):
    torch.manual_seed(0)
    net = tanh_mlp([4, 8, 8], num_classes=2)
    forward, inverse = make_dtp_optimizers(net, "sdtp", 1e-2, 1e-2)
    step = DTPStep(net, forward, inverse, variant="sdtp", seed=seed, inverse_iterations=2)
    x, labels = blobs(16)
    for iteration in range(steps):
        step(x, labels, iteration)
    return net.state_dict()


def test_seeded_steps_reproduce():
    first, again, other = run_steps(0), run_steps(0), run_steps(1)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["inverses.1.0.weight"], other["inverses.1.0.weight"])


def test_bad_configuration_is_named():
    net = tanh_mlp([4, 8, 8], num_classes=2)
    forward, inverse = make_dtp_optimizers(net, "dtp", 1e-2, 1e-2)
    with pytest.raises(ValueError, match="valid"):
        DTPStep(net, forward, inverse, variant="tp")
    with pytest.raises(ValueError, match=r"inverse_optimizers must give layers \[1, 2\]"):
        DTPStep(net, forward, inverse, variant="sdtp")
    x, labels = blobs(4)
    _, inverse = make_dtp_optimizers(net, "ao_sdtp", 1e-2, 1e-2)
    with pytest.raises(ValueError, match="ao_sdtp needs some"):
        DTPStep(net, forward, inverse, variant="ao_sdtp")(x, labels, 0)


def test_per_layer_learning_rates_reach_their_layers():
    net = tanh_mlp([4, 8, 8], num_classes=2)
    forward, inverse = make_dtp_optimizers(net, "sdtp", {0: 0.1, 1: 0.2, 2: 0.3}, {1: 0.4, 2: 0.5})
    assert {i: opt.param_groups[0]["lr"] for i, opt in forward.items()} == {0: 0.1, 1: 0.2, 2: 0.3}
    assert {i: opt.param_groups[0]["lr"] for i, opt in inverse.items()} == {1: 0.4, 2: 0.5}
    assert forward[1].param_groups[0]["params"][0] is net.layers[1][0].weight
    assert inverse[2].param_groups[0]["params"][0] is net.inverse(2)[0].weight
    with pytest.raises(ValueError, match=r"inverse_lr must give layers \[1\] exactly"):
        make_dtp_optimizers(net, "dtp", 0.1, {1: 0.4, 2: 0.5})
