"""FeedbackCheckpointer writes atomically and refuses bad or unsafe files with one line."""

import os
import pickle

import pytest
import torch
from torch import nn

from signsym_det.checkpoint.feedback_checkpointer import FeedbackCheckpointer
from signsym_det.checkpoint.io import (
    CheckpointReadError,
    UnsafeCheckpointError,
    load_weights_only,
)
from signsym_det.checkpoint.pretrained import convert_pretrained


def checkpointer(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return FeedbackCheckpointer(model, str(tmp_path), optimizer=optimizer)


def crash_midway(monkeypatch):
    """torch.save writes some bytes, then raises (a crash in the middle of a write)."""

    def half_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk gone")

    monkeypatch.setattr(torch, "save", half_save)


def test_crash_while_saving_leaves_last_checkpoint_loadable(tmp_path, monkeypatch):
    ckpt = checkpointer(tmp_path)
    ckpt.save("model_0000004", iteration=4)
    with monkeypatch.context() as patch:
        crash_midway(patch)
        with pytest.raises(OSError, match="disk gone"):
            ckpt.save("model_0000009", iteration=9)
        with pytest.raises(OSError, match="disk gone"):
            ckpt.save("model_0000004", iteration=4)  # overwriting the named file
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert checkpointer(tmp_path).resume_or_load("", resume=True)["iteration"] == 4


def test_crash_while_tagging_keeps_the_previous_tag(tmp_path, monkeypatch):
    ckpt = checkpointer(tmp_path)
    ckpt.save("model_0000004", iteration=4)
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("killed before the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="before the rename"):
        ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


class Opaque:
    """A Python object: the weights-only reader refuses it."""


def test_a_value_weights_only_cannot_read_is_not_saved(tmp_path):
    ckpt = checkpointer(tmp_path)
    ckpt.save("model_0000004", iteration=4)
    with pytest.raises(TypeError, match=r"model_0000009.pth: not saved: .*global .*Opaque"):
        ckpt.save("model_0000009", iteration=9, payload=Opaque())
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]


def test_stale_temporary_file_of_a_killed_write_is_removed(tmp_path):
    stale = tmp_path / ".model_0000004.pth.abc123"
    other = tmp_path / ".model_0000005.pth.abc123"
    stale.write_bytes(b"PK half")
    other.write_bytes(b"PK half")
    checkpointer(tmp_path).save("model_0000004", iteration=4)
    assert not stale.exists() and other.exists()  # only the same file's


def test_load_takes_fvcores_arguments(tmp_path):
    ckpt = checkpointer(tmp_path)
    ckpt.model(torch.randn(2, 3, 8, 8)).sum().backward()
    ckpt.checkpointables["optimizer"].step()
    ckpt.save("model_0000001", iteration=1)
    path = str(tmp_path / "model_0000001.pth")
    fresh = checkpointer(tmp_path)
    assert "optimizer" in fresh.load(path, checkpointables=[])  # returned, not loaded
    assert not fresh.checkpointables["optimizer"].state_dict()["state"]
    assert "optimizer" not in fresh.load(path, ["optimizer"])
    assert fresh.checkpointables["optimizer"].state_dict()["state"]
    with pytest.raises(TypeError):
        fresh.load(path, None, "extra")


def test_optimizer_state_is_saved(tmp_path):
    ckpt = checkpointer(tmp_path)
    ckpt.model(torch.randn(2, 3, 8, 8)).sum().backward()
    ckpt.checkpointables["optimizer"].step()
    ckpt.save("model_0000000", iteration=0)
    assert load_weights_only(tmp_path / "model_0000000.pth")["optimizer"]["state"]


@pytest.mark.parametrize(
    "content, error, message",
    [
        (None, FileNotFoundError, r"missing.pth' does not exist"),
        (b"", CheckpointReadError, r"not a readable PyTorch checkpoint.*EOFError"),
        (b"hello", CheckpointReadError, r"not a readable PyTorch checkpoint"),
        ("truncated", CheckpointReadError, r"not a readable.*central directory"),
        ([1, 2, 3], ValueError, r"unknown checkpoint layout: a list"),
        ({"model": "weights"}, ValueError, r"unknown checkpoint layout: 'model' is a str"),
        ({"model": {"w": [1.0]}}, ValueError, r"unknown checkpoint layout: 'w' is a list"),
        ({"state_dict": {"x": 1}, "arch": "vgg"}, ValueError, r"layout.*'state_dict' is a dict"),
    ],
)
def test_bad_weights_files_fail_with_one_line(tmp_path, content, error, message):
    path = tmp_path / "missing.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.ones(1000)}}, path)
        path.write_bytes(path.read_bytes()[:900])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(error, match=message) as caught:
        FeedbackCheckpointer(nn.Linear(2, 2)).load(str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_named_by_last_checkpoint(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000042.pth")
    with pytest.raises(FileNotFoundError, match=r"model_0000042.pth' \(named by .*last_checkpoint"):
        FeedbackCheckpointer(nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)


class RunsCode:
    """Unpickling this calls os.system: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_executing_pickle_is_refused(tmp_path, writer):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pth"
    obj = {"model": {"w": torch.ones(1)}, "payload": RunsCode(marker)}
    # torch's format names the global; plain pickle fails earlier, on an opcode
    named = "global posix.system" if writer == "torch.save" else "Unsupported operand"
    with open(path, "wb") as f:
        (torch.save if writer == "torch.save" else pickle.dump)(obj, f)
    for load in (
        lambda: FeedbackCheckpointer(nn.Linear(2, 2)).load(str(path)),
        lambda: convert_pretrained(path, tmp_path / "out.pth"),
        lambda: load_weights_only(path),
    ):
        with pytest.raises(UnsafeCheckpointError, match=rf"refused.*{named}.*arbitrary code"):
            load()
    assert not marker.exists()
    assert not (tmp_path / "out.pth").exists()
