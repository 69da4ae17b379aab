"""Seeded fuzzing: randomly broken dataset jsons and pretrained checkpoints give a clear
error (ValueError / KeyError / FileNotFoundError naming what is wrong) or a correct
result, never a raw TypeError/AttributeError/... from deep inside. Bounded in time."""

import copy
import json
import random
import time

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from signsym_det.checkpoint.io import CheckpointReadError
from signsym_det.checkpoint.pretrained import convert_pretrained, to_detectron2
from signsym_det.data.validate import check_annotations, check_images, read_coco_json

CLEAR = (ValueError, KeyError, FileNotFoundError)
BUDGET_S = 3.0
JUNK = [None, "", "x", -1, 0, 1e30, float("nan"), [], [1], {}, {"a": 1}, True, [1, 2, 3, 4]]


def mutate(obj, rng, depth=0):
    """A copy of the json-like ``obj`` with one random change somewhere inside."""
    if isinstance(obj, dict) and obj and depth < 4 and rng.random() < 0.7:
        key = rng.choice(sorted(obj, key=str))
        action = rng.random()
        if action < 0.2:
            return {k: v for k, v in obj.items() if k != key}
        if action < 0.4:
            return {**obj, key: rng.choice(JUNK)}
        return {**obj, key: mutate(obj[key], rng, depth + 1)}
    if isinstance(obj, list) and obj and depth < 4 and rng.random() < 0.7:
        i = rng.randrange(len(obj))
        out = list(obj)
        out[i] = mutate(obj[i], rng, depth + 1) if rng.random() < 0.7 else rng.choice(JUNK)
        return out
    return rng.choice(JUNK)


def assert_clear(error, where=None):
    """A ValueError/KeyError/FileNotFoundError with a message (naming ``where`` if given)."""
    assert isinstance(error, CLEAR), f"{type(error).__name__} from deep inside: {error}"
    assert len(str(error)) > 20, f"terse error: {error!r}"
    assert where is None or str(where) in str(error), f"error does not name {where}: {error}"


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_coco")
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [1, 2, 10, 8], "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 1, "bbox": [5, 5, 4, 4], "category_id": 1, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    return root, data


def test_fuzz_dataset_validation(coco):
    root, valid = coco
    rng = random.Random(0)
    path = root / "fuzz.json"
    start, runs = time.monotonic(), 0
    while time.monotonic() - start < BUDGET_S:
        broken = mutate(copy.deepcopy(valid), rng)
        text = json.dumps(broken)
        if rng.random() < 0.1:
            text = text[: rng.randrange(len(text))]
        path.write_text(text)
        runs += 1
        try:
            data = read_coco_json(path)
            problems = check_annotations(data, str(path), mode=rng.choice(["error", "skip"]))
            check_images(data, root, str(path))
        except Exception as error:  # noqa: BLE001 - the point of the test
            assert_clear(error, path)
        else:
            assert isinstance(problems, list)
    assert runs > 50


@pytest.fixture(scope="module")
def resnet_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


def broken_checkpoint(state, rng):
    """A randomly damaged torchvision ResNet-18 checkpoint (dict)."""
    state = dict(state)
    keys = sorted(state)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(keys)
        action = rng.randrange(6)
        if action == 0:
            state.pop(key, None)
        elif action == 1:
            state[key.replace("layer", rng.choice(["stage", "layer9", "lay"]))] = state.pop(
                key, torch.zeros(1)
            )
        elif action == 2:
            state[key] = rng.choice(JUNK)
        elif action == 3:
            state["module.x" if rng.random() < 0.5 else "fc.extra"] = torch.zeros(1)
        elif action == 4:
            state[key] = torch.zeros(2, 2)
    wrap = rng.randrange(5)
    if wrap == 0:
        # a non-dict "feedback" crashes: see test_non_dict_feedback_gives_a_clear_error
        return {"model": state, "feedback": {"rule": rng.choice([*JUNK, "fa", "bp"])}}
    if wrap == 1:
        return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "arch": "resnet18"}
    if wrap == 2:
        return rng.choice([state, {"model": rng.choice(JUNK)}, {"layout": "detectron2"}])
    return state


def test_fuzz_pretrained_conversion(resnet_state, tmp_path):
    rng = random.Random(1)
    start, runs = time.monotonic(), 0
    while time.monotonic() - start < BUDGET_S:
        obj = broken_checkpoint(resnet_state, rng)
        runs += 1
        try:
            out = to_detectron2(obj, source="fuzz.pth", rule=rng.choice([None, "fa", "bp"]))
        except Exception as error:  # noqa: BLE001
            assert_clear(error)
        else:
            if isinstance(obj, dict) and obj.get("layout") == "detectron2":
                assert out is obj  # passed through unchecked; FeedbackCheckpointer checks it
            else:
                assert isinstance(out, dict) and isinstance(out.get("model"), dict)
    assert runs > 20


def test_fuzz_checkpoint_bytes(resnet_state, tmp_path):
    rng = random.Random(2)
    source = tmp_path / "tv.pth"
    torch.save({k: resnet_state[k] for k in sorted(resnet_state)[:12]}, source)
    valid = source.read_bytes()
    path = tmp_path / "broken.pth"
    for _ in range(30):
        data = bytearray(valid)
        if rng.random() < 0.5:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            convert_pretrained(path, tmp_path / "out.pth")
        except Exception as error:  # noqa: BLE001
            assert_clear(error, path)
            assert not isinstance(error, CheckpointReadError) or "readable" in str(error)


def test_non_string_keys_give_a_clear_error(resnet_state):
    with pytest.raises(ValueError):
        to_detectron2({**resnet_state, 3: torch.zeros(1)}, source="int_key.pth")


def test_non_dict_feedback_gives_a_clear_error(resnet_state):
    with pytest.raises(ValueError):
        to_detectron2({"model": resnet_state, "feedback": 1.5}, source="feedback.pth")
