"""From a YAML file and command-line opts to a validated, frozen detectron2 config."""

import torch
from detectron2.config import get_cfg

from ..config import add_feedback_config, validate_feedback_config
from ..data.register import register_embedded_datasets


def setup_cfg(config_file, opts=()):
    """get_cfg() + MODEL.FEEDBACK + the YAML + opts, validated; embedded datasets registered.

    Everything that can be wrong in the config fails here, before a model is built.
    """
    cfg = get_cfg()
    add_feedback_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    validate_feedback_config(cfg)
    device = cfg.MODEL.DEVICE
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"cfg.MODEL.DEVICE = {device!r} but torch sees no CUDA device; "
            "run on the CPU with the option `MODEL.DEVICE cpu`"
        )
    register_embedded_datasets(cfg)
    cfg.freeze()
    return cfg
