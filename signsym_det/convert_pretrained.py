"""Convert a pretrained torchvision-layout ResNet checkpoint to a detectron2 backbone file.

    python -m signsym_det.convert_pretrained IN OUT [--rule RULE]   (= tools/convert_pretrained.py)

IN: a checkpoint of tools/pretrain_net.py, of Xiao et al.'s sign-symmetry script, or a
plain torchvision state dict (``module.`` prefixes allowed). OUT: a weights-only file that
``cfg.MODEL.WEIGHTS`` loads. ``--rule`` records the learning rule when IN has no record
(e.g. ``bp`` for torchvision's ImageNet weights, ``fa`` for Xiao et al.'s FA files).
Same logic from Python: ``signsym_det.checkpoint.convert_pretrained(IN, OUT, rule=...)``.
"""

import argparse
import logging
import sys
from collections import Counter

from .checkpoint import convert_pretrained, describe_resnet
from .checkpoint.torchvision_to_d2 import format_resnet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", metavar="IN")
    parser.add_argument("output", metavar="OUT")
    parser.add_argument("--rule", help="learning rule to record if IN records none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        checkpoint = convert_pretrained(args.input, args.output, rule=args.rule)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = checkpoint["model"]
    feedback = checkpoint.get("feedback") or {}
    fixed = sum(key.endswith(".feedback_weight") for key in model)
    print(
        f"{args.output}: {format_resnet(describe_resnet(model))}, {len(model)} tensors "
        f"({fixed} feedback tensors), rule {feedback.get('rule', 'not recorded')}, "
        f"from {checkpoint['source']['format']}"
    )
    classifier = [key for key in checkpoint["dropped"] if key.startswith("fc.")]
    others = Counter(k.rsplit(".", 1)[-1] for k in checkpoint["dropped"] if k not in classifier)
    if checkpoint["dropped"]:
        kinds = [f"{count} {kind}" for kind, count in sorted(others.items())]
        print("dropped: " + ", ".join([*classifier, *kinds]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
