"""python -m signsym_det.pretrain_hebbian end to end: outputs, metrics, exact resume, no labels."""

import json
import shutil

import pytest
import torch
from torchvision import datasets

from signsym_det.data.classification import generate_classification_dataset
from signsym_det.engine.hebbian import HebbianPretrainer
from signsym_det.engine.hebbian_data import UnlabelledImages
from signsym_det.pretrain_hebbian import main


@pytest.fixture(scope="module")
def classification_set(tmp_path_factory):
    """24 train / 6 val images of 32 px (four per class in train)."""
    root = tmp_path_factory.mktemp("cls")
    generate_classification_dataset(root, num_train=24, num_val=6, image_size=32)
    return root


def run(data, out, target, *extra):
    args = ["--target", target, "--data", str(data), "--output-dir", str(out)]
    args += ["--image-size", "32", "--batch-size", "8", "--max-iter", "6", "--workers", "0"]
    args += ["--device", "cpu", "--log-period", "1", "--checkpoint-period", "3"]
    args += ["--no-tensorboard", "--units", "40" if target == "hidden" else "64"]
    return main([*args, "--max-patches", "300", *extra])


def final_weight(out):
    return torch.load(out / "model_final.pth", weights_only=True)["model"]["weight"]


@pytest.mark.slow
@pytest.mark.parametrize("target, shape", [("hidden", (40, 3 * 32 * 32)), ("stem", (64, 3, 7, 7))])
def test_the_tool_writes_checkpoints_png_and_metrics(classification_set, tmp_path, target, shape):
    out = tmp_path / target
    outputs = run(classification_set, out, target)
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["model"]["weight"].shape == shape
    assert final["iteration"] == 6 and final["learner"]["steps_done"] == 6
    assert final["hebbian"]["images"] == 24  # train/ only, never val/
    assert (out / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == list(range(6))
    for key in ("lr", "mean_abs_dw", "mean_row_pnorm", "units_won_frac"):
        assert all(key in r for r in records), key
    assert records[0]["lr"] == pytest.approx(0.02) and records[-1]["lr"] == pytest.approx(0.02 / 6)
    assert all(0 < r["units_won_frac"] <= 1 for r in records)
    # N(0, 1) start: rows of norm ~sqrt(N), moving towards 1
    assert records[-1]["mean_row_pnorm"] < records[0]["mean_row_pnorm"]
    if target == "stem":
        stem = torch.load(outputs["stem"], weights_only=True)
        weight = stem["model"]["backbone.bottom_up.stem.conv1.weight"]
        assert torch.equal(weight, final["model"]["weight"])
        assert stem["feedback"]["rule"] == "krotov_hopfield" and stem["layout"] == "detectron2"
    else:
        assert "stem" not in outputs


@pytest.mark.slow
def test_resume_after_a_crash_gives_the_uninterrupted_weights(
    classification_set, tmp_path, monkeypatch
):
    run(classification_set, tmp_path / "whole", "stem")

    original = HebbianPretrainer.run_step

    def crash_at_iteration_4(self):
        if self.iter == 4:
            raise KeyboardInterrupt("killed")
        original(self)

    monkeypatch.setattr(HebbianPretrainer, "run_step", crash_at_iteration_4)
    with pytest.raises(KeyboardInterrupt):
        run(classification_set, tmp_path / "split", "stem")
    saved = torch.load(tmp_path / "split" / "checkpoint.pth", weights_only=True)
    assert saved["iteration"] == 3 and not (tmp_path / "split" / "model_final.pth").exists()
    monkeypatch.setattr(HebbianPretrainer, "run_step", original)
    with pytest.raises(SystemExit, match="pass --resume"):
        run(classification_set, tmp_path / "split", "stem")
    run(classification_set, tmp_path / "split", "stem", "--resume")
    assert torch.equal(final_weight(tmp_path / "split"), final_weight(tmp_path / "whole"))
    with pytest.raises(ValueError, match=r"is another run"):
        run(classification_set, tmp_path / "split", "stem", "--resume", "--seed", "1")


@pytest.mark.slow
def test_no_labels_are_read(classification_set, tmp_path, monkeypatch):
    """The class folders play no part: the same images in one flat folder give the same
    weights, and torchvision's class-folder reading is never called."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted((classification_set / "train").rglob("*.png")):
        shutil.copy(path, flat / f"{path.parent.name}_{path.name}")  # same sorted order

    def no_labels(*args, **kwargs):
        raise AssertionError("class folders were read")

    monkeypatch.setattr(datasets.ImageFolder, "find_classes", no_labels)
    monkeypatch.setattr(datasets.folder, "find_classes", no_labels)
    run(classification_set, tmp_path / "folders", "hidden")
    run(flat, tmp_path / "flat_run", "hidden")
    assert torch.equal(final_weight(tmp_path / "folders"), final_weight(tmp_path / "flat_run"))
    item = UnlabelledImages(classification_set / "train", 32)[0]
    assert isinstance(item, torch.Tensor) and item.shape == (3, 32, 32)
