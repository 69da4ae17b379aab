"""Smoke tests of the benchmark machinery (tools/benchmark.py) on tiny shapes; no timing asserts."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from signsym_det.benchmark import detectors, layers, memory, run, timing

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
    args += ["--sections", "train", "inference", "--json", str(out), "--opts", *TINY]
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
