"""The demo: its closing summary names the files, and end to end (tools/demo.py on a tiny
generated shapes set) it announces its plan, shows progress and writes those files."""

import pytest

from signsym_det.demo import summary


def test_summary_names_every_file_and_the_time():
    text = summary("TABLE", 7.25, 900, "out", "out/curves.png", "out/boxes.png")
    assert "TABLE" in text and "900 iterations" in text and "7.2 min" in text
    for path in ("out/results.md", "out/curves.png", "out/boxes.png"):
        assert path in text


@pytest.mark.slow
def test_demo_writes_table_plots_and_summary(tmp_path, tiny_shapes_env, tiny_run, run_tool):
    out = tmp_path / "demo"
    log = run_tool(tiny_shapes_env, "tools/demo.py", "--output-dir", str(out), *tiny_run)
    for name in ("results.md", "predictions.png", "training_curves.png"):
        assert (out / name).is_file(), name
        assert str(out / name) in log, name  # named by the closing summary
    assert (out / "model_final.pth").is_file()
    assert "| shapes_val |" in (out / "results.md").read_text()
    assert "3 iterations of 2 images" in log  # the plan line, from the tiny-run options
    assert "eta:" in log  # detectron2's progress line
