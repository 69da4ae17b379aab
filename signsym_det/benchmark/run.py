"""The benchmark's sections: detector training / inference / feedback cost, layer micro benchmark.

Each section builds its variants in this process, runs them interleaved (see
:mod:`.timing`) and returns a JSON-ready dict with per-variant samples, medians and ratios
to the stock detectron2 baseline, plus its printable table.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from . import detectors, feedback_cost, layers, memory, report, timing

MB = 1e6


@dataclass
class Options:
    """What to measure and how (see ``python -m signsym_det.benchmark --help``)."""

    models: tuple = ("R18", "R50")
    rules: tuple = detectors.RULES
    device: str = "cpu"
    amp: bool = False
    size: int = 256
    batch: int = 2
    boxes: int = 3
    repeats: int = 5
    warmup: int = 1
    inference_repeats: int = 5
    feedback_repeats: int = 15
    layer_repeats: int = 5
    layer_batch: int = 2
    sections: tuple = ("train", "inference", "feedback", "layers")
    clock: str = "wall"
    compile: bool = False
    opts: list = field(default_factory=list)
    seed: int = 0

    @property
    def variants(self) -> list[str]:
        return [detectors.STOCK, *self.rules]

    def autocast_dtype(self):
        """The autocast dtype under --amp: float16 on CUDA, bfloat16 on CPU; else None."""
        if not self.amp:
            return None
        return torch.float16 if self.device.startswith("cuda") else torch.bfloat16

    def as_dict(self) -> dict:
        return {**asdict(self), "autocast": str(self.autocast_dtype())}


def summarize(times: dict, baseline: str = detectors.STOCK) -> dict:
    """medians, ratios of medians to ``baseline``, paired ratios and the samples."""
    medians = {name: timing.median(samples) for name, samples in times.items()}
    return {
        "median_s": medians,
        "ratio": timing.ratios_to(baseline, medians),
        "paired_ratio": {name: timing.paired_ratio(times, name, baseline) for name in times},
        "samples_s": times,
    }


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _memory_ratios(peaks: dict, key: str) -> dict:
    base = peaks[detectors.STOCK][key]
    return {name: peak[key] / base if base else float("nan") for name, peak in peaks.items()}


def _memory_notes(peaks: dict) -> dict:
    """Why a variant's peak exceeds stock's: its state between steps vs its working memory."""
    stock = peaks[detectors.STOCK]
    notes = {}
    for name, peak in peaks.items():
        extra_state = (peak["state"] - stock["state"]) / MB
        growth_ratio = peak["growth"] / stock["growth"] if stock["growth"] else float("nan")
        if abs(extra_state) >= 0.5:
            notes[name] = (
                f"rule state {extra_state:+.0f} MB between steps; "
                f"step memory ratio {growth_ratio:.3f}"
            )
    return notes


def detector_section(setting_name: str, options: Options) -> dict:
    """Training (time, peak memory), inference time and the cost of making B
    (:mod:`.feedback_cost`) of every variant in one setting (:data:`detectors.SETTINGS`);
    with ``options.compile`` the training is compiled."""
    setting = detectors.SETTINGS[setting_name]
    size, batch_size = setting.size or options.size, setting.batch or options.batch
    depth = setting.depth
    label = f"{'demo ' if setting_name == 'demo' else ''}R{depth}-FPN {batch_size}x{size}"
    sync = timing.synchronizer(options.device)
    autocast = options.autocast_dtype()
    models, steps, cfgs = {}, {}, {}
    for name in options.variants:
        cfg = detectors.load_config(setting, name, options.device, options.opts)
        model, optimizer = detectors.build_variant(cfg, options.seed)
        batch = detectors.synthetic_batch(
            batch_size,
            size,
            cfg.MODEL.RETINANET.NUM_CLASSES,
            options.boxes,
            options.seed,
            options.device,
        )
        scaler = None
        if autocast == torch.float16:
            scaler = torch.amp.GradScaler(options.device)
        models[name], cfgs[name] = model, cfg
        scheduler = detectors.build_scheduler(cfg, optimizer)
        steps[name] = detectors.TrainStep(model, optimizer, batch, autocast, scaler, scheduler)
    stock = models[detectors.STOCK]
    for name, model in models.items():
        if not detectors.same_weights(stock, model):
            raise RuntimeError(f"{label} variant {name} does not start from stock's weights")
    cfg = cfgs[detectors.STOCK]
    result = {
        "model": f"RetinaNet R{depth}-FPN",
        "label": label + (" compiled" if options.compile else ""),
        "config": setting.config_path(detectors.STOCK),
        "setting": {
            "name": setting_name,
            "batch": batch_size,
            "size": size,
            "fixed_feedback": cfg.MODEL.FEEDBACK.FIXED_FEEDBACK,
            "compiled": options.compile,
            "norm": cfg.MODEL.RESNETS.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "parameters": sum(p.numel() for p in stock.parameters()),
            "optimizer": f"SGD lr {cfg.SOLVER.BASE_LR} momentum {cfg.SOLVER.MOMENTUM} "
            f"wd {cfg.SOLVER.WEIGHT_DECAY}, {cfg.SOLVER.LR_SCHEDULER_NAME} with warm-up "
            f"factor {cfg.SOLVER.WARMUP_FACTOR} over {cfg.SOLVER.WARMUP_ITERS} iterations",
        },
    }
    # Inference first: every variant still has exactly stock's weights, so the same work.
    if "inference" in options.sections:
        _log(f"{label}: inference, {len(models)} variants interleaved")
        calls = {
            name: detectors.inference_step(model, steps[name].batch, autocast)
            for name, model in models.items()
        }
        times = timing.interleaved(
            calls, options.inference_repeats, options.warmup, sync, clock=options.clock
        )
        per_image = {k: [t / batch_size for t in v] for k, v in times.items()}
        result["inference"] = summarize(per_image)
    # B's eager path (compiled, B is made and fused inside the graph: not this measurement)
    feedback_timed = "feedback" in options.sections and not options.compile
    if feedback_timed:
        _log(f"{label}: making every layer's B, {len(models)} variants interleaved")
        probe = detectors.synthetic_batch(
            1, 64, cfg.MODEL.RETINANET.NUM_CLASSES, options.boxes, options.seed, options.device
        )
        feedback = feedback_cost.time_feedback(models, probe, options)
    if "train" in options.sections:
        if options.compile:  # after inference, which stays eager (the same ops in every variant)
            for model in models.values():
                detectors.compile_convolutions(model)
        _log(f"{label}: peak memory of one training step per variant")
        peaks = {}
        for name, step in steps.items():
            images = [item["image"] for item in step.batch]
            peaks[name] = memory.peak_memory(
                step, step.model, step.optimizer, images, options.device
            )
        _log(f"{label}: training iterations, {len(steps)} variants interleaved")
        times = timing.interleaved(
            steps, options.repeats, options.warmup, sync, clock=options.clock
        )
        train = summarize(times)
        train["peak_memory_bytes"] = peaks
        train["peak_memory_ratio"] = _memory_ratios(peaks, "peak")
        train["step_memory_ratio"] = _memory_ratios(peaks, "growth")
        train["memory_notes"] = _memory_notes(peaks)
        train["last_loss"] = {name: float(step.losses[-1]) for name, step in steps.items()}
        train["finite_losses"] = all(math.isfinite(v) for v in train["last_loss"].values())
        result["train"] = train
    if feedback_timed:
        result["feedback"] = feedback_cost.add_estimate(
            feedback, steps[detectors.STOCK], options, result.get("train")
        )
    del models, steps
    gc.collect()
    return result


def layer_section(options: Options) -> dict:
    """FeedbackConv2d (every rule) vs nn.Conv2d, forward + backward, on ResNet-50's convs."""
    sync = timing.synchronizer(options.device)
    cfg = detectors.load_config(
        detectors.SETTINGS["R50"], detectors.STOCK, options.device, options.opts
    )
    shapes = layers.resnet_conv_shapes(cfg, options.size)
    _log(f"layers: {len(shapes)} distinct ResNet-50 conv shapes, {len(options.variants)} variants")
    per_shape = []
    totals = {name: 0.0 for name in options.variants}
    for shape, count in sorted(shapes.items(), key=lambda item: -item[1]):
        steps = layers.conv_steps(
            shape,
            options.rules,
            options.layer_batch,
            options.device,
            options.autocast_dtype(),
            options.seed,
        )
        times = timing.interleaved(
            steps, options.layer_repeats, options.warmup, sync, clock=options.clock
        )
        summary = summarize(times)
        for name in totals:
            totals[name] += count * summary["median_s"][name]
        per_shape.append({"shape": asdict(shape), "label": shape.label, "count": count, **summary})
    return {
        "batch": options.layer_batch,
        "network_input": options.size,
        "shapes": per_shape,
        "total_s": totals,
        "total_ratio": timing.ratios_to(detectors.STOCK, totals),
    }


