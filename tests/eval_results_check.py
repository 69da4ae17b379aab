"""Shared by the train_net / lazy_train_net --eval-only tests: eval_results.json against the
numbers detectron2 printed."""

import json

import pytest

HEAD = "copypaste: AP,AP50,AP75,APs,APm,APl"


def assert_written_as_printed(log: str, output_dir) -> None:
    """OUTPUT_DIR/eval_results.json's bbox metrics are those of the log's copypaste line
    (printed NaN, nothing detected: written as null)."""
    assert HEAD in log
    printed = log.split(HEAD)[1].split("copypaste: ")[1].splitlines()[0].split(",")
    written = json.loads((output_dir / "eval_results.json").read_text())["bbox"]
    for name, value in zip(HEAD.split(": ")[1].split(","), map(float, printed)):
        assert written[name] == (None if value != value else pytest.approx(value, abs=1e-4))
