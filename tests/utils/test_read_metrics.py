"""read_metrics: a resumed run's records replace those of the iterations it redid."""

import json

from signsym_det.utils.plots import read_metrics


def _write(path, iterations):
    path.write_text(
        "".join(json.dumps({"iteration": i, "loss": float(i)}) + "\n" for i in iterations)
    )


def test_a_run_without_resume_reads_in_order(tmp_path):
    path = tmp_path / "metrics.json"
    _write(path, [19, 39, 39, 59])  # an iteration twice in one run (e.g. an eval) is kept
    assert [r["iteration"] for r in read_metrics(path)] == [19, 39, 39, 59]


def test_a_resumed_run_replaces_the_iterations_it_redid(tmp_path):
    path = tmp_path / "metrics.json"
    # trained to 79, killed; resumed from the checkpoint at 39: 59 and 79 are logged again
    lines = [{"iteration": i, "loss": 1.0} for i in (19, 39, 59, 79)]
    lines += [{"iteration": i, "loss": 2.0} for i in (59, 79, 99)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + "\n")
    records = read_metrics(path)
    assert [(r["iteration"], r["loss"]) for r in records] == [
        (19, 1.0),
        (39, 1.0),
        (59, 2.0),
        (79, 2.0),
        (99, 2.0),
    ]
