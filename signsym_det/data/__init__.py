"""Datasets: the embedded synthetic shapes detection set and its detectron2 registration.

``shapes`` needs only numpy and Pillow; ``register_shapes_dataset`` and
``ensure_shapes_dataset`` live in ``register`` (imports detectron2) and are loaded lazily.
"""

from .shapes import SHAPE_CLASSES, generate_detection_dataset, save_preview  # noqa: F401

_LAZY = (
    "register_shapes_dataset",
    "ensure_shapes_dataset",
    "register_embedded_datasets",
    "shapes_root",
)


def __getattr__(name):
    if name in _LAZY:
        from . import register

        return getattr(register, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SHAPE_CLASSES", "generate_detection_dataset", "save_preview", *_LAZY]
