"""tools/train_net.py end to end on a tiny generated shapes set: train, then --eval-only."""

import json

import pytest
from eval_results_check import assert_written_as_printed

pytestmark = pytest.mark.slow  # subprocess training runs

CONFIG = "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml"


def test_train_then_eval_only(tmp_path, tiny_shapes_env, tiny_run, run_tool):
    tiny = [*tiny_run, "MODEL.FEEDBACK.GRADIENT_ALIGNMENT_PERIOD", "2"]

    def run(*args):
        return run_tool(tiny_shapes_env, "tools/train_net.py", "--config-file", CONFIG, *args)

    out = tmp_path / "out"
    run(*tiny, "OUTPUT_DIR", str(out))
    assert (out / "model_final.pth").is_file()
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    keys = set().union(*records)
    assert {
        "weight_angle/backbone",
        "weight_angle/fpn",
        "weight_angle/head",
        "weight_angle/predictor",
        "grad_angle/backbone",
        "total_loss",
    } <= keys
    assert "bbox/AP" in keys  # the final COCOEvaluator run
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard event file"

    log = run(
        "--eval-only",
        *tiny,
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
    )
    assert_written_as_printed(log, tmp_path / "eval")
    result = json.loads(
        (tmp_path / "eval" / "inference" / "shapes_val" / "coco_instances_results.json").read_text()
    )
    assert isinstance(result, list)
