"""Issue 18 part 3: Krotov & Hopfield's claim on the embedded shapes classification set.

``python -m signsym_det.engine.hebbian_study --data datasets/shapes_cls --make-dataset
--out results/hebbian_classifier``

One architecture, three ways of getting its hidden layer (Krotov & Hopfield 2019):
x (3 S S values) -> Linear(H, no bias) -> relu(.)^n -> BatchNorm1d(no affine) -> Linear(classes).

* ``hebbian``: the hidden layer learned without labels by ``pretrain_hebbian --target hidden``
  (started from the seed's draw, pretrain_hebbian.initial_weight), then frozen; the top
  layer trained by backprop;
* ``backprop``: the whole net trained end to end by backprop from that start;
* ``random``: the hidden layer frozen at that start (the control that gives the claim its
  meaning: what the Hebbian phase adds).

The start: the tool's N(0, 1) draw for the seed, rows scaled to unit p-norm (the norm the
Hebbian rows converge to; under relu^n + BatchNorm the frozen arms do not see the scale).

Supervised training: Adam, cross-entropy, minibatches in an order drawn from the seed; top
layer initialised from the seed. Val error (%) on val/. Resumable: every finished (arm, seed)
is OUT/<arm>_seed<s>.json and is skipped when present; an interrupted Hebbian phase resumes
from OUT/hebbian_seed<s>/checkpoint.pth. OUT/results.json: all runs, mean ± std per arm;
OUT/errors.png: train and val error per arm and seed. Decoded images: OUT/images/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets

from ..checkpoint.io import atomic_write_text
from ..pretrain_hebbian import initial_weight, unit_rows
from ..pretrain_hebbian import main as pretrain_hebbian
from .hebbian_data import decoded_images, normalise

ARMS = ("hebbian", "backprop", "random")
#: The arguments a finished run's result depends on (checked when it is reused).
SETTINGS = ("data", "hidden", "image_size", "power", "hebbian_iter", "eps0", "p", "k", "delta")
SETTINGS += ("epochs", "batch_size", "lr")


class HiddenLayerNet(nn.Module):
    """Linear(no bias) -> relu^power -> BatchNorm1d(affine=False) -> Linear."""

    def __init__(self, inputs: int, hidden: int, classes: int, power: float):
        super().__init__()
        self.hidden = nn.Linear(inputs, hidden, bias=False)
        self.norm = nn.BatchNorm1d(hidden, affine=False)
        self.top = nn.Linear(hidden, classes)
        self.power = power

    def forward(self, x):
        return self.top(self.norm(F.relu(self.hidden(x.flatten(1))).pow(self.power)))


def load_split(root: Path, split: str, size: int, cache=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``root/split`` (normalised, as the Hebbian tool sees them) and labels;
    the decoded images are cached in the file ``cache`` (see hebbian_data.decoded_images)."""
    folder = datasets.ImageFolder(root / split)
    files = [Path(path) for path, _ in folder.samples]
    images = decoded_images(files, root / split, size, cache)
    return normalise(images), torch.tensor(folder.targets)


def image_cache(args, split: str) -> Path:
    """The file of ``split``'s decoded images under the study's output dir."""
    return Path(args.out) / "images" / f"{split}_{args.image_size}px.pt"


def hebbian_hidden(args, seed: int) -> torch.Tensor:
    """The tool's hidden layer for ``seed`` (trained, or resumed, unless already final)."""
    out = Path(args.out) / f"hebbian_seed{seed}"
    final = out / "model_final.pth"
    if not final.is_file():
        pretrain_hebbian(
            ["--target", "hidden", "--data", str(args.data), "--output-dir", str(out)]
            + ["--units", str(args.hidden), "--image-size", str(args.image_size)]
            + ["--max-iter", str(args.hebbian_iter), "--batch-size", str(args.batch_size)]
            + ["--eps0", str(args.eps0), "--p", str(args.p), "--k", str(args.k)]
            + ["--delta", str(args.delta), "--seed", str(seed), "--workers", "0"]
            + ["--device", "cpu", "--log-period", "50", "--resume", "--no-tensorboard"]
            + ["--image-cache", str(image_cache(args, "train"))]
        )
    return torch.load(final, weights_only=True)["model"]["weight"]


