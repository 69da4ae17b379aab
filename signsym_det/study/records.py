"""A study's records: the small files that make a finished stage count as finished, kept
apart from its checkpoints so that they can be committed and the study resumes on another
machine (a machine whose disk does not outlive a sitting, a cluster job's scratch).

For every finished stage (detection run or pretraining) ``<records>/<path in the study>/``
holds its ``done.json`` and its metrics (``metrics.json``: detectron2's, ``metrics.jsonl``:
pretrain_net's), a few hundred kB per stage. :meth:`Records.restore` copies them back into a
study directory that lacks them: the report reads them as if the runs had finished there, and
the runner skips them. Checkpoints are not recorded: a pretraining whose weights are gone is
trained again only when one of its detection runs still needs it
(:func:`signsym_det.study.pretraining.run_pretraining`).
"""

import shutil
from pathlib import Path

#: A finished stage's marker (written last, so a stage with it is whole).
DONE = "done.json"
#: A detection run's held-out test (study/heldout.py).
HELDOUT = "heldout.json"
#: What makes a stage's record: its done.json and the metrics the report reads.
RECORD_FILES = (DONE, "metrics.json", "metrics.jsonl", HELDOUT)


def _copy_record(source: Path, target: Path) -> None:
    """Copy the record files ``source`` has into ``target`` (made if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


class Records:
    """``Records(study_dir, records_dir)``: keep finished stages' files, restore them."""

    def __init__(self, study_dir, records_dir):
        self.study_dir, self.records_dir = Path(study_dir), Path(records_dir)

    def _record_of(self, output_dir) -> Path:
        return self.records_dir / Path(output_dir).relative_to(self.study_dir)

    def keep(self, output_dir) -> None:
        """Copy a finished stage's record files (those it has) into the records."""
        _copy_record(Path(output_dir), self._record_of(output_dir))

    def keep_finished(self, runs) -> None:
        """Keep every finished stage of ``runs`` (detection runs and their pretraining), e.g.
        those of a study that ran before it had records."""
        for run in runs:
            for stage in (run, run.pretraining):
                if stage is not None and stage.done:
                    self.keep(stage.output_dir)

    def restore(self) -> list:
        """Copy every recorded stage missing from the study directory into it (a stage the
        study directory already has as finished is left alone); returns the restored dirs."""
        restored = []
        for done in sorted(self.records_dir.rglob(DONE)):
            output_dir = self.study_dir / done.parent.relative_to(self.records_dir)
            if (output_dir / DONE).is_file():
                continue
            _copy_record(done.parent, output_dir)
            restored.append(output_dir)
        return restored
