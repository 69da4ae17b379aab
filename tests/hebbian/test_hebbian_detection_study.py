"""The part-4 runner without training: the runs it plans, the random stem file, the summaries."""

import json
from pathlib import Path

import pytest
import torch

from signsym_det.engine import hebbian_detection_study as study
from signsym_det.engine.hebbian_detection_study import (
    build_parser,
    final_loss,
    final_stem,
    make_stem,
    plan,
    stem_table,
)
from signsym_det.engine.hebbian_stem import STEM_WEIGHT, save_stem_weight
from signsym_det.pretrain_hebbian import initial_weight
from signsym_det.study import Run


def parse(tmp_path, *extra):
    args = build_parser().parse_args(["--out", str(tmp_path), *extra])
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    return args


def test_plan_freezes_the_loaded_stems_and_trains_the_trained_one(tmp_path):
    args = parse(tmp_path, "--seeds", "3", "--", "SOLVER.MAX_ITER", "7")
    planned = plan(args)
    assert [(stem, run.variant) for stem, run in planned] == [
        ("hebbian", "hebbian_stem_bp"),
        ("random", "random_stem_bp"),
        ("trained", "trained_stem_bp"),
        ("hebbian", "hebbian_stem_ss"),
        ("random", "random_stem_ss"),
        ("trained", "trained_stem_ss"),
    ]
    for stem, run in planned:
        opts = dict(zip(run.opts[::2], run.opts[1::2]))
        assert opts["MODEL.FEEDBACK.RULE"] == (
            "bp" if run.variant.endswith("bp") else "sign_symmetry"
        )
        assert opts["SEED"] == opts["MODEL.FEEDBACK.SEED"] == "3" and opts["SOLVER.MAX_ITER"] == "7"
        assert run.output_dir == tmp_path / run.variant / "seed3"
        if stem == "trained":
            assert "MODEL.WEIGHTS" not in opts and "MODEL.BACKBONE.FREEZE_AT" not in opts
        else:
            assert (
                Path(opts["MODEL.WEIGHTS"])
                == tmp_path / "stems" / f"{stem}_seed3" / "frozen_stem.pth"
            )
            assert opts["MODEL.BACKBONE.FREEZE_AT"] == "1"
            assert opts["MODEL.FEEDBACK.CHECK_BACKBONE"] == "False"


def test_the_random_stem_is_the_seeds_draw_at_unit_norm_and_made_once(tmp_path, monkeypatch):
    grids = []  # drawing 64 tiles takes seconds: record the call instead
    monkeypatch.setattr(study, "save_filter_grid", lambda w, path, title: grids.append(path))
    args = parse(tmp_path)
    path = make_stem(args, "random", 5)
    saved = torch.load(path, weights_only=True)
    weight = saved["model"][STEM_WEIGHT]
    draw = initial_weight((64, 3, 7, 7), 5)
    for unit in (0, 63):  # the same direction as the seed's draw, at unit 2-norm
        expected = draw[unit] / draw[unit].pow(2).sum().sqrt()
        torch.testing.assert_close(weight[unit], expected)
    assert saved["feedback"]["rule"] == "random" and grids == [path.parent / "filters.png"]
    path.write_bytes(b"kept")  # an existing stem file is never remade
    assert make_stem(args, "random", 5).read_bytes() == b"kept"


def test_final_loss_is_the_mean_of_the_last_logged_losses(tmp_path):
    lines = [{"iteration": i, "total_loss": loss} for i, loss in zip(range(4), (9.0, 3, 2, 1))]
    lines.insert(2, {"iteration": 2, "bbox/AP": 1.0})
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    run = Run("hebbian_stem_bp", 0, tmp_path)
    assert final_loss(run, windows=3) == pytest.approx(2.0)
    assert final_loss(Run("x", 0, tmp_path / "missing")) is None


def test_stem_table_has_a_row_per_stem_and_mean_std_per_rule_over_runs_that_did_not_diverge():
    def seed(ap, loss, diverged=None):
        final = None if diverged else {"AP": ap}
        return {"final": final, "final_loss": loss, "diverged": diverged}

    results = {
        "hebbian_stem_bp": [seed(1.0, 2.0), seed(3.0, 4.0), seed(0, 9.0, "FloatingPointError")],
        "hebbian_stem_ss": [seed(0.5, 1.5)],
        "random_stem_bp": [seed(2.0, 1.0)],
    }
    lines = stem_table(results).splitlines()
    assert lines[0] == (
        "| stem | AP, bp | AP, ss | final loss, bp | final loss, ss | diverged, bp | diverged, ss |"
    )
    assert lines[2] == (
        "| hebbian | 2.00 ± 1.41 (n=2) | 0.50 (n=1) | 3.00 ± 1.41 (n=2) | 1.50 (n=1) | 1 | 0 |"
    )
    assert lines[3] == "| random | 2.00 (n=1) | – | 1.00 (n=1) | – | 0 | 0 |"
    assert len(lines) == 4  # no trained-stem runs: no row


def test_final_stem_compares_with_the_file_and_reads_a_diverged_runs_last_checkpoint(tmp_path):
    weight = torch.randn(64, 3, 7, 7, generator=torch.Generator().manual_seed(0))
    stem = tmp_path / "stem.pth"
    save_stem_weight(weight, {"rule": "random"}, {}, stem)
    run = Run("random_stem_bp", 2, tmp_path / "run")
    run.output_dir.mkdir()
    norm = "backbone.bottom_up.stem.conv1.norm."
    state = {STEM_WEIGHT: weight.clone(), norm + "running_var": torch.full((64,), 1.0)}
    torch.save({"model": state}, run.output_dir / "model_0000099.pth")
    (run.output_dir / "last_checkpoint").write_text("model_0000099.pth")
    check = final_stem(run, stem)
    assert check["checkpoint"] == "model_0000099.pth" and check["stem_equals_file"]
    assert check["stem_norm"] == {"running_var": [1.0, 1.0]}
    state[STEM_WEIGHT][0, 0, 0, 0] += 1e-6  # a final model whose stem moved
    torch.save({"model": state}, run.output_dir / "model_final.pth")
    check = final_stem(run, stem)
    assert check["checkpoint"] == "model_final.pth" and not check["stem_equals_file"]
