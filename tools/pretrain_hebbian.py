#!/usr/bin/env python
"""Learn, WITHOUT labels, a classifier's wide hidden layer or a detectron2 ResNet's 7x7 stem by
Krotov & Hopfield's rule (competing hidden units), on detectron2's engine.

    python tools/pretrain_hebbian.py --target hidden --data datasets/shapes_cls \
        --make-dataset classification --output-dir output/hebbian/hidden
    python tools/pretrain_hebbian.py --target stem --data datasets/shapes \
        --make-dataset detection --output-dir output/hebbian/stem [--resume]

Progress (eta, eps, mean |dW|, mean row p-norm, fraction of units that won) to stdout,
OUTPUT_DIR/log.txt, metrics.jsonl and TensorBoard; OUTPUT_DIR/checkpoint.pth (latest) and
model_final.pth (weights-only), filters.png, and for the stem stem_detectron2.pth, which
MODEL.WEIGHTS loads. Same as ``python -m signsym_det.pretrain_hebbian``.
"""

import sys

from signsym_det.pretrain_hebbian import main

if __name__ == "__main__":
    main(sys.argv[1:])  # returns the written paths (a dict), not an exit code
