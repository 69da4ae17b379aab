"""Side-by-side cost of the learning rules against stock detectron2 backprop.

Pieces of :mod:`.cli` (``python -m signsym_det.benchmark``): :mod:`.timing` (interleaved
A B A B timing, medians), :mod:`.memory` (peak tensor memory of one step, comparable across
variants in one process), :mod:`.detectors` (RetinaNet variants, synthetic batches, train /
inference steps), :mod:`.feedback_cost` (what a rule adds to bp's path: every layer's B made
as an iteration makes it, timed alone), :mod:`.layers` (FeedbackConv2d vs nn.Conv2d on
ResNet-50's conv shapes) and :mod:`.report` (tables, targets, JSON).
"""
