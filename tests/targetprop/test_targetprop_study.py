"""The Bartunov study's pieces: shards, lr choice, resuming, the task ladder, one tiny run."""

import numpy as np
import pytest
import torch

from signsym_det.checkpoint import to_detectron2
from signsym_det.classification.data import IMAGENET_MEAN, IMAGENET_STD
from signsym_det.targetprop_study import study as study_module
from signsym_det.targetprop_study.run import RunConfig, train
from signsym_det.targetprop_study.study import Study, choose_lrs, parse_shard, sweep_runs
from signsym_det.targetprop_study.tasks import TASKS, normalise, render_image


def test_parse_shard():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def record(algorithm, lr, top1):
    return {"config": {"algorithm": algorithm, "lr": lr}, "top1": top1}


def test_choose_lrs_best_val_smaller_on_ties_diverged_counts_zero():
    records = [record("bp", 1e-3, 90.0), record("bp", 3e-3, 95.0), record("bp", 3e-4, 95.0),
               record("dtp", 1e-3, None), record("dtp", 3e-3, 10.0)]  # fmt: skip
    assert choose_lrs(records) == {"bp": 3e-4, "dtp": 3e-3}


def test_shards_partition_the_runs_and_finished_runs_are_skipped(tmp_path, monkeypatch):
    runs = sweep_runs(steps=5)
    shards = [Study(str(tmp_path), (i, 3)).mine(runs) for i in range(3)]
    names = [run.name() for shard in shards for run in shard]
    assert sorted(names) == sorted(run.name() for run in runs) and len(set(names)) == len(runs)
    done = {"config": {}, "top1": 12.5}
    study_module.write_json(study_module.record_path(str(tmp_path), runs[0], "sweep"), done)
    monkeypatch.setattr(study_module, "train", lambda *a, **k: pytest.fail("retrained"))
    assert Study(str(tmp_path)).execute(runs[0], "sweep") == done


@pytest.mark.parametrize("task", list(TASKS))
def test_task_images_are_deterministic_with_valid_labels(task):
    first = [render_image(task, "train", index, 24) for index in range(4)]
    again = [render_image(task, "train", index, 24) for index in range(4)]
    for (image, label), (same, same_label) in zip(first, again):
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8
        assert np.array_equal(image, same) and label == same_label
        assert 0 <= label < TASKS[task].num_classes
    assert not np.array_equal(first[0][0], render_image(task, "val", 0, 24)[0])


def test_normalise_is_imagenet_mean_std():
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    x = normalise(images)
    assert x.shape == (2, 3, 5, 4)
    for c in range(3):
        expected = (images[..., c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert np.allclose(x[:, c].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["bp", "dtp"])
def test_tiny_run_records_curves_angles_and_a_convertible_checkpoint(algorithm):
    torch.manual_seed(0)
    x, y = torch.randn(40, 3, 16, 16), torch.arange(40) % 3
    config = RunConfig("mnist", algorithm, "conv", 0, 1e-3, steps=4, batch_size=8,
                       image_size=16, channels=(4, 4, 4), eval_every=2, angle_every=2)  # fmt: skip
    result, checkpoint = train(config, {"train": (x, y), "test": (x[:10], y[:10])}, 3)
    assert [p["step"] for p in result["curve"]] == [2, 4]
    assert [p["step"] for p in result["angles"]] == [2, 4]
    first_layer = [p["layers.0.0.weight"] for p in result["angles"]]
    if algorithm == "bp":  # the study's update is backprop's: angle 0 up to rounding
        assert max(first_layer) < 1e-3
    else:  # DTP's first-layer update is not backprop's
        assert min(first_layer) > 1.0
    predicted = checkpoint["model"]
    converted = to_detectron2(checkpoint)["model"]
    assert sorted(converted) == [f"layers.{i}.0.{t}" for i in range(3) for t in ("bias", "weight")]
    assert all(torch.equal(converted[k], predicted[k]) for k in converted)
