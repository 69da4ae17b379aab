"""The configs shipped inside the package, found as ``detectron2.model_zoo`` finds its own.

``get_config_file("Shapes-Demo/retinanet_R_18_FPN_sign_symmetry.yaml")`` is the path of that
file under ``signsym_det/model_zoo/configs/`` (the repository's ``configs/`` is a link to it),
whether the package is installed or run from a checkout. The ``_BASE_`` links between configs
are relative, so they hold wherever the package lives.
"""

from importlib.resources import files
from pathlib import Path

#: Directory of the packaged configs (YAML and LazyConfig .py for detectron2, ``ImageNet/*.args``
#: options files).
CONFIG_ROOT = Path(str(files(__name__) / "configs"))


def available_configs() -> list[str]:
    """Every packaged config, as the relative path ``get_config_file`` takes, sorted."""
    return sorted(
        path.relative_to(CONFIG_ROOT).as_posix()
        for path in CONFIG_ROOT.rglob("*")
        if path.suffix in (".yaml", ".py", ".args")
    )


def get_config_file(config_path: str) -> str:
    """Absolute path of the packaged config ``config_path`` (relative to ``configs/``, e.g.
    ``"COCO-Detection/retinanet_R_50_FPN_1x_sign_symmetry.yaml"``)."""
    available = available_configs()
    if config_path not in available:
        raise FileNotFoundError(
            f"{config_path!r} is not a config shipped with signsym_det (looked in {CONFIG_ROOT}); "
            f"available: {', '.join(available)}"
        )
    return str(CONFIG_ROOT / config_path)
