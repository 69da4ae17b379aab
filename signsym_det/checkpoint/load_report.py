"""Saying what a :class:`.load_checks.LoadReport` found: WARNINGs, an ERROR, one INFO line.

* recorded rule != model's backbone rule: WARNING naming both;
* feedback tensors drawn fresh for layers whose weights loaded, or file feedback tensors
  unused: WARNING;
* backbone mismatch: ERROR, raised as :class:`CheckpointMismatchError` (a WARNING if
  ``strict=False``);
* BatchNorm running statistics unused (a GN model) or missing (Caffe2 files): WARNING.
"""

from __future__ import annotations

import logging

from .load_checks import LoadReport

logger = logging.getLogger(__name__)


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's backbone does not fit the model's (depth, block type or layout)."""


def examples(keys, limit: int = 4) -> str:
    """The first ``limit`` keys, and how many there are in all if more."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def log_load_report(report: LoadReport, *, strict: bool = True) -> None:
    """Log ``report``'s findings; raise :class:`CheckpointMismatchError` on a backbone
    mismatch if ``strict``."""
    if report.recorded_rule is not None and report.recorded_rule != report.model_rule:
        logger.warning(
            "LEARNING RULE MISMATCH: %s was trained with rule '%s' (recorded in the file), "
            "but the model's backbone uses rule '%s' (cfg.MODEL.FEEDBACK)",
            report.path,
            report.recorded_rule,
            report.model_rule,
        )
    _log_feedback(report)
    if report.backbone_mismatch:
        message = _mismatch_message(report)
        if strict:
            logger.error(message)
            raise CheckpointMismatchError(message)
        logger.warning(message)  # asked for (check_backbone=False): a partial file, e.g. a stem
    _log_stats(report)
    _log_summary(report)


def _log_feedback(report: LoadReport) -> None:
    if report.feedback_fresh:
        logger.warning(
            "FEEDBACK TENSORS NOT IN CHECKPOINT: %d layers (rule %s) take their weights from "
            "%s but it has no feedback tensors for them: FRESH ones were drawn (seeded by "
            "cfg.MODEL.FEEDBACK.SEED). A net trained with fa/frsf/kolen_pollack works only "
            "with its own feedback tensors; these layers start with new ones. Layers: %s",
            len(report.feedback_fresh),
            "/".join(report.feedback_fresh_rules),
            report.path,
            examples(report.feedback_fresh),
        )
    if report.feedback_unused:
        logger.warning(
            "%d feedback tensors in %s are NOT used: the model's layers (rule '%s') have "
            "no fixed feedback tensors of that shape. Layers: %s",
            len(report.feedback_unused),
            report.path,
            report.model_rule,
            examples(report.feedback_unused),
        )


def _mismatch_message(report: LoadReport) -> str:
    total = len(report.backbone_loaded) + len(report.backbone_missing)
    return (
        f"BACKBONE MISMATCH: {report.path} does not fit the model's backbone "
        f"({report.backbone_prefix}*): {len(report.backbone_loaded)}/{total} backbone weights "
        f"loaded, {len(report.unused_stage_keys)} checkpoint tensors of its stages "
        f"unused. Checkpoint has {report.found_resnet}; the model expects "
        f"{report.expected_resnet}. Not loaded: {examples(report.backbone_missing)}. "
        f"Unused: {examples(report.unused_stage_keys)}. Check MODEL.RESNETS.DEPTH / "
        "RES2_OUT_CHANNELS / STRIDE_IN_1X1, and convert torchvision-layout files with "
        "tools/convert_pretrained.py."
    )


def _log_stats(report: LoadReport) -> None:
    if report.stats_unused:
        logger.warning(
            "%d BatchNorm running statistics in %s are unused: the model's norm layers "
            "have none (GN?): %s",
            len(report.stats_unused),
            report.path,
            examples(report.stats_unused),
        )
    if report.stats_missing and report.backbone_loaded:
        logger.warning(
            "%s has no BatchNorm running statistics for %d backbone tensors; they keep "
            "their initial values: %s",
            report.path,
            len(report.stats_missing),
            examples(report.stats_missing),
        )


def _log_summary(report: LoadReport) -> None:
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
