"""Both dataset generators replace an existing set only by a complete new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signsym_det.data import classification, shapes
from signsym_det.data.atomic import write_dir_atomically

TINY = {
    "detection": dict(num_train=3, num_val=2, image_size=32),
    "classification": dict(num_train=6, num_val=6, image_size=32),
}
GENERATE = {
    "detection": shapes.generate_detection_dataset,
    "classification": classification.generate_classification_dataset,
}
# the per-image renderer each generator calls while it writes (looked up at call time)
RENDERER = {
    "detection": (shapes, "render_sample"),
    "classification": (classification, "render_classification_sample"),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", sorted(GENERATE))
def test_failure_midway_leaves_the_old_set_intact(kind, tmp_path, monkeypatch):
    out = tmp_path / "set"
    GENERATE[kind](out, seed=0, **TINY[kind])
    before = _files(out)
    assert "manifest.json" in before and any(name.endswith(".png") for name in before)

    module, name = RENDERER[kind]
    real, calls = getattr(module, name), []

    def fail_on_third_image(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, fail_on_third_image)
    with pytest.raises(RuntimeError, match="disk gone"):
        GENERATE[kind](out, seed=1, **TINY[kind])
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary left behind


@pytest.mark.parametrize("kind", sorted(GENERATE))
def test_failed_swap_puts_the_old_set_back(kind, tmp_path, monkeypatch):
    out = tmp_path / "set"
    GENERATE[kind](out, seed=0, **TINY[kind])
    before = _files(out)
    real_replace = os.replace

    def replace_failing_for_the_new_set(src, dst):
        if Path(src).name.startswith(".set.tmp-"):
            raise OSError("rename refused")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_for_the_new_set)
    with pytest.raises(OSError, match="rename refused"):
        GENERATE[kind](out, seed=1, **TINY[kind])
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


@pytest.mark.parametrize("kind", sorted(GENERATE))
def test_a_complete_new_set_replaces_the_old_one(kind, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    GENERATE[kind](first, seed=0, **TINY[kind])
    GENERATE[kind](second, seed=1, **TINY[kind])
    GENERATE[kind](first, seed=1, **TINY[kind])  # regenerate over the seed-0 set
    assert _files(first) == _files(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]


def test_foreign_or_file_target_is_refused_before_writing(tmp_path):
    calls = []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"mine exists, is not empty .* a generated thing"):
        write_dir_atomically(foreign, calls.append, lambda root: False, "thing")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="file exists and is not a directory"):
        write_dir_atomically(a_file, calls.append, lambda root: True, "thing")
    assert calls == [] and (foreign / "keep.txt").read_text() == "precious"


def test_empty_directory_is_filled_and_result_returned(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()

    def write(tmp: Path) -> str:
        (tmp / "a.txt").write_text("a")
        return "done"

    assert write_dir_atomically(out, write, lambda root: False, "thing") == "done"
    assert _files(out) == {"a.txt": b"a"}
    assert oct(out.stat().st_mode & 0o777) == "0o755"
