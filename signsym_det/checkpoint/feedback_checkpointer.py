"""``FeedbackCheckpointer``: detectron2's DetectionCheckpointer with checked, loud loading.

Reading: ``.pkl``/``.pyth`` files (detectron2 / Caffe2 model zoo, pycls) go through
detectron2 unchanged. Other files are read as detectron2 does, then torchvision-layout
classification checkpoints (ours, Xiao et al.'s, plain torchvision weights, ``module.``
prefixes included) are converted in memory (:func:`.pretrained.to_detectron2`).

After loading (``self.last_report``), per the model's ResNet (found by its ``stem.conv1``):

* fixed feedback tensors (``feedback_weight``) the file has for the model's layers are
  restored and compared bit for bit; layers whose weights came from the file but whose
  feedback tensors did not keep their freshly drawn ones: WARNING;
* a rule recorded in the file (``"feedback": {"rule"}``) that differs from the model's
  backbone rule: WARNING naming both;
* any backbone weight not loaded, or a file tensor of one of the model's stages left
  unused (wrong depth or layout): ERROR, raised as :class:`CheckpointMismatchError`.
  BatchNorm running statistics missing (Caffe2 files) or unused (a GN model): WARNING.

Saving adds ``"feedback": {"rule": <backbone rule>}`` so that resuming checks it too, and
is atomic on local disks: the file, then ``last_checkpoint``, are written to temporary files
and renamed into place, so a kill at any moment leaves ``last_checkpoint`` naming a complete
file. Reading is weights-only (except detectron2's ``.pkl`` path, which unpickles: trusted
files only); a missing, truncated or foreign file fails with one line naming it.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from torch import nn

from ..feedback import FeedbackLayer
from .io import atomic_save, atomic_write_text, load_weights_only
from .pretrained import canonical_rule, to_detectron2
from .torchvision_to_d2 import (
    describe_resnet,
    format_resnet,
    is_torchvision_resnet,
    stage_of,
    strip_module_prefix,
)

logger = logging.getLogger(__name__)

STEM_KEY = "stem.conv1.weight"
PLAIN_RULE = "bp"  # a plain Conv2d/Linear trains by backprop
_NOT_WEIGHTS = ("num_batches_tracked", "feedback_weight", "feedback_step")
_STATS = ("running_mean", "running_var")
#: Float training state kept as plain model attributes (not in state_dict), saved and
#: restored on resume: RetinaNet's moving average of the number of foreground anchors (it
#: scales the losses; created at the first forward, so a resumed run would restart it).
MODEL_ATTRIBUTES = ("loss_normalizer",)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's backbone does not fit the model's (depth, block type or layout)."""


@dataclass
class LoadReport:
    """What one load did to the model's backbone and feedback tensors."""

    path: str
    recorded_rule: str | None = None
    model_rule: str = PLAIN_RULE
    backbone_prefix: str | None = None
    backbone_loaded: list = field(default_factory=list)
    backbone_missing: list = field(default_factory=list)
    stats_missing: list = field(default_factory=list)
    unused_stage_keys: list = field(default_factory=list)
    feedback_restored: list = field(default_factory=list)
    feedback_fresh: list = field(default_factory=list)  # weights loaded, B drawn fresh
    feedback_untouched: list = field(default_factory=list)  # neither W nor B in the file
    feedback_unused: list = field(default_factory=list)  # file B the model has no use for


def find_backbone_prefix(keys) -> str | None:
    """The name prefix of the model's ResNet body (e.g. ``backbone.bottom_up.``), or None."""
    prefixes = sorted(k[: -len(STEM_KEY)] for k in keys if k.endswith(STEM_KEY))
    return prefixes[0] if prefixes else None


def backbone_rule(model: nn.Module, prefix: str | None) -> str:
    """The most common rule of the convs/linears under ``prefix`` (plain layers: bp)."""
    prefix = (prefix or "").rstrip(".")
    rules = Counter()
    for name, module in model.named_modules():
        if prefix and not (name == prefix or name.startswith(prefix + ".")):
            continue
        if isinstance(module, FeedbackLayer):
            rules[module.rule] += 1
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            rules[PLAIN_RULE] += 1
    return rules.most_common(1)[0][0] if rules else PLAIN_RULE


