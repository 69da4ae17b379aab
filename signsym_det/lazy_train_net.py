"""Train or evaluate a detector described by a LazyConfig (Python config file).

python -m signsym_det.lazy_train_net --config-file configs/Lazy/Shapes-Demo/retinanet_R_18_FPN.py
python -m signsym_det.lazy_train_net --config-file CFG.py model.feedback.rule=fa \\
    train.output_dir=output/lazy_fa [--resume] [--overwrite] [--num-gpus N ...]
python -m signsym_det.lazy_train_net --config-file CFG.py --eval-only train.init_checkpoint=W.pth
    (writes the results to train.output_dir/eval_results.json, as train_net)

(``tools/lazy_train_net.py`` is the same.) detectron2's ``lazyconfig_train_net`` shape: the
config holds ``model``, ``dataloader.{train,test,evaluator}``, ``optimizer``,
``lr_multiplier`` and ``train`` (``configs/Lazy/common/train.py``: detectron2's keys plus
``alignment_period``, ``gradient_alignment_period``, ``check_finite_gradients``). On top of
it, as ``train_net``: a run directory is never overwritten by accident, the embedded shapes
sets are generated and registered and every dataset is checked before a model is built,
checkpoints go through FeedbackCheckpointer (checked loading; RetinaNet's loss normaliser
saved for resuming) and the feedback alignment angles are logged.
"""

import logging
import sys

from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from . import train_net
from .checkpoint import FeedbackCheckpointer
from .config import add_feedback_config
from .data.register import SHAPE_CLASSES, register_embedded_datasets
from .data.validate import validate_datasets
from .engine import AlignmentHook, check_run_dir
from .engine.distributed import create_ddp_model, share_cpu_threads
from .engine.nonfinite import install_gradient_check
from .engine.trainer import ModelAttributes

logger = logging.getLogger("signsym_det")


def load_config(config_file, opts=()):
    """The LazyConfig ``config_file`` with the ``key=value`` overrides ``opts``."""
    return LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))


def _names(dataset_node) -> list:
    names = dataset_node.names
    return [names] if isinstance(names, str) else list(names)


def prepare_datasets(cfg) -> None:
    """Generate/register the embedded shapes sets the dataloaders name and check every named
    dataset (json, boxes, images) and the model's class count against it."""
    train, test = _names(cfg.dataloader.train.dataset), _names(cfg.dataloader.test.dataset)
    view = get_cfg()  # the yacs view the dataset helpers read: DATASETS only
    add_feedback_config(view)
    view.DATASETS.TRAIN, view.DATASETS.TEST = tuple(train), tuple(test)
    view.MODEL.ROI_HEADS.NUM_CLASSES = len(SHAPE_CLASSES)  # checked below, for any dataset
    register_embedded_datasets(view)
    validate_datasets(view)
    key, num_classes = _num_classes(cfg.model)
    for name in dict.fromkeys(train + test):
        classes = MetadataCatalog.get(name).get("thing_classes")
        if num_classes is not None and classes is not None and len(classes) != num_classes:
            raise ValueError(
                f"{key} = {num_classes}, but dataset {name!r} has {len(classes)} classes"
            )


def _num_classes(model_cfg):
    """(key, value) of the model config's class count, or (None, None) if it has none."""
    for key, node in (("model", model_cfg), ("model.roi_heads", model_cfg.get("roi_heads"))):
        if node is not None and isinstance(node.get("num_classes"), int):
            return f"{key}.num_classes", node.num_classes
    return None, None


def do_test(cfg, model):
    """COCO (or the config's) evaluation of ``model`` on ``dataloader.test``."""
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results


def do_train(args, cfg):
    """Train ``cfg.model`` with detectron2's SimpleTrainer (AMPTrainer with train.amp)."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    plain_model = model
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(
        model, train_loader, optimizer
    )
    if cfg.train.get("check_finite_gradients", False):
        install_gradient_check(optimizer, plain_model, lambda: trainer.iter)
    checkpointer = FeedbackCheckpointer(
        model,
        cfg.train.output_dir,
        trainer=trainer,
        model_attributes=ModelAttributes(plain_model),
    )
    writers = default_writers(cfg.train.output_dir, cfg.train.max_iter)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            # before the writer, so that a step's angles are written with it
            AlignmentHook(
                cfg.train.get("alignment_period", 20),
                cfg.train.get("gradient_alignment_period", 100),
            ),
            hooks.PeriodicWriter(writers, period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # a checkpoint holds the iteration that just finished
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def run(args):
    """One process's job (``launch`` starts one per GPU): train, or evaluate with --eval-only."""
    cfg = load_config(args.config_file, args.opts)
    if not args.eval_only:
        check_run_dir(
            cfg.train.output_dir, "train.output_dir", resume=args.resume, overwrite=args.overwrite
        )
    prepare_datasets(cfg)
    default_setup(cfg, args)
    share_cpu_threads(cfg.train.device, comm.get_local_size())
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="signsym_det")
    if not args.eval_only:
        return do_train(args, cfg)
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    model = create_ddp_model(model)
    FeedbackCheckpointer(model, save_dir=cfg.train.output_dir).resume_or_load(
        cfg.train.init_checkpoint, resume=args.resume
    )
    results = do_test(cfg, model)
    if comm.is_main_process():
        train_net.write_eval_results(results, cfg.train.output_dir)
    return results


def main(argv=None) -> None:
    """train_net's options from ``argv`` (default: the command line); ``launch`` :func:`run`."""
    train_net.main(argv, job=run)


if __name__ == "__main__":
    sys.exit(main())
