"""train_net.write_eval_results: evaluator results as plain JSON."""

import json
import math

import numpy as np

from signsym_det.train_net import write_eval_results


def test_results_become_plain_json(tmp_path):
    results = {"shapes_val": {"bbox": {"AP": math.nan, "AP50": np.float64(1.5)}, "x": {"n": "k"}}}
    path = write_eval_results(results, tmp_path / "new_dir")
    text = open(path).read()
    assert "NaN" not in text  # strict JSON: NaN (nothing detected) is null
    assert json.loads(text) == {"shapes_val": {"bbox": {"AP": None, "AP50": 1.5}, "x": {"n": "k"}}}
