"""Bad configs fail in setup_cfg, before a model is built; runs are never overwritten."""

from pathlib import Path

import pytest

from signsym_det.engine import check_output_dir, setup_cfg

ROOT = Path(__file__).parents[2]
DEMO = str(ROOT / "configs/Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml")


@pytest.mark.parametrize(
    "opts, message",
    [
        (["MODEL.FEEDBACK.RULE", "signsym"], r"MODEL.FEEDBACK.RULE = 'signsym'.*sign_symmetry"),
        (["MODEL.FEEDBACK.HEAD.RULE", "xx"], r"MODEL.FEEDBACK.HEAD.RULE = 'xx'.*kolen_pollack"),
        (["MODEL.FEEDBACK.SCALE", "huge"], r"MODEL.FEEDBACK.SCALE = 'huge'.*weight_mean"),
        (["MODEL.FEEDBACK.FPN.SCALE", "'-1'"], r"MODEL.FEEDBACK.FPN.SCALE = '-1'.*positive"),
        (["MODEL.FEEDBACK.OVERRIDES", "[['head.*']]"], r"OVERRIDES\[0\].*\[pattern, rule\]"),
        (["MODEL.FEEDBACK.ALIGNMENT_PERIOD", "-5"], r"ALIGNMENT_PERIOD = -5"),
        (["MODEL.RETINANET.NUM_CLASSES", "80"], r"NUM_CLASSES = 80.*6 classes"),
        (["MODEL.DEVICE", "cuda"], r"MODEL.DEVICE = 'cuda'.*MODEL.DEVICE cpu"),
    ],
)
def test_bad_values_are_named(opts, message, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    if opts[0] == "MODEL.DEVICE":
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        setup_cfg(DEMO, opts)
    assert not (tmp_path / "shapes").exists() or opts[0] == "MODEL.DEVICE"


def test_unknown_key_is_refused():
    with pytest.raises(
        KeyError, match=r"MODEL.FEEDBACK.RULES in the command-line.*'MODEL.FEEDBACK.RULE'"
    ):
        setup_cfg(DEMO, ["MODEL.FEEDBACK.RULES", "fa"])


def test_usf_alias_is_accepted(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = setup_cfg(
        DEMO, ["MODEL.FEEDBACK.RULE", "usf", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    )
    assert cfg.MODEL.FEEDBACK.RULE == "usf"


def test_existing_run_is_not_overwritten(tmp_path):
    cfg = setup_cfg(
        DEMO, ["OUTPUT_DIR", str(tmp_path), "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    )
    check_output_dir(cfg)  # empty: fine
    (tmp_path / "model_0000999.pth").write_bytes(b"")
    (tmp_path / "last_checkpoint").write_text("model_0000999.pth")
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        check_output_dir(cfg)
    check_output_dir(cfg, resume=True)
    check_output_dir(cfg, overwrite=True)
