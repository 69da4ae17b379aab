"""Pretraining the layered convnets (convnet, convnet_lc) by any algorithm: LayeredPretrainer.

A :class:`~signsym_det.engine.pretrain.Pretrainer` (same data order, resume, lr schedule,
evaluation, checkpoints, logging) whose step is the algorithm's:

* a feedback rule or DFA: cross-entropy, ``loss.backward()`` (the rule's or DFA's gradients),
  a step of the Pretrainer's optimizer;
* DTP / SDTP / AO-SDTP: :class:`~signsym_det.targetprop.DTPStep`; the Pretrainer's optimizer
  (``--optimizer``, ``--lr``, its schedule) trains the forward layers, one Adam per used
  inverse (``--inverse-lr``, constant) the inverses.

EventStorage scalars: ``loss_cls`` (= ``total_loss``, the mean cross-entropy before the
update), DTP's ``forward_loss/{l}`` and ``inverse_loss/{l}``, and every
``--update-angle-period`` iterations the angle (degrees) between the algorithm's weight update
(the gradient it leaves in ``.grad``) and backprop's on the same batch, per weight
(``update_angle_layer/layers.{l}...weight``) and per layer (``update_angle/layers.{l}``).

Checkpoints are the Pretrainer's plus ``algorithm``, ``convnet`` (the ConvNetSpec's fields),
``layout: "layered"`` (``feedback`` is None for DFA and target propagation); for target
propagation also ``inverses`` (their state dict) and ``inverse_optimizers``, so a resumed run
continues exactly (DTP's noise is drawn from the seed and the iteration).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from detectron2.utils import comm

from ..classification.model import CONVNETS, build_convnet, convnet_spec, stage_of
from ..feedback import available_rules
from ..targetprop import (
    VARIANTS,
    DTPStep,
    LayeredClassifier,
    backprop_gradients,
    inverse_layers,
    layer_gradients,
    make_inverse_optimizers,
    update_angles,
)
from .alignment_hook import put_part_angles, unwrap
from .pretrain import ClassifierLoss, Pretrainer, write_metrics


class OptimizerDict:
    """``{l: optimizer}`` as one checkpointable: ``{str(l): optimizer state}``."""

    def __init__(self, optimizers: dict):
        self.optimizers = optimizers

    def state_dict(self) -> dict:
        return {str(index): opt.state_dict() for index, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {str(index) for index in self.optimizers}:
            raise ValueError(f"inverse optimizers for layers {sorted(state)}, this run has "
                             f"{sorted(self.optimizers)}")  # fmt: skip
        for index, opt in self.optimizers.items():
            opt.load_state_dict(state[str(index)])


def per_layer(values, layers: list, name: str):
    """One value for every layer in ``layers``, or ``{l: value}`` from one value per layer."""
    values = list(values)
    if len(values) == 1:
        return values[0]
    if len(values) != len(layers):
        raise ValueError(f"{name} takes 1 value or one per inverse {layers}, got {values}")
    return dict(zip(layers, values))


class LayeredPretrainer(Pretrainer):
    """Pretrainer for ``--arch convnet / convnet_lc`` and every ``--algorithm``."""

    def __init__(self, args):
        if args.arch not in CONVNETS:
            raise ValueError(f"LayeredPretrainer trains {CONVNETS}, not {args.arch}")
        if args.algorithm in VARIANTS and comm.get_world_size() > 1:
            raise ValueError(f"--algorithm {args.algorithm} runs in one process only")
        if args.amp:
            raise ValueError(f"--amp applies to ResNets only, not --arch {args.arch}")
        self.algorithm = args.algorithm
        super().__init__(args)
        self.dtp_step = None
        if self.algorithm in VARIANTS:
            net, used = self.target_prop_net, inverse_layers(self.target_prop_net, self.algorithm)
            inverse = make_inverse_optimizers(
                net, self.algorithm, per_layer(args.inverse_lr, used, "--inverse-lr")
            )
            self.dtp_step = DTPStep(
                net,
                self.optimizer,
                inverse,
                variant=self.algorithm,
                beta=args.beta,
                noise=per_layer(args.inverse_noise, used, "--inverse-noise"),
                inverse_iterations=per_layer(args.inverse_iterations, used, "--inverse-iterations"),
                seed=args.seed,
            )
            self.checkpointer.add_checkpointable("inverses", net.inverses)
            self.checkpointer.add_checkpointable("inverse_optimizers", OptimizerDict(inverse))

    def build_model(self):
        """The network the Pretrainer's optimizer trains and evaluates: for target propagation
        the forward layers of ``self.target_prop_net`` (whose inverses are trained apart)."""
        args = self.args
        num_classes = len(self.train_set.classes)
        aux = args.aux_outputs
        if aux is None:
            aux = num_classes if self.algorithm == "ao_sdtp" else 0
        self.spec = convnet_spec(
            args.arch,
            num_classes,
            args.image_size,
            channels=args.channels,
            kernel_size=args.kernel_size,
            stride=args.stride,
            activation=args.activation,
            aux_outputs=aux,
        )
        model = build_convnet(
            self.spec,
            self.algorithm,
            scale=args.scale,
            classifier_rule=args.classifier_rule,
            classifier_scale=args.classifier_scale,
            seed=args.seed,
            dfa_scale=args.dfa_scale,
        )
        if self.algorithm not in VARIANTS:
            return model
        self.target_prop_net = model.to(self.device)
        return LayeredClassifier(model.layers, num_classes)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self) -> dict:
        state = super().checkpoint_state()
        state.update(
            algorithm=self.algorithm,
            convnet=dataclasses.asdict(self.spec),
            layout="layered",
        )
        if self.algorithm not in available_rules():
            state["feedback"] = None
        return state

    def _check_resumable(self, state: dict, path: str) -> None:
        recorded = (state.get("arch"), state.get("algorithm"))
        if recorded != (self.args.arch, self.algorithm):
            raise ValueError(
                f"{path} is a {recorded[0]} trained by {recorded[1]!r}; this run is a "
                f"{self.args.arch} trained by {self.algorithm!r}"
            )

    # ------------------------------------------------------------------ training

    def algorithm_step(self, images, target) -> dict:
        """One update on the batch; ``{"total_loss": cross-entropy, other scalars}``."""
        if self.dtp_step is not None:
            return self.dtp_step(images, target, self.iter)
        loss = ClassifierLoss(self.model)((images, target))["loss_cls"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"total_loss": loss.detach()}

    def run_step(self):
        start = time.perf_counter()
        images, target = next(self.data_iter)
        data_time = time.perf_counter() - start
        period = self.args.update_angle_period
        due = period > 0 and (self.iter + 1) % period == 0
        net = unwrap(self.model)
        reference = backprop_gradients(net, images, target) if due else None
        metrics = self.algorithm_step(images, target)
        if due:
            angles = update_angles(layer_gradients(net), reference)
            put_part_angles(self.storage, "update_angle", angles, stage_of)
        loss = torch.as_tensor(metrics.pop("total_loss"))
        if metrics:
            self.storage.put_scalars(**metrics)
        write_metrics({"loss_cls": loss}, data_time, self.iter)
