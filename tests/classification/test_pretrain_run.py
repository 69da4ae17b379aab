"""tools/pretrain_net.py: a tiny run writes weights-only checkpoints and resumes exactly
where it stopped; the checkpoint records the rule, its options and the feedback tensors.
A Pretrainer subclass with its own run_step gets the same data order, resume and files."""

import json

import pytest
import torch
import torch.nn.functional as F

from signsym_det.data.classification import generate_classification_dataset
from signsym_det.engine.pretrain import Pretrainer, write_metrics
from signsym_det.pretrain_net import main, parse_args

pytestmark = pytest.mark.slow  # trains (in process) for tens of seconds


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls") / "data"
    generate_classification_dataset(root, num_train=12, num_val=6, image_size=32)
    return root


def args(data, out, max_iter, *extra):
    return [
        "--data", str(data), "--output-dir", str(out), "--rule", "fa", "--image-size", "32",
        "--batch-size", "4", "--max-iter", str(max_iter), "--workers", "0", "--device", "cpu",
        "--lr", "0.01", "--log-period", "1", "--alignment-period", "1", "--checkpoint-period",
        "1", "--seed", "5", "--batch-manhattan", *extra,
    ]  # fmt: skip


def train_lines(out):
    """Iterations (detectron2's 0-based index) with a training loss in metrics.jsonl."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line["iteration"] for line in lines if "total_loss" in line]


def test_tiny_run_checkpoints_and_resumes_at_the_right_iteration(data, tmp_path):
    out = tmp_path / "run"
    main(args(data, out, 2))  # 3 iterations per epoch: stops inside epoch 0
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    assert checkpoint["iteration"] == 2 and checkpoint["epoch"] == 0
    assert checkpoint["iters_per_epoch"] == 3
    assert checkpoint["feedback"] == {
        "rule": "fa",
        "scale": "xiao",
        "classifier_rule": "bp",
        "classifier_scale": None,
        "seed": 5,
        "batch_manhattan": True,
        "classifier_batch_manhattan": False,
    }
    model = checkpoint["model"]
    fixed = [k for k in model if k.endswith("feedback_weight")]
    assert len(fixed) == 20 and not any(k.startswith("fc.") for k in fixed)
    assert checkpoint["optimizer"]["param_groups"][0]["batch_manhattan"] is True
    assert checkpoint["classes"] == ["circle", "cross", "diamond", "ring", "square", "triangle"]
    assert {"val_top1", "val_top5"} <= set(checkpoint["metrics"])
    assert train_lines(out) == [0, 1]
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard event file"

    with pytest.raises(SystemExit, match="--resume"):  # never overwrites a run silently
        main(args(data, out, 5))
    main(args(data, out, 5, "--resume"))
    resumed = torch.load(out / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == 5 and resumed["epoch"] == 1
    assert train_lines(out) == [0, 1, 2, 3, 4]
    assert resumed["scheduler"]["last_epoch"] == 5  # the lr it holds is iteration 5's
    for key in fixed:  # FA's B never changes
        assert torch.equal(resumed["model"][key], model[key])
    changed = [k for k in model if k.endswith("conv1.weight")]
    assert not torch.equal(resumed["model"][changed[0]], model[changed[0]])


def test_options_file_then_command_line(data, tmp_path):
    options = tmp_path / "recipe.args"
    options.write_text("# a recipe\n--arch resnet18 --epochs 1  # one epoch\n--lr 0.5\n")
    out = tmp_path / "options"
    parsed = parse_args([f"@{options}", *args(data, out, 0), "--lr", "0.01"])
    assert (parsed.arch, parsed.epochs, parsed.lr, parsed.max_iter) == ("resnet18", 1, 0.01, 0)
    main([f"@{options}", *args(data, out, 0), "--no-tensorboard"])  # one epoch = 3 iterations
    saved = torch.load(out / "model_final.pth", weights_only=True)
    assert saved["iteration"] == 3 and saved["args"]["lr"] == 0.01
    assert not list(out.glob("events.out.tfevents.*"))


class PlainStep(Pretrainer):
    """Another algorithm's step (here: plain SGD written out) that records its targets."""

    def run_step(self):
        images, target = next(self.data_iter)
        self.targets.append(target.tolist())
        loss = F.cross_entropy(self.model(images), target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        write_metrics({"loss_cls": loss.detach()}, 0.0, self.iter)


def run_plain_step(data, out, max_iter, resume=None):
    trainer = PlainStep(parse_args(args(data, out, max_iter, "--no-tensorboard")))
    trainer.targets = []
    if resume:
        trainer.resume(resume)
    trainer.train()
    return trainer.targets


def test_own_run_step_resumes_on_the_same_data_order(data, tmp_path):
    whole = run_plain_step(data, tmp_path / "whole", 5)  # crosses an epoch (3 iterations)
    assert len(whole) == 5
    first = run_plain_step(data, tmp_path / "split", 2)
    rest = run_plain_step(data, tmp_path / "split", 5, resume=tmp_path / "split/checkpoint.pth")
    assert first + rest == whole
    final = torch.load(tmp_path / "split/model_final.pth", weights_only=True)
    assert final["iteration"] == 5 and {"val_top1", "val_top5"} <= set(final["metrics"])
    assert train_lines(tmp_path / "split") == [0, 1, 2, 3, 4]
