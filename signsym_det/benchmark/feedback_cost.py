"""What a rule adds to bp's path per training iteration: making every layer's B, timed alone.

A converted detector's training iteration differs from ``bp``'s (FeedbackConv2d with B = W:
the same autograd Function, the same arithmetic) only in the B each layer's backward uses,
which its feedback source makes once per iteration (:mod:`signsym_det.feedback.sources`):
the decode of packed codes (fa), that times sign(W) (frsf), sign(W) * s (sign_symmetry), the
step's N(0, 1) draw (brsf). This module makes those B exactly as an iteration does (the
source's ``for_function`` as in forward, then the lazy B's call and release as in backward),
for exactly the layers whose backward makes one (those whose input needs its gradient),
without the rest of the iteration, so a share of a few per cent is timed to a fraction of a
per cent where whole-iteration ratios move by +-5 %.

``estimate = 1 + (B_rule - B_bp) / stock iteration`` is then the rule's training-time ratio to
stock under one assumption: bp's path costs what stock's does (same arithmetic; the Python
Function's per-call overhead is bp's own share, measured by the whole-iteration ratios).
A trained B (Kolen-Pollack) is a parameter, made for free: its cost is elsewhere (B's
gradient and optimizer step), so it gets no estimate.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch
from detectron2.utils.events import EventStorage
from torch import Tensor, nn

from ..feedback.layers import FeedbackLayer, feedback_layers
from . import detectors, timing

#: Stock training iterations timed when the run has no train section to take them from.
STOCK_ITERATIONS = 3


def feedback_as_made(layer: FeedbackLayer, weight: Tensor) -> Tensor:
    """B of ``layer`` as one training iteration makes it for a backward that saved ``weight``.

    Forward's ``feedback_source.for_function`` (a tensor B, or this iteration's lazy B), then
    what backward does with a lazy B: call it with the saved weight, release it.
    """
    with torch.no_grad():
        feedback = layer.feedback_source.for_function(layer)
        if isinstance(feedback, Tensor):
            return feedback
        try:
            return feedback(weight)
        finally:
            feedback.release()


@contextlib.contextmanager
def _left_as_found(model: nn.Module) -> Iterator[None]:
    """Undo what a training step's forward and backward leave: buffers (BN running stats,
    per-step counters) and gradients."""
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]
    grads = [(parameter, parameter.grad) for parameter in model.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
        for parameter, grad in grads:
            parameter.grad = grad


def layers_making_feedback(
    model: nn.Module, batch: list, autocast: Optional[torch.dtype] = None
) -> list[tuple[str, FeedbackLayer, torch.dtype]]:
    """(name, layer, dtype of the W its Function saves) for every feedback layer whose backward
    makes B in a training iteration on ``batch``: those whose input needs its gradient (their
    own ``_needs_feedback``), recorded in one forward and backward (which also releases every
    lazy B that forward handed out); ``model`` is left as found."""
    seen: dict[str, tuple[FeedbackLayer, torch.dtype]] = {}

    def record(name: str) -> Callable:
        def hook(layer, args):
            if layer._needs_feedback(args[0]):
                device_type = args[0].device.type
                dtype = layer.weight.dtype
                if torch.is_autocast_enabled(device_type) and layer.weight.is_floating_point():
                    dtype = torch.get_autocast_dtype(device_type)
                seen.setdefault(name, (layer, dtype))

        return hook

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in
               feedback_layers(model)]  # fmt: skip
    if not handles:
        return []
    device_type = batch[0]["image"].device.type
    try:
        with _left_as_found(model), EventStorage():
            with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                losses = model(batch)
            sum(losses.values()).backward()
    finally:
        for handle in handles:
            handle.remove()
    return [(name, layer, dtype) for name, (layer, dtype) in seen.items()]


class MakeFeedback:
    """One iteration's B of the given layers, each made (:func:`feedback_as_made`) and dropped.

    ``weights`` are what each layer's Function saves: W, or its autocast copy (made once here,
    as autocast's cast is stock's cost too).
    """

    def __init__(self, layers: list[tuple[str, FeedbackLayer, torch.dtype]]):
        with torch.no_grad():
            self.layers = [(layer, layer.weight.to(dtype)) for _, layer, dtype in layers]

    def __call__(self) -> None:
        for layer, weight in self.layers:
            feedback_as_made(layer, weight)

    @property
    def weights(self) -> int:
        return sum(weight.numel() for _, weight in self.layers)


def _trains(model: nn.Module) -> bool:
    """True iff a layer of ``model`` trains its B (whose extra cost is then not making it)."""
    return any(layer.feedback_source.trains(layer) for _, layer in feedback_layers(model))


def time_feedback(models: dict, batch: list, options) -> dict:
    """Per variant: the layers that make B on ``batch``, their weights and the seconds to make
    all their B, in ``options.feedback_repeats`` interleaved rounds after ``options.warmup``.

    Run it on eager models (before ``torch.compile``: compiled, B is made inside the graph).
    """
    autocast = options.autocast_dtype()
    makers = {name: MakeFeedback(layers_making_feedback(model, batch, autocast))
              for name, model in models.items()}  # fmt: skip
    sync = timing.synchronizer(options.device)
    times = timing.interleaved(
        makers, options.feedback_repeats, options.warmup, sync, clock=options.clock
    )
    return {
        "layers": {name: len(maker.layers) for name, maker in makers.items()},
        "weights": {name: maker.weights for name, maker in makers.items()},
        "median_s": {name: timing.median(samples) for name, samples in times.items()},
        "samples_s": times,
        "trained_feedback": [name for name, model in models.items() if _trains(model)],
    }


def add_estimate(feedback: dict, stock_step: Callable, options, train: Optional[dict]) -> dict:
    """``feedback`` (:func:`time_feedback`) with the stock iteration (``train``'s median, else
    :data:`STOCK_ITERATIONS` of ``stock_step`` timed here), each B's share of it and the
    estimate ``1 + (B - B_bp) / stock`` (B_bp = 0 without bp) of every variant whose only
    extra cost is its B (not stock, not a trained B)."""
    if train is not None:
        stock_s, source = train["median_s"][detectors.STOCK], "the train section's median"
    else:
        times = timing.interleaved(
            {detectors.STOCK: stock_step}, STOCK_ITERATIONS, options.warmup,
            timing.synchronizer(options.device), clock=options.clock,
        )  # fmt: skip
        stock_s = timing.median(times[detectors.STOCK])
        source = f"median of {STOCK_ITERATIONS} timed in this section"
    medians = feedback["median_s"]
    baseline = medians.get("bp", 0.0)
    untimed = {detectors.STOCK, *feedback["trained_feedback"]}
    return {
        **feedback,
        "stock_iteration_s": stock_s,
        "stock_iteration_from": source,
        "share": {name: value / stock_s for name, value in medians.items()},
        "estimate": {
            name: 1.0 + (value - baseline) / stock_s
            for name, value in medians.items()
            if name not in untimed
        },
    }
