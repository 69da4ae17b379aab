"""The part-3 study script at toy scale: three arms, results, resume, changed settings."""

import json

import pytest
import torch

from signsym_det.data.classification import generate_classification_dataset
from signsym_det.engine.hebbian_study import main, summarise

pytestmark = pytest.mark.slow


def test_study_runs_every_arm_reuses_finished_runs_and_refuses_other_settings(tmp_path):
    data = tmp_path / "cls"
    generate_classification_dataset(data, num_train=24, num_val=12, image_size=32)
    args = ["--data", str(data), "--out", str(tmp_path / "study"), "--seeds", "0"]
    args += ["--hidden", "20", "--image-size", "16", "--hebbian-iter", "4", "--epochs", "2"]
    args += ["--batch-size", "8"]
    results = main(args)
    assert [(r["arm"], r["seed"]) for r in results["runs"]] == [
        ("hebbian", 0),
        ("backprop", 0),
        ("random", 0),
    ]
    assert all(0 <= r["val_error"] <= 100 for r in results["runs"])
    hebbian = torch.load(
        tmp_path / "study" / "hebbian_seed0" / "model_final.pth", weights_only=True
    )
    assert hebbian["model"]["weight"].shape == (20, 3 * 16 * 16)
    assert json.loads((tmp_path / "study" / "results.json").read_text())["runs"] == results["runs"]
    assert (tmp_path / "study" / "errors.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "study" / "images").iterdir()) == [
        "train_16px.pt",
        "val_16px.pt",
    ]

    marked = tmp_path / "study" / "random_seed0.json"
    record = json.loads(marked.read_text())
    marked.write_text(json.dumps({**record, "val_error": 12.5}))  # a finished run is not redone
    assert main(args)["val_error"]["random"]["mean"] == 12.5
    with pytest.raises(ValueError, match=r"was made with .*'epochs': 2.*choose another --out"):
        main([*args, "--epochs", "3"])


def test_summary_is_mean_and_sample_std_per_arm():
    runs = [{"arm": "random", "val_error": e} for e in (10.0, 20.0, 30.0)]
    runs.append({"arm": "hebbian", "val_error": 5.0})
    summary = summarise(runs)
    assert summary["random"] == {"mean": 20.0, "std": 10.0, "n": 3}
    assert summary["hebbian"] == {"mean": 5.0, "std": None, "n": 1}
