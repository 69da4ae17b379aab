"""Tests of the benchmark machinery (tools/benchmark.py) on tiny shapes; no timing asserts but
one: making a W-sized B costs more than handing over W."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.utils.events import EventStorage
from torch import nn

from signsym_det.benchmark import detectors, feedback_cost, layers, memory, run, timing
from signsym_det.feedback import convert

ROOT = Path(__file__).resolve().parents[1]
TINY = ["MODEL.FPN.OUT_CHANNELS", "16", "MODEL.RETINANET.NUM_CLASSES", "3"]


def test_interleaved_rotates_and_skips_warmup():
    calls = []
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = timing.interleaved(variants, repeats=2, warmup=1)
    assert calls == list("abcbcacab")
    assert {name: len(samples) for name, samples in times.items()} == {"a": 2, "b": 2, "c": 2}
    summary = run.summarize({"stock": [1.0, 3.0, 2.0], "x": [2.0, 6.0, 4.0]})
    assert summary["median_s"] == {"stock": 2.0, "x": 4.0}
    assert summary["ratio"]["x"] == 2.0 and summary["paired_ratio"]["x"] == 2.0


def test_peak_memory_counts_state_and_step_growth():
    model = nn.Linear(256, 256)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(64, 256)

    def step():
        optimizer.zero_grad()
        big = torch.ones(1_000_000)  # 4 MB alive at once with the activations
        model(x).mul(big[:1]).sum().backward()
        optimizer.step()
        del big

    step()
    result = memory.peak_memory(step, model, optimizer, [x])
    params = sum(p.numel() for p in model.parameters()) * 4
    assert result["state"] == 3 * params + x.numel() * 4  # weights, grads, momentum, input
    assert 4_000_000 <= result["growth"] < 8_000_000
    assert result["peak"] == result["state"] + result["growth"]


def test_detector_variants_share_weights_and_train(tmp_path):
    r18 = detectors.SETTINGS["R18"]
    cfg = detectors.load_config(r18, "sign_symmetry", "cpu", TINY)
    stock_cfg = detectors.load_config(r18, detectors.STOCK, "cpu", TINY)
    assert stock_cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    model, optimizer = detectors.build_variant(cfg)
    stock, _ = detectors.build_variant(stock_cfg)
    assert detectors.same_weights(stock, model)
    batch = detectors.synthetic_batch(1, 64, 3, boxes=2)
    step = detectors.TrainStep(model, optimizer, batch)
    step()
    assert torch.isfinite(step.losses[-1])
    outputs = detectors.inference_step(model, batch)()
    assert model.training and outputs[0]["instances"].pred_boxes.tensor.shape[1] == 4


def test_layer_section_on_small_shapes(monkeypatch):
    cfg = detectors.load_config(detectors.SETTINGS["R18"], detectors.STOCK, "cpu")
    shapes = layers.resnet_conv_shapes(cfg, 32)
    assert sum(shapes.values()) == 20  # stem + 8 blocks x 2 + 3 shortcuts
    assert layers.ConvShape(3, 64, 7, 2, 3, 32, 32) in shapes
    small = {layers.ConvShape(8, 8, 3, 1, 1, 6, 6): 3, layers.ConvShape(8, 16, 1, 2, 0, 6, 6): 1}
    monkeypatch.setattr(layers, "resnet_conv_shapes", lambda cfg, size: small)
    options = run.Options(rules=("sign_symmetry", "kolen_pollack"), layer_repeats=2, warmup=1)
    result = run.layer_section(options)
    assert len(result["shapes"]) == 2 and result["total_ratio"]["stock"] == 1.0
    assert "ResNet-50 total" in run.layer_tables(result, options)
    steps = layers.conv_steps(layers.ConvShape(4, 4, 3, 1, 1, 5, 5), ["fa"], batch=1)
    steps["fa"]()
    assert steps["fa"].x.grad is None and steps["fa"].layer.weight.grad is None


def _load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools/benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # trains and times two RetinaNets
def test_tool_end_to_end_writes_json(tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / "bench.json"
    args = ["--models", "R18", "--rules", "brsf", "--size", "32", "--batch", "1"]
    args += ["--repeats", "1", "--warmup", "0", "--inference-repeats", "1"]
    args += ["--sections", "train", "inference", "feedback", "--feedback-repeats", "2"]
    args += ["--json", str(out), "--opts", *TINY]
    assert tool.main(args) == 0
    printed = capsys.readouterr().out
    assert "Training iteration, RetinaNet R18-FPN" in printed and "Inference" in printed
    assert "brsf" in printed and "<= 1.10" in printed
    results = json.loads(out.read_text())
    assert results["machine"]["threads"] == torch.get_num_threads()
    train = results["detectors"][0]["train"]
    assert set(train["ratio"]) == {"stock", "brsf"} and train["finite_losses"]
    assert train["peak_memory_bytes"]["brsf"]["peak"] > 0
    assert {r["variant"] for r in results["targets"]} == {"brsf"}
    assert "train time estimate" in printed and "B ms/iter" in printed
    feedback = results["detectors"][0]["feedback"]
    assert feedback["stock_iteration_s"] == train["median_s"]["stock"]  # the same run's stock
    assert results["text"].startswith("signsym_det benchmark")


def test_settings_use_the_library_default_fixed_feedback():
    demo = detectors.load_config(detectors.SETTINGS["demo"], "fa", "cpu")
    assert demo.MODEL.FEEDBACK.FIXED_FEEDBACK == "packed"  # not the demo config's own choice
    assert demo.MODEL.RETINANET.NUM_CLASSES == 6 and demo.MODEL.RESNETS.NORM == "BN"
    small = detectors.SETTINGS["R18-small"]
    assert (small.batch, small.size) == (2, 192)
    stored = detectors.load_config(small, "fa", "cpu", ["MODEL.FEEDBACK.FIXED_FEEDBACK", "store"])
    assert stored.MODEL.FEEDBACK.FIXED_FEEDBACK == "store"  # --opts still decide


@pytest.mark.slow  # compiles and trains two tiny RetinaNets
def test_compiled_training_section(monkeypatch):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module: compile_(module, backend="aot_eager"))
    options = run.Options(
        models=("R18",), rules=("fa",), size=32, batch=1, repeats=1, warmup=1,
        sections=("train",), compile=True, opts=TINY,
    )  # fmt: skip
    result = run.detector_section("R18", options)
    assert result["label"] == "R18-FPN 1x32 compiled" and result["train"]["finite_losses"]
    assert "compiled" in run.detector_tables(result, options)


def test_feedback_section_times_b_of_the_layers_that_make_it():
    options = run.Options(
        models=("R18",), rules=("bp", "fa", "frsf", "kolen_pollack"), size=32,
        batch=1, sections=("feedback",), feedback_repeats=3, warmup=1, clock="cpu", opts=TINY,
    )  # fmt: skip
    result = run.detector_section("R18", options)
    feedback = result["feedback"]
    seconds, layers_ = feedback["median_s"], feedback["layers"]
    assert layers_["stock"] == 0 and feedback["weights"]["stock"] == 0
    for rule in ("fa", "frsf"):  # a W-sized pass or more vs bp's handing over W
        assert layers_[rule] == layers_["bp"] > 0 and seconds[rule] > 3 * seconds["bp"] > 0
    assert set(feedback["estimate"]) == {"bp", "fa", "frsf"}  # no stock, no trained B (KP)
    stock = feedback["stock_iteration_s"]
    assert stock > 0 and "timed in this section" in feedback["stock_iteration_from"]
    assert feedback["estimate"]["fa"] == pytest.approx(1 + (seconds["fa"] - seconds["bp"]) / stock)
    records = run.targets({"detectors": [result]})
    assert {r["variant"] for r in records} == {"fa", "frsf"}
    assert all(r["what"] == "R18-FPN 1x32 train time estimate" for r in records)
    assert "B ms/iter" in run.detector_tables(result, options)


def test_feedback_layers_are_those_whose_input_needs_its_gradient():
    r18 = detectors.SETTINGS["R18"]  # FREEZE_AT 2: stem and res2 frozen, so no B before res3
    stock, _ = detectors.build_variant(detectors.load_config(r18, detectors.STOCK, "cpu", TINY))
    model, _ = detectors.build_variant(detectors.load_config(r18, "fa", "cpu", TINY))
    batch = detectors.synthetic_batch(1, 64, 3)
    needs_grad = set()
    hooks = [
        conv.register_forward_pre_hook(
            lambda module, args, name=name: needs_grad.add(name) if args[0].requires_grad else None
        )
        for name, conv in stock.named_modules()
        if isinstance(conv, nn.Conv2d)
    ]
    with EventStorage():
        stock(batch)
    for hook in hooks:
        hook.remove()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = feedback_cost.layers_making_feedback(model, batch)
    assert {name for name, _, _ in found} == needs_grad
    assert not any(name.startswith("backbone.bottom_up.res2") for name in needs_grad)
    assert all(dtype == torch.float32 for _, _, dtype in found)
    after = model.state_dict()  # the probe's forward and backward left the model as found
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("rule", ["bp", "fa", "frsf", "sign_symmetry", "brsf", "kolen_pollack"])
def test_timed_feedback_is_the_b_backward_uses(rule):
    torch.manual_seed(0)
    conv = convert(nn.Conv2d(3, 5, 3, padding=1), rule, seed=1)
    linear = convert(nn.Linear(6, 4), rule, seed=2)
    for layer, x in ((conv, torch.randn(2, 3, 6, 6)), (linear, torch.randn(3, 6))):
        x.requires_grad_(True)
        y = layer(x)  # brsf: a new step's noise, as each iteration
        grad_out = torch.randn_like(y)
        y.backward(grad_out)
        feedback = feedback_cost.feedback_as_made(layer, layer.weight)  # still this step's
        if isinstance(layer, nn.Conv2d):
            expected = F.conv_transpose2d(grad_out, feedback, padding=1)
        else:
            expected = grad_out @ feedback
        torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)
        assert (rule == "bp") == torch.equal(feedback, layer.weight)
