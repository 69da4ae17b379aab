"""From a YAML file and command-line opts to a validated, frozen detectron2 config."""

import difflib
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from detectron2.config import get_cfg

from ..config import add_feedback_config, validate_feedback_config
from ..data.register import register_embedded_datasets
from ..data.validate import validate_datasets


def setup_cfg(config_file, opts=()):
    """get_cfg() + MODEL.FEEDBACK + the YAML + opts, validated; embedded datasets registered.

    Everything that can be wrong in the config fails here, before a model is built.
    """
    cfg = get_cfg()
    add_feedback_config(cfg)
    with _naming_unknown_keys(cfg, config_file):
        cfg.merge_from_file(config_file)
    with _naming_unknown_keys(cfg, "the command-line options"):
        cfg.merge_from_list(list(opts))
    validate_feedback_config(cfg)
    device = cfg.MODEL.DEVICE
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"cfg.MODEL.DEVICE = {device!r} but torch sees no CUDA device; "
            "run on the CPU with the option `MODEL.DEVICE cpu`"
        )
    register_embedded_datasets(cfg)
    validate_datasets(cfg)  # json, boxes and image files, before any model is built
    cfg.freeze()
    return cfg


@contextmanager
def _naming_unknown_keys(cfg, source):
    """yacs says "Non-existent key" by assert/KeyError; say where, and what was meant."""
    try:
        yield
    except (AssertionError, KeyError) as error:
        text = str(error).strip("'\"")
        match = re.search(r"Non-existent (?:config )?key: (\S+)", text)
        if match is None:
            raise
        key = match.group(1)
        close = difflib.get_close_matches(key, _all_keys(cfg), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"unknown config key {key} in {source}{hint}") from None


def _all_keys(node, prefix=""):
    for name, value in node.items():
        if isinstance(value, dict):
            yield from _all_keys(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def check_output_dir(cfg, resume=False, overwrite=False):
    """Refuse to train into an OUTPUT_DIR that already holds checkpoints, unless resuming it
    or explicitly overwriting it: nothing a previous run wrote is replaced by accident."""
    check_run_dir(cfg.OUTPUT_DIR, "cfg.OUTPUT_DIR", resume=resume, overwrite=overwrite)


def check_run_dir(output_dir, key, resume=False, overwrite=False):
    """:func:`check_output_dir` for the directory ``output_dir``, named ``key`` in errors."""
    out = Path(output_dir)
    found = sorted(p.name for p in (*out.glob("*.pth"), *out.glob("last_checkpoint")))
    if found and not (resume or overwrite):
        raise FileExistsError(
            f"{key} = {str(out)!r} already holds a run ({', '.join(found[:3])}"
            f"{', ...' if len(found) > 3 else ''}); pass --resume to continue it, "
            f"--overwrite to replace it, or set another {key}"
        )
