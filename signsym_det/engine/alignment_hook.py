"""Training hooks: log how well each part's feedback B aligns with its forward weights W."""

from collections import defaultdict

from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

from ..feedback import gradient_alignment, weight_alignment
from ..modeling.parts import part_of as detector_part_of


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def put_part_angles(storage, prefix, angles, part_of=detector_part_of):
    """Write per-layer angles and their per-part means (degrees) to the EventStorage;
    ``part_of(layer name)`` names a layer's part."""
    by_part = defaultdict(list)
    for name, angle in angles.items():
        by_part[part_of(name).lower()].append(angle)
        storage.put_scalar(f"{prefix}_layer/{name}", angle, smoothing_hint=False)
    for part, values in by_part.items():
        storage.put_scalar(f"{prefix}/{part}", sum(values) / len(values), smoothing_hint=False)


class AlignmentHook(HookBase):
    """Every ``period`` iterations: angle(B, W) per layer; every ``gradient_period``
    iterations: angle between the rule's and backprop's input gradients (measured during
    that step's backward pass). Scalars reach metrics.json and TensorBoard, per layer and
    as means per part: ``part_of(name)`` (default: the detector parts of
    :func:`signsym_det.modeling.parts.part_of`; a classifier passes its own)."""

    def __init__(self, period, gradient_period=0, part_of=detector_part_of):
        self._period = period
        self._gradient_period = gradient_period
        self._part_of = part_of
        self._recorder = None

    def _due(self, period, iteration):
        return period > 0 and (iteration + 1) % period == 0

    def before_step(self):
        if self._due(self._gradient_period, self.trainer.iter):
            self._recorder = gradient_alignment(unwrap(self.trainer.model))
            self._recorder.__enter__()

    def after_step(self):
        storage = self.trainer.storage
        if self._recorder is not None:
            self._recorder.__exit__(None, None, None)
            put_part_angles(storage, "grad_angle", self._recorder.angles, self._part_of)
            self._recorder = None
        if self._due(self._period, self.trainer.iter):
            angles = weight_alignment(unwrap(self.trainer.model))
            put_part_angles(storage, "weight_angle", angles, self._part_of)
