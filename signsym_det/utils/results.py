"""COCOEvaluator results as a markdown table."""

BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def ap_table(results, title="COCO box AP"):
    """Markdown for ``{dataset: {"bbox": {metric: value}}}`` as returned by trainer.test()."""
    lines = [f"### {title}", ""]
    for dataset, tasks in results.items():
        bbox = tasks["bbox"]
        per_class = sorted(k for k in bbox if k.startswith("AP-"))
        header = ["dataset", *BOX_METRICS, *per_class]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        values = [f"{bbox[k]:.1f}" for k in (*BOX_METRICS, *per_class)]
        lines.append("| " + " | ".join([dataset, *values]) + " |")
        lines.append("")
    return "\n".join(lines)