def train_and_evaluate(args, arm: str, seed: int, train, val) -> dict:
    x_train, y_train = train
    start = time.perf_counter()
    if arm == "hebbian":
        hidden = hebbian_hidden(args, seed)
    else:  # the Hebbian run's start, rows at unit p-norm (the scale the rule ends at)
        hidden = unit_rows(initial_weight((args.hidden, 3 * args.image_size**2), seed), args.p)
    torch.manual_seed(seed)
    classes = int(y_train.max()) + 1
    net = HiddenLayerNet(x_train[0].numel(), args.hidden, classes, args.power)
    with torch.no_grad():
        net.hidden.weight.copy_(hidden)
    net.hidden.weight.requires_grad_(arm == "backprop")
    optimizer = torch.optim.Adam([q for q in net.parameters() if q.requires_grad], lr=args.lr)
    order = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(args.epochs):
        batches = torch.randperm(len(x_train), generator=order).split(args.batch_size)
        for batch in batches:
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(net(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        errors = {
            name: 100.0 * (net(x).argmax(1) != y).float().mean().item()
            for name, (x, y) in (("train_error", train), ("val_error", val))
        }
    return {"arm": arm, "seed": seed, **errors, "seconds": time.perf_counter() - start}


def summarise(runs: list) -> dict:
    """Per arm: val error mean and (sample) std over seeds, and the seeds."""
    summary = {}
    for arm in ARMS:
        errors = [r["val_error"] for r in runs if r["arm"] == arm]
        if errors:
            std = statistics.stdev(errors) if len(errors) > 1 else None
            summary[arm] = {"mean": statistics.fmean(errors), "std": std, "n": len(errors)}
    return summary


def plot_errors(runs: list, path: Path) -> None:
    """Train and val error (%) per arm: one dot per seed, a bar at the mean."""
    from ..utils.plots import plt

    arms = [arm for arm in ARMS if any(r["arm"] == arm for r in runs)]
    figure, axes = plt.subplots(1, 2, figsize=(7, 3.2), sharey=True)
    for axis, key in zip(axes, ("train_error", "val_error")):
        for x, arm in enumerate(arms):
            errors = [r[key] for r in runs if r["arm"] == arm]
            axis.bar(x, statistics.fmean(errors), color="C%d" % x, alpha=0.4)
            axis.plot([x] * len(errors), errors, "k.", markersize=8)
        axis.set_xticks(range(len(arms)), arms)
        axis.set_title(key.replace("_", " ") + " (%), dots: seeds", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="the shapes classification set (train/, val/)")
    p.add_argument("--make-dataset", action="store_true", help="generate it at --data if absent")
    p.add_argument("--out", required=True)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--hidden", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--power", type=float, default=3.0, help="n in relu(.)^n")
    p.add_argument("--hebbian-iter", type=int, default=2000)
    p.add_argument("--eps0", type=float, default=0.02)
    p.add_argument("--p", type=float, default=2.0)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--delta", type=float, default=0.4)
    p.add_argument("--epochs", type=int, default=30, help="supervised epochs")
    p.add_argument("--batch-size", type=int, default=100, help="Hebbian and supervised")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    args.data = str(Path(args.data).absolute())
    if args.make_dataset:
        from ..data.classification import ensure_classification_dataset

        ensure_classification_dataset(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_split(Path(args.data), "train", args.image_size, image_cache(args, "train"))
    val = load_split(Path(args.data), "val", args.image_size, image_cache(args, "val"))
    settings = {k: v for k, v in vars(args).items() if k in SETTINGS}
    runs = []
    for seed in args.seeds:
        for arm in args.arms:
            path = out / f"{arm}_seed{seed}.json"
            if not path.is_file():
                result = train_and_evaluate(args, arm, seed, train, val)
                result["settings"] = settings
                atomic_write_text(json.dumps(result, indent=1) + "\n", path)
            runs.append(json.loads(path.read_text()))
            if runs[-1]["settings"] != settings:
                raise ValueError(
                    f"{path} was made with {runs[-1]['settings']}, this study is {settings}: "
                    "choose another --out"
                )
            print(f"[hebbian_study] {runs[-1]}", flush=True)
    command = sys.argv[1:] if argv is None else argv
    results = {
        "command": " ".join(["python -m signsym_det.engine.hebbian_study", *command]),
        "args": vars(args),
        "runs": runs,
        "val_error": summarise(runs),
    }
    atomic_write_text(json.dumps(results, indent=1) + "\n", out / "results.json")
    plot_errors(runs, out / "errors.png")
    for arm, s in results["val_error"].items():
        spread = "" if s["std"] is None else f" ± {s['std']:.2f}"
        print(f"[hebbian_study] {arm}: val error {s['mean']:.2f}{spread} % (n={s['n']})")
    return results


if __name__ == "__main__":
    main()
