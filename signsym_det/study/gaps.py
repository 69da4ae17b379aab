"""Relative gaps of a study: AP_rule / AP_bp at the same schedule, next to the same ratio
from scratch (a reference study's results.json) and to the ImageNet ResNet-18 top-1 ratios
of independent reproductions (BioTorch, Sanfiz & Akrout 2021), the yardstick of "close"."""

import json
import statistics
from pathlib import Path

#: BioTorch's ImageNet ResNet-18 top-1 ERROR (%) per rule (usf = sign-symmetry).
BIOTORCH_TOP1_ERROR = {
    "bp": 30.39,
    "sign_symmetry": 34.97,
    "frsf": 36.50,
    "brsf": 37.21,
    "fa": 85.25,
}
BASELINE_RULE = "bp"


def imagenet_ratio(rule):
    """top-1 accuracy of ``rule`` / backprop's in BioTorch's ImageNet ResNet-18 (None if it
    has no number for the rule)."""
    if rule not in BIOTORCH_TOP1_ERROR:
        return None
    return (100 - BIOTORCH_TOP1_ERROR[rule]) / (100 - BIOTORCH_TOP1_ERROR[BASELINE_RULE])


def _final_iteration(seeds):
    curves = [s["ap_curve"] for s in seeds if s.get("ap_curve")]
    return max(c[-1][0] for c in curves) if curves else None


def _mean_ap(seeds):
    values = [s["final"]["AP"] for s in seeds if s.get("final")]
    return statistics.mean(values) if values else None


def _baseline(results, iteration):
    """Mean AP of the backprop variant that ran to ``iteration`` (None if none did); a run
    without a recorded rule (older studies) is of the rule its variant is named after."""
    for variant, seeds in results.items():
        rules = {s.get("rule") or variant for s in seeds}
        if rules == {BASELINE_RULE} and _final_iteration(seeds) == iteration:
            return _mean_ap(seeds)
    return None


def load_reference(path):
    """A reference study's results.json (e.g. results/shapes_rule_study: from scratch)."""
    return json.loads(Path(path).read_text()) if path else {}


def _ratio(value, base):
    return None if value is None or not base else value / base


def _fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def gap_rows(results, reference=None):
    """[{"variant", "rule", "iteration", "ap", "ap_bp", "ratio", "scratch_ap",
    "scratch_ratio", "imagenet_ratio"}] for every variant with a finished run; the
    from-scratch numbers are the reference's runs of the same variant name and schedule."""
    reference = reference or {}
    rows = []
    for variant, seeds in results.items():
        iteration, ap = _final_iteration(seeds), _mean_ap(seeds)
        if ap is None:
            continue
        rule = seeds[0].get("rule")
        base = _baseline(results, iteration)
        ref = reference.get(variant, [])
        ref_ap = _mean_ap(ref) if _final_iteration(ref) == iteration else None
        ref_base = _baseline(reference, iteration)
        rows.append(
            {
                "variant": variant,
                "rule": rule,
                "iteration": iteration,
                "ap": ap,
                "ap_bp": base,
                "ratio": _ratio(ap, base),
                "scratch_ap": ref_ap,
                "scratch_ratio": _ratio(ref_ap, ref_base),
                "imagenet_ratio": imagenet_ratio(rule),
            }
        )
    return rows


def gap_table(rows):
    """Markdown table of :func:`gap_rows`."""
    head = [
        "variant",
        "rule",
        "iterations",
        "AP",
        "AP / AP_bp",
        "from scratch: AP",
        "from scratch: AP / AP_bp",
        "ImageNet R18 top-1 / bp's (BioTorch)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], str(r["rule"]), str(r["iteration"]), _fmt(r["ap"], 1)]
        cells += [_fmt(r["ratio"]), _fmt(r["scratch_ap"], 1), _fmt(r["scratch_ratio"])]
        cells.append(_fmt(r["imagenet_ratio"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
