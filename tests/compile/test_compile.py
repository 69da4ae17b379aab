"""torch.compile of converted models: no more graph breaks than the stock model, one compiled
graph whatever the step, and the same training losses as eager (a tiny convnet)."""

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from signsym_det.feedback import available_rules, convert

#: Quick: the default fixed B (packed codes) and brsf's per-step noise (a custom op); the
#: other rules and fixed_feedback modes in the slow run.
QUICK = [("fa", "packed"), ("brsf", "packed")]
CASES = [
    *QUICK,
    *(
        pytest.param(rule, "packed", marks=pytest.mark.slow)
        for rule in available_rules()
        if (rule, "packed") not in QUICK
    ),
    pytest.param("fa", "regenerate", marks=pytest.mark.slow),
    pytest.param("frsf", "store", marks=pytest.mark.slow),
]


class TinyNet(nn.Module):
    """conv-BN-ReLU, a conv called twice per forward (as RetinaNet's head), a Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(self.shared(h)) + torch.relu(self.shared(h[..., ::2, ::2])).mean()
        return self.fc(h.mean((2, 3)))


def _net(rule=None, fixed_feedback="packed"):
    torch.manual_seed(0)
    net = TinyNet()
    return net if rule is None else convert(net, rule, fixed_feedback=fixed_feedback)


def _graph_breaks(net) -> tuple[int, int]:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(net)(torch.randn(2, 3, 8, 8))
    return explanation.graph_break_count, explanation.graph_count


@pytest.fixture(scope="module")
def stock_graph_breaks():
    return _graph_breaks(_net())


def _train(model, steps=3) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(4, 3, 8, 8, generator=generator), torch.randn(4, 4, generator=generator)
        loss = (model(x) - y).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("rule, fixed_feedback", CASES)
def test_a_converted_model_compiles_with_no_more_graph_breaks_than_stock(
    rule, fixed_feedback, stock_graph_breaks
):
    breaks, graphs = _graph_breaks(_net(rule, fixed_feedback))
    assert breaks <= stock_graph_breaks[0] and graphs <= stock_graph_breaks[1]


@pytest.mark.parametrize("rule, fixed_feedback", CASES)
def test_compiled_training_matches_eager_in_one_graph(rule, fixed_feedback):
    net = _net(rule, fixed_feedback)
    eager, compiled = copy.deepcopy(net), copy.deepcopy(net)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")  # AOTAutograd's forward/backward split
    expected = _train(eager)
    got = _train(torch.compile(compiled, backend=counter))
    assert counter.frame_count == 1  # no recompile as W, B and the step change
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for (name, mine), theirs in zip(compiled.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=name)
    assert len(set(expected)) == len(expected)  # it did train


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["fa", "brsf"])
def test_inductor_compiled_training_matches_eager(rule):
    net = _net(rule)
    eager, compiled = copy.deepcopy(net), copy.deepcopy(net)
    torch._dynamo.reset()
    expected = _train(eager)
    torch.testing.assert_close(_train(torch.compile(compiled)), expected, rtol=1e-4, atol=1e-5)