def _ms(seconds: float) -> float:
    return seconds * 1e3


def detector_tables(result: dict, options: Options) -> str:
    """The training and inference tables of one detector section."""
    setting = result["setting"]
    where = (
        f"{setting['batch']} x {setting['size']}x{setting['size']}, {setting['norm']}, "
        f"FREEZE_AT {setting['freeze_at']}, fixed_feedback {setting['fixed_feedback']}, "
        f"{options.device}"
        f"{', AMP ' + str(options.autocast_dtype()) if options.amp else ''}"
    )
    parts = []
    train = result.get("train")
    if train:
        rows = []
        for name in options.variants:
            peak = train["peak_memory_bytes"][name]
            rows.append(
                [
                    name,
                    _ms(train["median_s"][name]),
                    train["ratio"][name],
                    train["paired_ratio"][name],
                    peak["peak"] / MB,
                    train["peak_memory_ratio"][name],
                    peak["state"] / MB,
                    peak["growth"] / MB,
                ]
            )
        parts.append(
            report.table(
                [
                    "variant",
                    "ms/iter",
                    "ratio",
                    "paired",
                    "peak MB",
                    "ratio",
                    "state MB",
                    "step MB",
                ],
                rows,
                f"Training iteration{', compiled (inductor)' if options.compile else ''}, "
                f"{result['model']} ({where}); median of {options.repeats}, "
                f"{options.clock} clock",
            )
        )
    inference = result.get("inference")
    if inference:
        rows = [
            [
                name,
                _ms(inference["median_s"][name]),
                inference["ratio"][name],
                inference["paired_ratio"][name],
            ]
            for name in options.variants
        ]
        parts.append(
            report.table(
                ["variant", "ms/image", "ratio", "paired"],
                rows,
                f"Inference, {result['model']} ({where}, eval, no_grad); median of "
                f"{options.inference_repeats}",
            )
        )
    feedback = result.get("feedback")
    if feedback:
        parts.append(feedback_table(feedback, options, result["model"], where))
    return "\n\n".join(parts)


