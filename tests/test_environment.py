"""The environment `make setup` builds: detectron2 imports, a stock RetinaNet trains and
infers on CPU, the compatibility fixes hold, and tools/install_detectron2.py's logic."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

# Not skipped when missing: `make setup` installs detectron2, and these tests check that.
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------
# detectron2 itself
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.config",
        "detectron2.data",
        "detectron2.data.transforms",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.checkpoint",
        "detectron2.modeling",
        "detectron2.solver",
        "detectron2.utils.visualizer",
        "detectron2.model_zoo",
        "detectron2.export",
    ],
)
def test_detectron2_imports(module):
    importlib.import_module(module)


def test_model_zoo_configs_are_installed():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    assert Path(path).is_file()


def test_coco_evaluator_has_an_implementation():
    # without detectron2._C the fast evaluator must fall back to pycocotools' COCOeval
    from detectron2.evaluation import coco_evaluation

    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        from pycocotools.cocoeval import COCOeval

        assert coco_evaluation.COCOeval_opt is COCOeval


def test_lr_scheduler_hook_saves_torch_scheduler_state():
    # detectron2 v0.6 checked `_LRScheduler`, which torch 2.x schedulers no longer subclass,
    # so their state was silently dropped from checkpoints.
    from detectron2.engine.hooks import LRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    state = LRScheduler(opt, sched).state_dict()
    assert state.get("last_epoch") == 1


def test_pillow_and_numpy_compat():
    import numpy as np
    from detectron2.data.transforms import ExtentTransform
    from detectron2.structures.masks import polygons_to_bitmask

    img = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = ExtentTransform(src_rect=(0, 0, 16, 16), output_size=(8, 8)).apply_image(img)
    assert out.shape[:2] == (8, 8)
    mask = polygons_to_bitmask([np.array([1, 1, 10, 1, 10, 10, 1, 10], dtype=float)], 12, 12)
    assert mask.dtype == bool and mask.any()


# ------------------------------------------------------------------------------------------
# A stock RetinaNet R18-FPN on CPU
# ------------------------------------------------------------------------------------------

NUM_CLASSES = 3
IMAGE_SIZE = 64


def retinanet_r18_cfg():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # required for R18/R34
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [
        [s, s * 2 ** (1.0 / 3), s * 2 ** (2.0 / 3)] for s in (32, 64, 128, 256, 512)
    ]
    cfg.MODEL.RETINANET.NUM_CLASSES = NUM_CLASSES
    cfg.INPUT.MIN_SIZE_TRAIN = (IMAGE_SIZE,)
    cfg.INPUT.MAX_SIZE_TRAIN = IMAGE_SIZE
    cfg.INPUT.MIN_SIZE_TEST = IMAGE_SIZE
    cfg.INPUT.MAX_SIZE_TEST = IMAGE_SIZE
    return cfg


def random_instances(n: int, size: int, generator: torch.Generator) -> Instances:
    xy = torch.rand(n, 2, generator=generator) * (size / 2)
    wh = 8 + torch.rand(n, 2, generator=generator) * (size / 2 - 8)
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
    inst.gt_classes = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return inst


def batch(with_instances: bool, generator: torch.Generator) -> list[dict]:
    """Two images with random boxes and one with EMPTY instances."""
    out = []
    for n in (3, 1, 0):
        img = torch.randint(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE), generator=generator)
        d = {"image": img.to(torch.uint8), "height": IMAGE_SIZE, "width": IMAGE_SIZE}
        if with_instances:
            d["instances"] = random_instances(n, IMAGE_SIZE, generator)
        out.append(d)
    return out


@pytest.fixture(scope="module")
def retinanet():
    torch.manual_seed(0)
    return build_model(retinanet_r18_cfg())


def test_build_retinanet_r18_fpn(retinanet):
    assert type(retinanet).__name__ == "RetinaNet"
    assert retinanet.device.type == "cpu"
    assert list(retinanet.backbone.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
    assert len(retinanet.backbone.bottom_up.res2) == 2  # R18: 2 basic blocks per stage


def test_retinanet_train_step(retinanet):
    g = torch.Generator().manual_seed(1)
    retinanet.train()
    opt = torch.optim.SGD([p for p in retinanet.parameters() if p.requires_grad], lr=1e-3)
    before = retinanet.head.cls_score.weight.detach().clone()

    with EventStorage(0):  # RetinaNet logs training statistics to the current storage
        loss_dict = retinanet(batch(with_instances=True, generator=g))
    assert set(loss_dict) == {"loss_cls", "loss_box_reg"}
    for name, value in loss_dict.items():
        assert math.isfinite(value.item()), f"{name} = {value.item()}"
    opt.zero_grad()
    sum(loss_dict.values()).backward()
    assert retinanet.head.cls_score.weight.grad is not None
    assert retinanet.backbone.fpn_output5.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, retinanet.head.cls_score.weight)


def test_retinanet_inference(retinanet):
    g = torch.Generator().manual_seed(2)
    retinanet.eval()
    with torch.no_grad():
        outputs = retinanet(batch(with_instances=False, generator=g))
    assert len(outputs) == 3
    for out in outputs:
        inst = out["instances"]
        assert inst.image_size == (IMAGE_SIZE, IMAGE_SIZE)
        assert inst.pred_boxes.tensor.shape[1] == 4
        assert len(inst.scores) == len(inst.pred_classes) == len(inst)
        if len(inst):
            assert int(inst.pred_classes.max()) < NUM_CLASSES
            assert torch.isfinite(inst.pred_boxes.tensor).all()


# ------------------------------------------------------------------------------------------
# tools/install_detectron2.py: the patch engine and the choice of what to install
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installer():
    spec = importlib.util.spec_from_file_location(
        "install_detectron2", REPO / "tools" / "install_detectron2.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["install_detectron2"] = mod  # dataclasses need the module registered
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["install_detectron2"]
    return mod


def test_patch_applies_once_and_is_idempotent(installer, tmp_path):
    f = tmp_path / "a.py"
    f.write_text("x = np.bool\ny = np.bool_\nz = np.int64(np.int)\n")
    patch = installer.Patch("a.py", installer.NP_ALIAS_RE, r"\1", "test", applied="x = bool")
    assert installer.apply_patch(tmp_path, patch) == "applied"
    assert f.read_text() == "x = bool\ny = np.bool_\nz = np.int64(int)\n"
    assert installer.apply_patch(tmp_path, patch) == "already applied"
    assert f.read_text() == "x = bool\ny = np.bool_\nz = np.int64(int)\n"


def test_patch_fails_loudly_naming_file_and_pattern(installer, tmp_path):
    (tmp_path / "b.py").write_text("nothing to see\n")
    patch = installer.Patch("b.py", r"^from detectron2 import _C\n", "x", "test", count=1)
    with pytest.raises(installer.PatchError, match=r"b\.py.*from detectron2 import _C"):
        installer.apply_patch(tmp_path, patch)
    missing = installer.Patch("nope.py", "a", "b", "test")
    with pytest.raises(installer.PatchError, match="nope.py"):
        installer.apply_patch(tmp_path, missing)


def test_patch_count_mismatch_fails(installer, tmp_path):
    (tmp_path / "c.py").write_text("a\na\na\n")
    with pytest.raises(installer.PatchError, match="matched 3 time"):
        installer.apply_patch(tmp_path, installer.Patch("c.py", "^a$", "b", "t", count=2))


def test_try_import_c_patch_is_idempotent(installer, tmp_path):
    (tmp_path / "d.py").write_text("import torch\nfrom detectron2 import _C\n\nx = 1\n")
    patch = next(p for p in installer.PATCHES if p.path.endswith("deform_conv.py"))
    patch = installer.Patch("d.py", patch.pattern, patch.repl, patch.why, patch.applied, 1)
    installer.apply_patch(tmp_path, patch)
    once = (tmp_path / "d.py").read_text()
    assert "except ImportError:\n    _C = None\n" in once
    assert installer.apply_patch(tmp_path, patch) == "already applied"
    assert (tmp_path / "d.py").read_text() == once


def test_verify_patched_tree_reports_leftovers(installer, tmp_path):
    pkg = tmp_path / "detectron2"
    pkg.mkdir()
    (pkg / "ok.py").write_text("x = np.float32(1)\ntry:\n    from detectron2 import _C\nexcept:\n")
    installer.verify_patched_tree(tmp_path)
    (pkg / "bad.py").write_text("import numpy as np\ny = np.float(1)\n")
    with pytest.raises(installer.PatchError, match=r"bad\.py:2"):
        installer.verify_patched_tree(tmp_path)


class FakeEnv:
    """Stands in for pip and the target interpreter in installer.main()."""

    def __init__(self, installer, monkeypatch, probes):
        self.calls = []
        self.probes = list(probes)
        monkeypatch.setattr(installer, "pip", lambda *a, quiet=True: self.calls.append(a))
        monkeypatch.setattr(installer, "require_torch", lambda: None)
        monkeypatch.setattr(installer, "probe_detectron2", self.probe)
        monkeypatch.setattr(
            installer,
            "install_patched",
            lambda sdist, quiet: self.calls.append(("install_patched", sdist)),
        )

    def probe(self, python=sys.executable):
        return self.probes.pop(0)


HEALTHY = {"importable": True, "file": "/x/detectron2", "version": "0.6", "errors": []}
HEALTHY_PB1 = dict(HEALTHY, dist="pb1-detectron2 0.6+signsym1", model_zoo_configs=True)


def test_spec_is_installed_with_pip_and_nothing_else(installer, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_SPEC", "git+https://example.invalid/detectron2.git")
    env = FakeEnv(installer, monkeypatch, [HEALTHY_PB1])
    assert installer.main([]) == 0
    assert env.calls == [
        ("install", "--no-build-isolation", "git+https://example.invalid/detectron2.git")
    ]
    assert "DETECTRON2_SPEC" in capsys.readouterr().out


def test_spec_that_does_not_import_fails(installer, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_SPEC", "/some/dir")
    broken = dict(HEALTHY, dist="x", errors=["detectron2.data: AttributeError('LINEAR')"])
    FakeEnv(installer, monkeypatch, [broken])
    assert installer.main([]) == 1
    assert "LINEAR" in capsys.readouterr().err


def test_existing_detectron2_is_used(installer, monkeypatch, capsys):
    monkeypatch.delenv("DETECTRON2_SPEC", raising=False)
    env = FakeEnv(installer, monkeypatch, [dict(HEALTHY, dist="detectron2 0.6")])
    assert installer.main([]) == 0
    assert env.calls == []
    out = capsys.readouterr().out
    assert "already installed" in out and "/x/detectron2" in out


def test_missing_detectron2_gets_the_patched_sdist(installer, monkeypatch):
    monkeypatch.delenv("DETECTRON2_SPEC", raising=False)
    env = FakeEnv(installer, monkeypatch, [{"importable": False, "error": "ImportError"}])
    assert installer.main([]) == 0
    assert env.calls == [("install_patched", None)]


def test_broken_pb1_is_replaced_but_broken_other_is_not(installer, monkeypatch, capsys):
    monkeypatch.delenv("DETECTRON2_SPEC", raising=False)
    broken = dict(HEALTHY, errors=["detectron2.data: AttributeError('LINEAR')"])
    env = FakeEnv(installer, monkeypatch, [dict(broken, dist="pb1-detectron2 0.6")])
    assert installer.main([]) == 0
    assert env.calls == [("uninstall", "-y", "pb1-detectron2"), ("install_patched", None)]

    env = FakeEnv(installer, monkeypatch, [dict(broken, dist="detectron2 0.6")])
    assert installer.main([]) == 1
    assert env.calls == []
    assert "broken" in capsys.readouterr().err


def test_download_failure_is_a_clear_error(installer, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SIGNSYM_DET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIGNSYM_DET_SIMPLE_INDEX", "http://127.0.0.1:9/simple")
    with pytest.raises(installer.InstallError, match="could not download"):
        installer.obtain_sdist(tmp_path)
    bad = tmp_path / installer.SDIST_FILENAME
    bad.write_bytes(b"not the sdist")
    with pytest.raises(installer.InstallError, match="sha256 mismatch"):
        installer.obtain_sdist(tmp_path, local=bad)
