#!/usr/bin/env python
"""Pretrain a rule-swapped ResNet (R18/34/50/101/152) on an ImageFolder dataset (ImageNet layout).

    python tools/pretrain_net.py @configs/ImageNet/R-18.args --data /data/imagenet \
        --rule sign_symmetry --output-dir output/pretrain/R-18_sign_symmetry [--resume]
    torchrun --nnodes N --nproc-per-node 8 tools/pretrain_net.py ... --amp   # multi-GPU/node
    python tools/pretrain_net.py @configs/ImageNet/Shapes-R18.args --make-dataset \
        --rule sign_symmetry --output-dir output/pretrain/shapes_R-18_sign_symmetry   # CPU demo

SGD with momentum (optional Batch Manhattan), step or cosine schedule, RandomResizedCrop +
flip, top-1/top-5 on val, on detectron2's engine (signsym_det.engine.pretrain); progress and
metrics (incl. angle(B, W) per ResNet stage) to stdout, OUTPUT_DIR/log.txt, TensorBoard and
OUTPUT_DIR/metrics.jsonl (detectron2's JSONWriter). OUTPUT_DIR/checkpoint.pth (latest) and
model_final.pth are weights-only checkpoints; convert them with tools/convert_pretrained.py.
"""

import sys

from signsym_det.pretrain_net import main

if __name__ == "__main__":
    main(sys.argv[1:])  # returns the final metrics (a dict), not an exit code
