"""Training loop glue for detectron2: the trainer and its hooks."""

from .alignment_hook import AlignmentHook  # noqa: F401
from .pretrain import Pretrainer  # noqa: F401
from .setup import check_output_dir, check_run_dir, setup_cfg  # noqa: F401
from .trainer import FeedbackTrainer  # noqa: F401
