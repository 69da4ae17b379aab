"""The Krotov-Hopfield update against hand computations; its fixed point; its arguments."""

import pytest
import torch
from torch import nn

from signsym_det.hebbian import (
    LinearDecay,
    LinearHebbianLearner,
    krotov_hopfield_delta,
    krotov_hopfield_update,
    normalised_step_,
)


def loop_delta(weight, inputs, p, k, delta):
    """ΔW with explicit loops over samples and units (independent of the vectorised code)."""
    hidden, n = len(weight), len(weight[0])
    update = [[0.0] * n for _ in range(hidden)]
    for v in inputs:
        currents = []
        for w in weight:
            current = 0.0
            for x, vi in zip(w, v):
                current += ((x > 0) - (x < 0)) * abs(x) ** (p - 1) * vi
            currents.append(current)
        order = sorted(range(hidden), key=lambda mu: -currents[mu])
        for mu in range(hidden):
            g = 1.0 if mu == order[0] else -delta if mu == order[k - 1] else 0.0
            for i in range(n):
                update[mu][i] += g * v[i] - g * currents[mu] * weight[mu][i]
    return update


def test_delta_equals_the_hand_worked_two_unit_example():
    # v1 = (1, 2, 0): I = (1, 2), unit 1 wins, unit 0 is 2nd: g = (-0.5, 1)
    # v2 = (2, 0, 2): I = (3, -2), unit 0 wins, unit 1 is 2nd: g = (1, -0.5)
    # Σ g vᵀ = [[1.5, -1, 2], [0, 2, -1]]; Σ g I = (-0.5 + 3, 2 + 1) = (2.5, 3)
    # ΔW = Σ g vᵀ - (Σ g I) W = [[1.5 - 2.5, -1, 2 - 1.25], [0, 2 - 3, -1 + 3]]
    weight = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -1.0]])
    inputs = torch.tensor([[1.0, 2.0, 0.0], [2.0, 0.0, 2.0]])
    expected = torch.tensor([[-1.0, -1.0, 0.75], [0.0, -1.0, 2.0]])
    update = krotov_hopfield_delta(weight, inputs, p=2.0, k=2, delta=0.5)
    torch.testing.assert_close(update, expected)
    # W + 0.1 ΔW / max|ΔW| with max|ΔW| = 2
    stepped = normalised_step_(weight.clone(), update, eps=0.1)
    torch.testing.assert_close(stepped, torch.tensor([[0.95, -0.05, 0.5375], [0.0, 0.95, -0.9]]))


@pytest.mark.parametrize("p, k, delta", [(2.0, 2, 0.4), (3.0, 3, 0.1), (1.5, 5, 0.0)])
def test_delta_equals_the_loop_computation(p, k, delta):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    inputs = torch.randn(9, 7, generator=generator, dtype=torch.float64)
    expected = loop_delta(weight.tolist(), inputs.tolist(), p, k, delta)
    update = krotov_hopfield_delta(weight, inputs, p=p, k=k, delta=delta)
    torch.testing.assert_close(update, torch.tensor(expected, dtype=torch.float64))


def test_delta_is_pure():
    weight, inputs = torch.randn(4, 3), torch.randn(6, 3)
    weight_before, inputs_before = weight.clone(), inputs.clone()
    krotov_hopfield_delta(weight, inputs)
    assert torch.equal(weight, weight_before) and torch.equal(inputs, inputs_before)


def test_zero_update_leaves_weight_unchanged():
    weight = torch.randn(3, 4)
    assert torch.equal(normalised_step_(weight.clone(), torch.zeros(3, 4), eps=0.1), weight)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_rows_converge_to_unit_p_norm(p):
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(10, 8, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 10, generator=generator, dtype=torch.float64))
    norms_before = layer.weight.detach().norm(p=p, dim=1)
    assert (norms_before - 1).abs().min() > 0.3
    learner = LinearHebbianLearner(layer, total_steps=200, eps0=0.05, p=p)
    for _ in range(200):
        learner.step(torch.randn(100, 10, generator=generator, dtype=torch.float64))
    norms = layer.weight.detach().norm(p=p, dim=1)
    torch.testing.assert_close(norms, torch.ones(8, dtype=torch.float64), rtol=0, atol=0.01)


def test_linear_decay_schedule():
    schedule = LinearDecay(eps0=0.2, total_steps=4)
    assert [schedule(t) for t in range(5)] == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 4\], got 5"):
        schedule(5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p": 0.5}, r"p must be a real number >= 1 .*got 0.5"),
        ({"p": float("nan")}, r"p must be a real number >= 1 .*got nan"),
        ({"k": 1}, r"k must be an int in \[2, 4\] \(hidden units\), got 1"),
        ({"k": 5}, r"k must be an int in \[2, 4\] \(hidden units\), got 5"),
        ({"k": 2.0}, r"k must be an int in \[2, 4\] \(hidden units\), got 2.0"),
        ({"delta": -0.1}, r"delta must be a real number >= 0 .*got -0.1"),
    ],
)
def test_bad_rule_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        krotov_hopfield_delta(torch.randn(4, 3), torch.randn(2, 3), **kwargs)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(
        ValueError, match=r"inputs must be \(batch, N\) with N = 3 .*got shape \(2, 5\)"
    ):
        krotov_hopfield_delta(torch.randn(4, 3), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"weight must be a 2-D floating-point .*\(4, 3, 1\)"):
        krotov_hopfield_delta(torch.randn(4, 3, 1), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"dtype"):
        krotov_hopfield_delta(torch.randn(4, 3), torch.randn(2, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    "eps0, total_steps, message",
    [(0.0, 10, r"eps0 must be a real number > 0"), (0.1, 0, r"total_steps must be an int >= 1")],
)
def test_bad_schedule_raises_clear_errors(eps0, total_steps, message):
    with pytest.raises(ValueError, match=message):
        LinearDecay(eps0, total_steps)


def test_update_names_each_samples_winner_and_the_step_records_its_change():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    inputs = torch.randn(9, 7, generator=generator, dtype=torch.float64)
    update, winners = krotov_hopfield_update(weight, inputs, p=3.0, k=2, delta=0.4)
    torch.testing.assert_close(update, krotov_hopfield_delta(weight, inputs, 3.0, 2, 0.4))
    currents = [[(w.sign() * w.abs() ** 2 * v).sum().item() for w in weight] for v in inputs]
    assert winners.tolist() == [max(range(5), key=row.__getitem__) for row in currents]

    layer = nn.Linear(7, 5, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
    learner = LinearHebbianLearner(layer, total_steps=4, eps0=0.1, p=3.0)
    learner.step(inputs)
    before = layer.weight.detach().clone()
    record = learner.step(inputs)
    assert record.eps == pytest.approx(0.1 * (1 - 1 / 4))
    torch.testing.assert_close(record.mean_abs_change, (layer.weight - before).abs().mean())
    assert record.winners.shape == (9,)
