"""``FeedbackCheckpointer``: detectron2's DetectionCheckpointer with checked, loud loading.

Loading: ``.pkl``/``.pyth`` files (detectron2 / Caffe2 model zoo, pycls) go through
detectron2 unchanged (unpickling: trusted files only); other files are read weights-only and
torchvision-layout ResNets converted in memory (:func:`.pretrained.read_checkpoint`); a
missing, truncated or foreign file fails with one line naming it. What the load did is
checked (:func:`.load_checks.check_load`, kept as ``last_report``) and logged or raised
(:func:`.load_report.log_load_report`).

Saving is fvcore's, plus ``"feedback": {"rule": <backbone rule>}`` (checked on resume), with
local files written atomically (:class:`.io.AtomicLocalWrites`): a kill at any moment leaves
``last_checkpoint`` naming a complete file.
"""

from __future__ import annotations

import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from torch import nn

from ..feedback import BACKPROP, FeedbackLayer
from .io import AtomicLocalWrites
from .load_checks import LoadReport, backbone_rule, check_load, find_backbone_prefix
from .load_report import log_load_report
from .pretrained import check_model_layout, read_checkpoint
from .torchvision_to_d2 import strip_module_prefix


def layer_rules(model: nn.Module) -> dict:
    """Module name -> learning rule of every conv/linear of ``model`` (plain ones: bp)."""
    return {
        name: module.rule if isinstance(module, FeedbackLayer) else BACKPROP
        for name, module in model.named_modules()
        if isinstance(module, (FeedbackLayer, nn.Conv2d, nn.Linear))
    }


class FeedbackCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that converts pretrained files and checks what they load.

    ``check_backbone=False`` turns the backbone ERROR into a WARNING (e.g. a file that
    deliberately holds only part of a backbone).
    """

    def __init__(self, model, save_dir="", *, check_backbone=True, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = AtomicLocalWrites(self.path_manager)
        self.check_backbone = check_backbone
        self.last_report: LoadReport | None = None
        self._path = ""

    def save(self, name, **kwargs):
        """fvcore's save, recording the backbone's rule under ``"feedback"``."""
        prefix = find_backbone_prefix(self.model.state_dict())
        kwargs.setdefault("feedback", {"rule": backbone_rule(layer_rules(self.model), prefix)})
        super().save(name, **kwargs)

    def load(self, path, checkpointables=None):
        """fvcore's load; a missing local file fails naming it (and ``last_checkpoint`` if
        that named it)."""
        self._path = path
        if path and "://" not in path and not os.path.isfile(path):
            named = os.path.join(self.save_dir, "last_checkpoint") if self.save_dir else ""
            via = f" (named by {named})" if named and path == self.get_checkpoint_file() else ""
            raise FileNotFoundError(f"checkpoint file {path!r}{via} does not exist")
        return super().load(path, checkpointables)

    def _load_file(self, filename):
        if filename.endswith((".pkl", ".pyth")):
            return super()._load_file(filename)
        return read_checkpoint(filename)

    def _load_model(self, checkpoint):
        check_model_layout(checkpoint, self._path)
        state = strip_module_prefix(checkpoint["model"])
        self._convert_ndarray_to_tensor(state)
        if checkpoint.get("matching_heuristics", False):
            # detectron2's own name heuristics, run here so that the final names are known
            c2 = checkpoint.get("__author__") == "Caffe2"
            state = align_and_update_state_dicts(self.model.state_dict(), state, c2_conversion=c2)
            checkpoint["matching_heuristics"] = False
        checkpoint["model"] = state
        offered = dict(state)  # super() pops and filters the dict it gets
        incompatible = super()._load_model(checkpoint)
        report = check_load(
            self.model.state_dict(),
            offered,
            missing=incompatible.missing_keys,
            unexpected=incompatible.unexpected_keys,
            wrong_shape=[key for key, _, _ in incompatible.incorrect_shapes],
            layer_rules=layer_rules(self.model),
            recorded_rule=(checkpoint.get("feedback") or {}).get("rule"),
            path=self._path,
        )
        self.last_report = report
        log_load_report(report, strict=self.check_backbone)
        for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
            keys[:] = [k for k in keys if k not in report.explained_keys]
        return incompatible
