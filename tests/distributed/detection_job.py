"""``python tests/distributed/detection_job.py --num-gpus N --config-file tiny_rcnn.yaml
OUTPUT_DIR ROOT [KEY VALUE ...]``: through ``signsym_det.train_net.main`` (so ``launch``,
gloo on CPU), train one FeedbackTrainer per (rule, fixed feedback) of :data:`RUNS` into
ROOT/<rule>; each saves model_final.pth. Then, with ``all_gather``, every rank's feedback
matrices B (fa/frsf: the fixed B; brsf: B with the current step's noise) are compared;
rank 0 writes ROOT/<rule>/check.json: the number of processes, per feedback layer whether all
ranks agree, and the largest change of any weight by the training (to show it is not tiny)."""

import hashlib
import json
import os
import sys

from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from signsym_det import train_net
from signsym_det.engine import FeedbackTrainer, setup_cfg
from signsym_det.engine.alignment_hook import unwrap
from signsym_det.engine.distributed import share_cpu_threads

RUNS = (
    ("bp", "regenerate"),
    ("fa", "store"),
    ("frsf", "regenerate"),
    ("sign_symmetry", "regenerate"),
    ("brsf", "regenerate"),
    ("kolen_pollack", "regenerate"),
)


def feedback_digests(model) -> dict:
    """sha256 of every feedback layer's current B, by layer name."""
    return {
        name: hashlib.sha256(module.feedback_matrix().contiguous().numpy().tobytes()).hexdigest()
        for name, module in model.named_modules()
        if hasattr(module, "feedback_matrix")
    }


def job(args):
    root = None
    for rule, fixed in RUNS:
        opts = [*args.opts, "MODEL.FEEDBACK.RULE", rule, "MODEL.FEEDBACK.FIXED_FEEDBACK", fixed]
        cfg = setup_cfg(args.config_file, opts)
        root = root or cfg.OUTPUT_DIR
        cfg.defrost()
        cfg.OUTPUT_DIR = os.path.join(root, rule)
        cfg.freeze()
        share_cpu_threads(cfg.MODEL.DEVICE, comm.get_local_size())
        seed_all_rng(cfg.SEED)  # the same on every rank (DDP broadcasts rank 0's anyway)
        trainer = FeedbackTrainer(cfg)
        trainer.resume_or_load(resume=False)
        start = {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()}
        trainer.train()
        end = unwrap(trainer.model).state_dict()
        change = max(
            (end[k] - v).abs().max().item() for k, v in start.items() if v.is_floating_point()
        )
        digests = comm.all_gather(feedback_digests(unwrap(trainer.model)))
        if comm.is_main_process():
            agree = {
                name: all(d[name] == digest for d in digests) for name, digest in digests[0].items()
            }
            report = {"processes": comm.get_world_size(), "layers_agree": agree, "change": change}
            with open(os.path.join(cfg.OUTPUT_DIR, "check.json"), "w") as f:
                json.dump(report, f)
        comm.synchronize()


if __name__ == "__main__":
    sys.exit(train_net.main(job=job))
