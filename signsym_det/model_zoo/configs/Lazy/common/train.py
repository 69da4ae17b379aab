"""``train``: what ``python -m signsym_det.lazy_train_net`` reads besides model, data and
optimizer: detectron2's keys (its configs/common/train.py) plus the alignment logging."""

train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=90000,
    amp=dict(enabled=False),  # automatic mixed precision
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),  # PeriodicCheckpointer
    eval_period=5000,
    log_period=20,
    device="cuda",
    # angle(B, W) per layer and part every N iterations (0: never)
    alignment_period=20,
    # angle between the rule's and backprop's input gradients every N iterations (0: never)
    gradient_alignment_period=100,
    # debug: stop at the first non-finite gradient, naming the layer
    check_finite_gradients=False,
)
