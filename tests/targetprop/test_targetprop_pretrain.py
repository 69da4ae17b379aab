"""python -m signsym_det.pretrain_net --algorithm A --arch convnet[_lc]: every algorithm trains
through the one engine and logs its update angles; DTP resumes exactly; bad combinations are
named."""

import json

import pytest
import torch

from signsym_det.classification import data as data_module
from signsym_det.data.classification import generate_classification_dataset
from signsym_det.pretrain_net import main, parse_args

ALGORITHMS = ("bp", "fa", "sign_symmetry", "dfa", "dtp", "sdtp", "ao_sdtp")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls") / "data"
    generate_classification_dataset(root, num_train=12, num_val=6, image_size=24)
    return root


def args(data, out, algorithm, arch, max_iter, *extra):
    return [
        "--data", str(data), "--output-dir", str(out), "--algorithm", algorithm, "--arch", arch,
        "--image-size", "24", "--batch-size", "4", "--max-iter", str(max_iter), "--workers", "0",
        "--device", "cpu", "--optimizer", "adamw", "--lr", "1e-3", "--log-period", "1",
        "--update-angle-period", "1", "--checkpoint-period", "1", "--channels", "4", "6",
        "--kernel-size", "3", "--no-tensorboard", "--seed", "2", *extra,
    ]  # fmt: skip


def lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["convnet", "convnet_lc"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_and_logs_its_update_angles(data, tmp_path, algorithm, arch):
    main(args(data, tmp_path, algorithm, arch, 2))
    train = [line for line in lines(tmp_path) if "total_loss" in line]
    assert [line["iteration"] for line in train] == [0, 1]
    parts = {f"update_angle/layers.{index}" for index in range(3)}
    for line in train:
        assert parts <= set(line) and all(0 <= line[key] <= 180 for key in parts)
        assert "update_angle_layer/layers.2.1.weight" in line
        assert not any(key.endswith("bias") for key in line)
    last = train[-1]
    if algorithm in ("bp", "fa", "sign_symmetry", "dtp", "dfa"):  # output layer: loss gradient
        assert last["update_angle/layers.2"] == pytest.approx(0, abs=1e-3)
    if algorithm == "bp":
        assert all(last[key] == pytest.approx(0, abs=1e-3) for key in parts)
    else:  # the first layer's update is not backprop's
        assert last["update_angle/layers.0"] > 1
    if algorithm in ("dtp", "sdtp", "ao_sdtp"):
        assert {"forward_loss/0", "forward_loss/1", "inverse_loss/1"} <= set(last)
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert (final["algorithm"], final["arch"], final["iteration"]) == (algorithm, arch, 2)
    assert final["convnet"]["locally_connected"] == (arch == "convnet_lc")
    assert final["layout"] == "layered" and {"val_top1", "val_top5"} <= set(final["metrics"])
    assert (final["feedback"] is None) == (algorithm in ("dfa", "dtp", "sdtp", "ao_sdtp"))
    assert ("inverses" in final) == (algorithm in ("dtp", "sdtp", "ao_sdtp"))
    if algorithm == "ao_sdtp":  # as many auxiliary outputs as classes
        assert final["model"]["layers.2.1.weight"].shape[0] == 12


@pytest.mark.slow
def test_dtp_resume_is_exact(data, tmp_path, monkeypatch):
    """Same weights, inverses and optimizer states whether or not the run was interrupted
    (augmentation made deterministic here: its global RNG is not the algorithm's state)."""
    plain = data_module.build_transforms
    monkeypatch.setattr(
        data_module, "build_transforms", lambda train, size, s=0: plain(False, size)
    )
    main(args(data, tmp_path / "whole", "dtp", "convnet_lc", 5))
    main(args(data, tmp_path / "split", "dtp", "convnet_lc", 2))
    state = torch.load(tmp_path / "split/checkpoint.pth", weights_only=True)
    assert set(state["inverse_optimizers"]) == {"1"} and "inverses" in state
    main(args(data, tmp_path / "split", "dtp", "convnet_lc", 5, "--resume"))
    whole = torch.load(tmp_path / "whole/model_final.pth", weights_only=True)
    split = torch.load(tmp_path / "split/model_final.pth", weights_only=True)
    optimizers = [(split["optimizer"], whole["optimizer"])]
    optimizers += [(split["inverse_optimizers"]["1"], whole["inverse_optimizers"]["1"])]
    for ours, theirs in [(split[k], whole[k]) for k in ("model", "inverses")] + [
        (a["state"], b["state"]) for a, b in optimizers
    ]:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert [a["param_groups"] == b["param_groups"] for a, b in optimizers] == [True, True]
    assert not torch.equal(state["model"]["layers.0.0.weight"], whole["model"]["layers.0.0.weight"])
    with pytest.raises(ValueError, match="trained by 'dtp'; this run is a convnet_lc trained by"):
        main(args(data, tmp_path / "split", "sdtp", "convnet_lc", 6, "--resume"))


def test_bad_combinations_name_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--algorithm", "dtp", "--arch", "resnet18"])
    error = capsys.readouterr().err
    assert "--algorithm dtp cannot train --arch resnet18" in error
    assert "convnet, convnet_lc with those or dfa, dtp, sdtp, ao_sdtp" in error
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--algorithm", "fa", "--rule", "sign_symmetry"])
    assert "--rule sign_symmetry contradicts --algorithm fa" in capsys.readouterr().err


def test_algorithm_and_rule_resolve_to_one_rule():
    base = ["--data", "x"]
    assert (parse_args(base).algorithm, parse_args(base).rule) == ("sign_symmetry",) * 2
    parsed = parse_args([*base, "--rule", "usf"])
    assert (parsed.algorithm, parsed.rule) == ("sign_symmetry", "sign_symmetry")
    parsed = parse_args([*base, "--algorithm", "dfa", "--arch", "convnet"])
    assert (parsed.algorithm, parsed.rule) == ("dfa", "bp")
