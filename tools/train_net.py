#!/usr/bin/env python
"""Train or evaluate a rule-swapped detectron2 detector; detectron2's usual CLI.

python tools/train_net.py --config-file configs/Shapes-Demo/retinanet_R_18_FPN_bp.yaml
python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth
python tools/train_net.py --config-file CFG --num-gpus 8 [--num-machines N --machine-rank R
                          --dist-url tcp://HOST:PORT] [--resume] [KEY VALUE ...]
"""

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from signsym_det.checkpoint import FeedbackCheckpointer
from signsym_det.engine import FeedbackTrainer, check_output_dir, setup_cfg


def main(args):
    cfg = setup_cfg(args.config_file, args.opts)
    if not args.eval_only:
        check_output_dir(cfg, resume=args.resume, overwrite=args.overwrite)
    default_setup(cfg, args)
    # our loggers (e.g. the checkpointer's pretrained-weights checks) beside detectron2's
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="signsym_det")
    if args.eval_only:
        model = FeedbackTrainer.build_model(cfg)
        FeedbackCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return FeedbackTrainer.test(cfg, model)
    trainer = FeedbackTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite", action="store_true", help="train anew into an OUTPUT_DIR holding a run"
    )
    args = parser.parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