def feedback_table(feedback: dict, options: Options, model: str, where: str) -> str:
    """Per variant: layers making B, their weights, B's time per iteration, its share of the
    stock iteration and the time-ratio estimate 1 + (B - B_bp) / stock (see feedback_cost)."""
    rows = []
    for name in options.variants:
        seconds, weights = feedback["median_s"][name], feedback["weights"][name]
        rows.append(
            [
                name,
                feedback["layers"][name],
                weights / 1e6,
                _ms(seconds),
                seconds * 1e9 / weights if weights else float("nan"),
                100 * feedback["share"][name],
                feedback["estimate"].get(name, float("nan")),
            ]
        )
    return report.table(
        ["variant", "layers", "M weights", "B ms/iter", "ns/weight", "% of stock", "estimate"],
        rows,
        f"Feedback matrices B, made as one training iteration makes them (eager), {model} "
        f"({where}); median of {options.feedback_repeats}, {options.clock} clock\n"
        f"layers: those whose backward makes B (input needs its gradient); stock iteration "
        f"{_ms(feedback['stock_iteration_s']):.1f} ms ({feedback['stock_iteration_from']})\n"
        f"estimate = 1 + (B - B_bp) / stock iteration: the train time ratio if bp's path costs "
        f"stock's and B costs inside an iteration what it costs here, alone (none for a trained "
        f"B: its cost is its gradient and optimizer step)",
    )


def layer_tables(result: dict, options: Options) -> str:
    """Per-shape ratios to nn.Conv2d and the count-weighted total."""
    names = options.variants
    rows = []
    for entry in result["shapes"]:
        rows.append(
            [entry["label"], entry["count"], _ms(entry["median_s"]["stock"])]
            + [entry["ratio"][name] for name in names[1:]]
        )
    rows.append(
        ["ResNet-50 total (count-weighted)", "", _ms(result["total_s"]["stock"])]
        + [result["total_ratio"][name] for name in names[1:]]
    )
    return report.table(
        ["conv (in->out kernel stride @input)", "n", "nn.Conv2d ms", *names[1:]],
        rows,
        f"Layer micro benchmark: FeedbackConv2d / nn.Conv2d, forward + backward "
        f"(input grad needed), batch {result['batch']}, ResNet-50 on "
        f"{result['network_input']}x{result['network_input']}; median of "
        f"{options.layer_repeats}",
    )


def targets(results: dict) -> list[dict]:
    """Pass/fail records of :data:`report.TARGETS` for every detector section."""
    records = []
    for result in results.get("detectors", []):
        label = result["label"]
        if "train" in result:
            train = result["train"]
            records += report.check_targets("train", "time", f"{label} train", train["ratio"])
            records += report.check_targets(
                "train",
                "peak_memory",
                f"{label} train",
                train["peak_memory_ratio"],
                train["memory_notes"],
            )
            records += report.check_targets(
                "train", "step_memory", f"{label} train", train["step_memory_ratio"]
            )
        if "feedback" in result:
            estimate = {k: v for k, v in result["feedback"]["estimate"].items() if k != "bp"}
            records += report.check_targets("feedback", "time_estimate", f"{label} train", estimate)
        if "inference" in result:
            records += report.check_targets(
                "inference", "time", f"{label} inference", result["inference"]["ratio"]
            )
    return records