def _known_rule(name) -> str:
    """Our canonical name of a recorded rule; unknown names (unregistered rules) as they are."""
    try:
        return canonical_rule(name)
    except ValueError:
        return str(name)


def _examples(keys, limit: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _check_layout(checkpoint, path) -> None:
    """ValueError naming ``path`` unless ``checkpoint["model"]`` maps names to arrays."""
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    bad = None
    if not isinstance(model, dict):
        bad = f"'model' is a {type(model).__name__}, not a dict"
    else:
        bad = next(
            (
                f"{key!r} is a {type(value).__name__}"
                for key, value in model.items()
                if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray))
            ),
            None,
        )
    if bad is not None:
        keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else []
        raise ValueError(
            f"{path}: unknown checkpoint layout: {bad} (top-level keys {keys}); expected a "
            "state dict of tensors, or one under 'model' (detectron2) or 'state_dict'"
        )


class FeedbackCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that converts pretrained files and checks what they load.

    ``check_backbone=False`` turns the backbone ERROR into a WARNING (e.g. a file that
    deliberately holds only part of a backbone).
    """

    def __init__(self, model, save_dir="", *, check_backbone=True, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.check_backbone = check_backbone
        self.last_report: LoadReport | None = None
        self._path = ""

    @classmethod
    def replacing(cls, checkpointer, **kwargs):
        """A FeedbackCheckpointer with ``checkpointer``'s model, directory and objects.

        detectron2 v0.6's DefaultTrainer state holds no optimizer state (later versions add
        it under ``_trainer``): then the trainer's optimizer is checkpointed as
        ``"optimizer"``, so that a resumed run keeps its SGD momentum.
        """
        checkpointables = dict(checkpointer.checkpointables)
        trainer = checkpointables.get("trainer")
        if (
            trainer is not None
            and "optimizer" not in checkpointables
            and getattr(trainer, "optimizer", None) is not None
            and not {"optimizer", "_trainer"} & set(trainer.state_dict())
        ):
            checkpointables["optimizer"] = trainer.optimizer
        return cls(
            checkpointer.model,
            checkpointer.save_dir,
            save_to_disk=checkpointer.save_to_disk,
            **kwargs,
            **checkpointables,
        )

    def save(self, name, **kwargs):
        prefix = find_backbone_prefix(self.model.state_dict().keys())
        kwargs.setdefault("feedback", {"rule": backbone_rule(self.model, prefix)})
        if "://" in str(self.save_dir):  # an iopath URL: fvcore's (non-atomic) writing
            return super().save(name, **kwargs)
        if not self.save_dir or not self.save_to_disk:
            return None
        attributes = {a: getattr(self.model, a) for a in MODEL_ATTRIBUTES if hasattr(self.model, a)}
        kwargs.setdefault("model_attributes", {k: float(v) for k, v in attributes.items()})
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        for stale in glob.glob(os.path.join(glob.escape(self.save_dir), f".{basename}.*")):
            os.remove(stale)  # the temporary file of a write that was killed
        self.logger.info("Saving checkpoint to %s", path)
        atomic_save(data, path)
        self.tag_last_checkpoint(basename)
        return None

    def tag_last_checkpoint(self, last_filename_basename):
        """Point ``last_checkpoint`` at a (complete) file, atomically."""
        if "://" in str(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write_text(last_filename_basename, os.path.join(self.save_dir, "last_checkpoint"))
        return None

    def load(self, path, *args, **kwargs):
        self._path = path
        if path and "://" not in path and not os.path.isfile(path):
            named = os.path.join(self.save_dir, "last_checkpoint") if self.save_dir else ""
            via = f" (named by {named})" if named and path == self.get_checkpoint_file() else ""
            raise FileNotFoundError(f"checkpoint file {path!r}{via} does not exist")
        extra = super().load(path, *args, **kwargs)
        attributes = extra.pop("model_attributes", None) or {}
        if kwargs.get("checkpointables", args[0] if args else None) is None:  # a full resume
            for name, value in attributes.items():
                if name in MODEL_ATTRIBUTES:  # set lazily by the model: may not exist yet
                    setattr(self.model, name, value)
        return extra

    def _load_file(self, filename):
        if filename.endswith((".pkl", ".pyth")):
            return super()._load_file(filename)
        loaded = load_weights_only(filename)  # as detectron2 does, but never unpickling code
        if not isinstance(loaded, dict):
            raise ValueError(
                f"{filename}: unknown checkpoint layout: a {type(loaded).__name__}, not a dict "
                "(expected a state dict or {'model': state dict, ...})"
            )
        if loaded.get("layout") == "detectron2":
            return loaded
        inner = loaded.get("model", loaded.get("state_dict", loaded))
        if isinstance(inner, dict) and is_torchvision_resnet(inner.keys()):
            logger.info("%s is a torchvision-layout ResNet: converting it in memory", filename)
            return to_detectron2(loaded, source=filename)
        return loaded if "model" in loaded else {"model": loaded}

    def _load_model(self, checkpoint):
        _check_layout(checkpoint, self._path)
        state = strip_module_prefix(checkpoint["model"])
        self._convert_ndarray_to_tensor(state)
        model_state = self.model.state_dict()
        if checkpoint.get("matching_heuristics", False):
            # detectron2's own name heuristics, run here so that the final names are known
            c2 = checkpoint.get("__author__") == "Caffe2"
            state = align_and_update_state_dicts(model_state, state, c2_conversion=c2)
            checkpoint["matching_heuristics"] = False
        checkpoint["model"] = state
        offered = dict(state)  # super() pops and filters the dict it gets
        incompatible = super()._load_model(checkpoint)
        report = self._check(checkpoint, offered, model_state, incompatible)
        self.last_report = report
        hide = {f"{name}.feedback_weight" for name in report.feedback_fresh}
        hide |= {f"{name}.feedback_weight" for name in report.feedback_untouched}
        hide |= {k for k in incompatible.missing_keys if k.endswith(".feedback_step")}
        hide |= {f"{name}.feedback_weight" for name in report.feedback_unused}
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in hide]
        incompatible.unexpected_keys[:] = [k for k in incompatible.unexpected_keys if k not in hide]
        return incompatible

    # ---------------------------------------------------------------- checks

    def _check(self, checkpoint, offered, model_state, incompatible) -> LoadReport:
        path = self._path
        wrong_shape = {k for k, _, _ in incompatible.incorrect_shapes}
        not_loaded = set(incompatible.missing_keys) | wrong_shape
        loaded = {k for k in model_state if k in offered and k not in not_loaded}
        prefix = find_backbone_prefix(model_state)
        recorded = (checkpoint.get("feedback") or {}).get("rule")
        report = LoadReport(
            path=path,
            recorded_rule=None if recorded is None else _known_rule(recorded),
            model_rule=backbone_rule(self.model, prefix),
            backbone_prefix=prefix,
        )
        self._check_rule(report)
        self._check_feedback(report, offered, model_state, loaded)
        if prefix is not None:
            unused = list(incompatible.unexpected_keys) + sorted(wrong_shape)
            self._check_backbone(report, offered, model_state, loaded, unused)
        self._log_summary(report)
        return report

    def _check_rule(self, report: LoadReport) -> None:
        if report.recorded_rule is not None and report.recorded_rule != report.model_rule:
            logger.warning(
                "LEARNING RULE MISMATCH: %s was trained with rule '%s' (recorded in the file), "
                "but the model's backbone uses rule '%s' (cfg.MODEL.FEEDBACK)",
                report.path,
                report.recorded_rule,
                report.model_rule,
            )

    def _check_feedback(self, report, offered, model_state, loaded) -> None:
        current = self.model.state_dict()
        for key in sorted(k for k in model_state if k.endswith(".feedback_weight")):
            layer = key[: -len(".feedback_weight")]
            if key in loaded:
                source = offered[key].to(device=current[key].device, dtype=current[key].dtype)
                if not torch.equal(current[key], source):
                    raise RuntimeError(f"feedback tensor {key} differs from {report.path}'s")
                report.feedback_restored.append(layer)
            elif f"{layer}.weight" in loaded:
                report.feedback_fresh.append(layer)
            else:
                report.feedback_untouched.append(layer)
        report.feedback_unused = sorted(
            k[: -len(".feedback_weight")]
            for k in offered
            if k.endswith(".feedback_weight") and k not in loaded
        )
        if report.feedback_fresh:
            rules = sorted({getattr(self._module(n), "rule", "?") for n in report.feedback_fresh})
            logger.warning(
                "FEEDBACK TENSORS NOT IN CHECKPOINT: %d layers (rule %s) take their weights from "
                "%s but it has no feedback tensors for them: FRESH ones were drawn (seeded by "
                "cfg.MODEL.FEEDBACK.SEED). A net trained with fa/frsf/kolen_pollack works only "
                "with its own feedback tensors; these layers start with new ones. Layers: %s",
                len(report.feedback_fresh),
                "/".join(rules),
                report.path,
                _examples(report.feedback_fresh),
            )
        if report.feedback_unused:
            logger.warning(
                "%d feedback tensors in %s are NOT used: the model's layers (rule '%s') have "
                "no fixed feedback tensors of that shape. Layers: %s",
                len(report.feedback_unused),
                report.path,
                report.model_rule,
                _examples(report.feedback_unused),
            )

    def _module(self, name: str):
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            return None

    def _check_backbone(self, report, offered, model_state, loaded, unused) -> None:
        prefix = report.backbone_prefix
        body = [k for k in model_state if k.startswith(prefix)]
        weights = [k for k in body if not k.endswith(_NOT_WEIGHTS + _STATS)]
        report.backbone_loaded = [k for k in weights if k in loaded]
        report.backbone_missing = [k for k in weights if k not in loaded]
        report.stats_missing = [k for k in body if k.endswith(_STATS) and k not in loaded]
        stages = {stage_of(k[len(prefix) :]) for k in body} - {None}
        in_stages = [k for k in unused if stage_of(k) in stages and not k.endswith(_NOT_WEIGHTS)]
        report.unused_stage_keys = [k for k in in_stages if not k.endswith(_STATS)]
        unused_stats = [k for k in in_stages if k.endswith(_STATS)]
        if report.backbone_missing or report.unused_stage_keys:
            found = describe_resnet([k for k in offered if not k.endswith(_NOT_WEIGHTS)])
            expected = describe_resnet(k[len(prefix) :] for k in body)
            message = (
                f"BACKBONE MISMATCH: {report.path} does not fit the model's backbone "
                f"({prefix}*): {len(report.backbone_loaded)}/{len(weights)} backbone weights "
                f"loaded, {len(report.unused_stage_keys)} checkpoint tensors of its stages "
                f"unused. Checkpoint has {format_resnet(found)}; the model expects "
                f"{format_resnet(expected)}. Not loaded: {_examples(report.backbone_missing)}. "
                f"Unused: {_examples(report.unused_stage_keys)}. Check MODEL.RESNETS.DEPTH / "
                "RES2_OUT_CHANNELS / STRIDE_IN_1X1, and convert torchvision-layout files with "
                "tools/convert_pretrained.py."
            )
            logger.error(message)
            if self.check_backbone:
                raise CheckpointMismatchError(message)
        if unused_stats:
            logger.warning(
                "%d BatchNorm running statistics in %s are unused: the model's norm layers "
                "have none (GN?): %s",
                len(unused_stats),
                report.path,
                _examples(unused_stats),
            )
        if report.stats_missing and report.backbone_loaded:
            logger.warning(
                "%s has no BatchNorm running statistics for %d backbone tensors; they keep "
                "their initial values: %s",
                report.path,
                len(report.stats_missing),
                _examples(report.stats_missing),
            )

    def _log_summary(self, report: LoadReport) -> None:
        parts = [f"rule recorded {report.recorded_rule or 'unknown'}, model {report.model_rule}"]
        if report.backbone_prefix is not None:
            total = len(report.backbone_loaded) + len(report.backbone_missing)
            parts.append(f"backbone {len(report.backbone_loaded)}/{total} weights")
        if report.feedback_restored or report.feedback_fresh:
            parts.append(
                f"feedback tensors {len(report.feedback_restored)} restored exactly, "
                f"{len(report.feedback_fresh)} drawn fresh"
            )
        logger.info("Loaded %s: %s", report.path, "; ".join(parts))
