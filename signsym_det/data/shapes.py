"""Synthetic "shapes" detection dataset in COCO format (pure numpy + Pillow).

Each image has a smooth random colour background with fine texture, a few distractor
strokes/arcs/elongated blobs that are NOT objects, and 1-6 objects whose class is given by
their SHAPE only (fill colour is random for every object). Objects may overlap, but a new
object is only placed if no earlier object loses more than ``max_occlusion`` of its area, so
every annotation shows a mostly visible object. Boxes are computed from the visible pixels
of each object (tight, modal boxes in COCO ``[x, y, w, h]`` pixel-edge convention).

Generation is deterministic: image ``i`` of a split is drawn from its own random stream
``(seed, split, i)``, PNGs are written with fixed settings and JSON with sorted keys, so the
same arguments always give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import check_replaceable, write_dir_atomically

SHAPE_CLASSES = ("circle", "square", "triangle", "ring", "cross", "diamond")
FORMAT_NAME = "signsym_det.shapes"
# Bump whenever the same arguments would render different pixels: manifests record it, so
# ensure_shapes_dataset regenerates sets made by an older renderer.
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 1, "val": 2}


def resolve_params(
    *,
    seed: int = 0,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 6,
    min_size: int | None = None,
    max_size: int | None = None,
    max_occlusion: float = 0.4,
    clutter: float = 1.0,
) -> dict:
    """Validate generator arguments and fill defaults; sizes scale with ``image_size``.

    Object sizes (the longest side of an object's box before occlusion) default to
    10-60 px on a 128 px image. ``clutter`` scales the background's colour contrast and
    texture and the number of distractors (0: flat background, no distractors).
    """
    if min_size is None:
        min_size = max(6, round(image_size * 10 / 128))
    if max_size is None:
        max_size = max(min_size, round(image_size * 60 / 128))
    p = dict(
        seed=int(seed),
        num_train=int(num_train),
        num_val=int(num_val),
        image_size=int(image_size),
        min_objects=int(min_objects),
        max_objects=int(max_objects),
        min_size=int(min_size),
        max_size=int(max_size),
        max_occlusion=float(max_occlusion),
        clutter=float(clutter),
    )
    if p["num_train"] < 0 or p["num_val"] < 0:
        raise ValueError("num_train and num_val must be >= 0")
    if p["image_size"] < 32:
        raise ValueError("image_size must be >= 32")
    if not 1 <= p["min_objects"] <= p["max_objects"]:
        raise ValueError("need 1 <= min_objects <= max_objects")
    if not 6 <= p["min_size"] <= p["max_size"] <= p["image_size"] - 4:
        raise ValueError("need 6 <= min_size <= max_size <= image_size - 4")
    if not 0.0 <= p["max_occlusion"] < 1.0:
        raise ValueError("max_occlusion must be in [0, 1)")
    if not 0.0 <= p["clutter"] <= 2.0:
        raise ValueError("clutter must be in [0, 2]")
    return p


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The independent random stream of image ``index`` of ``split``."""
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])


# ----------------------------------------------------------------------------- drawing


def _unit_outline(cls: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Outer polygon (and inner hole for rings) of a shape, centred, before scaling."""
    deg = math.pi / 180
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    hole = None
    if cls in ("circle", "ring"):
        pts = circle * [1.0, rng.uniform(0.85, 1.18)]
        if cls == "ring":
            hole = pts * rng.uniform(0.45, 0.62)
        angle = rng.uniform(0, math.pi)
    elif cls == "square":
        pts = square * [1.0, rng.uniform(0.8, 1.25)]
        angle = rng.uniform(-12, 12) * deg
    elif cls == "diamond":
        pts = _rotate(square, 45 * deg) * [1.0, rng.uniform(0.75, 1.33)]
        angle = rng.uniform(-10, 10) * deg
    elif cls == "triangle":
        a = (np.array([90, 210, 330]) + rng.uniform(-8, 8, 3)) * deg
        r = rng.uniform(0.9, 1.1, 3)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        angle = rng.uniform(0, 2 * math.pi)
    elif cls == "cross":
        w = rng.uniform(0.3, 0.42)
        pts = np.array(
            [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
             [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]]
        )  # fmt: skip
        angle = rng.uniform(-12, 12) * deg
    else:
        raise ValueError(f"unknown shape class {cls!r}")
    pts = _rotate(pts, angle)
    return pts, None if hole is None else _rotate(hole, angle)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _shape_mask(cls: str, size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``n x n`` mask of one shape with longest side ~``size``, placed at random."""
    outer, hole = _unit_outline(cls, rng)
    lo, hi = outer.min(0), outer.max(0)
    scale = (size - 1) / float((hi - lo).max())
    ext = (hi - lo) * scale
    offset = np.array([rng.uniform(1, n - 2 - ext[0]), rng.uniform(1, n - 2 - ext[1])])
    to_px = lambda p: [tuple(q) for q in ((p - lo) * scale + offset).tolist()]  # noqa: E731
    img = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(img)
    draw.polygon(to_px(outer), fill=255)
    if hole is not None:
        draw.polygon(to_px(hole), fill=0)
    return np.asarray(img) > 0


def _background(n: int, rng: np.random.Generator, clutter: float) -> Image.Image:
    """Smooth colour gradient + fine texture + distractor strokes, arcs and blobs."""
    k = int(rng.integers(2, 5))
    mean = rng.uniform(0, 255, 3)
    grid = mean + min(1.0, clutter) * (rng.uniform(0, 255, (k, k, 3)) - mean)
    grid = Image.fromarray(grid.round().astype(np.uint8))
    base = np.asarray(grid.resize((n, n), Image.BICUBIC), np.float32)
    m = max(2, n // 8)
    tex = (128 + rng.normal(0, 20 * clutter, (m, m, 3))).clip(0, 255).astype(np.uint8)
    tex = np.asarray(Image.fromarray(tex).resize((n, n), Image.BILINEAR), np.float32) - 128
    img = Image.fromarray((base + tex).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(round(int(rng.integers(2, 7)) * clutter)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        if kind == 0:  # polyline stroke
            pts = np.cumsum(rng.normal(0, n / 5, (int(rng.integers(2, 5)), 2)), 0)
            pts += rng.uniform(0, n, 2) - pts.mean(0)
            draw.line([tuple(p) for p in pts.tolist()], fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:  # arc
            c, r = rng.uniform(0, n, 2), rng.uniform(n / 10, n / 3)
            a0 = rng.uniform(0, 360)
            box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
            draw.arc(box, a0, a0 + rng.uniform(60, 200), fill=colour, width=int(rng.integers(1, 3)))
        else:  # thin elongated blob (aspect >= 3, unlike any object class)
            t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
            length = rng.uniform(n / 12, n / 4)
            pts = np.stack([np.cos(t) * length, np.sin(t) * length / rng.uniform(3, 6)], 1)
            pts = _rotate(pts, rng.uniform(0, math.pi)) + rng.uniform(0, n, 2)
            draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
    return img


def _bbox(mask: np.ndarray) -> list[int]:
    """Tight COCO box ``[x, y, w, h]`` (pixel edges) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a ``(2r+1)`` square."""
    n, m = mask.shape
    pad = np.pad(mask, r)
    out = np.zeros_like(mask)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= pad[dy : dy + n, dx : dx + m]
    return out


def _pick_colour(rng: np.random.Generator, surround: np.ndarray) -> np.ndarray:
    """A random colour that stands out from (almost) all pixels around the object's edge."""
    cand = rng.uniform(0, 255, (24, 3))
    dist = np.linalg.norm(cand[:, None, :] - surround[None].astype(np.float32), axis=2)
    frac = (dist > 70).mean(1)  # share of the edge where the object is clearly visible
    ok = np.nonzero(frac >= 0.95)[0]
    return cand[ok[0] if len(ok) else int(frac.argmax())]


def render_sample(rng: np.random.Generator, params: dict) -> dict:
    """Render one image.

    Returns ``{"image": HxWx3 uint8, "background": HxWx3 uint8 (before objects),
    "objects": [{"category_id", "name", "bbox", "area", "visible_fraction",
    "mask" (visible part, bool HxW)}]}``.
    """
    n = params["image_size"]
    bg = np.asarray(_background(n, rng, params["clutter"]), np.float32)
    img = bg.copy()
    target = int(rng.integers(params["min_objects"], params["max_objects"] + 1))
    objs: list[dict] = []  # paint order; "vis" = currently visible part of "full"
    log_lo, log_hi = math.log(params["min_size"]), math.log(params["max_size"])
    for _ in range(target):
        cls_idx = int(rng.integers(len(SHAPE_CLASSES)))
        for _attempt in range(20):
            size = int(round(math.exp(rng.uniform(log_lo, log_hi))))
            mask = _shape_mask(SHAPE_CLASSES[cls_idx], size, n, rng)
            keep = [
                (o["vis"] & ~mask).sum() >= (1 - params["max_occlusion"]) * o["full"].sum()
                for o in objs
            ]
            if all(keep):
                break
        else:
            continue
        x, y, _, _ = _bbox(mask)
        # contrast against what surrounds it now: background, distractors, earlier objects
        colour = _pick_colour(rng, img[_dilate(mask, 2) & ~mask])
        d = rng.normal(size=2)
        d *= rng.uniform(-0.15, 0.15) / (size * np.linalg.norm(d) + 1e-6)
        ys, xs = np.nonzero(mask)
        shade = 1 + (xs - x) * d[0] + (ys - y) * d[1]  # a gentle linear shading
        img[ys, xs] = (colour * shade[:, None]).clip(0, 255)
        for o in objs:
            o["vis"] &= ~mask
        objs.append(dict(cls=cls_idx, full=mask, vis=mask.copy()))
    img += rng.normal(0, 5, img.shape)
    out = [
        dict(
            category_id=o["cls"] + 1,
            name=SHAPE_CLASSES[o["cls"]],
            bbox=_bbox(o["vis"]),
            area=int(o["vis"].sum()),
            visible_fraction=float(o["vis"].sum() / o["full"].sum()),
            mask=o["vis"],
        )
        for o in objs
    ]
    return dict(
        image=img.clip(0, 255).round().astype(np.uint8),
        background=bg.clip(0, 255).astype(np.uint8),
        objects=out,
    )


# ----------------------------------------------------------------------------- files


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The generator manifest of ``root``, or ``None`` if ``root`` is not a generated set."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return None
    return manifest


def summary(root: str | os.PathLike, manifest: dict) -> dict:
    """Paths and counts of a generated dataset (what the generator returns)."""
    root = Path(root).resolve()
    out = {"root": str(root), "classes": list(manifest["classes"]), **manifest["params"]}
    for split in SPLITS:
        out[f"{split}_dir"] = str(root / split)
        out[f"{split}_json"] = str(root / "annotations" / f"instances_{split}.json")
        out[f"num_{split}_objects"] = manifest["counts"][f"{split}_objects"]
    return out


def _write_split(root: Path, split: str, params: dict) -> int:
    (root / split).mkdir(parents=True)
    images, anns = [], []
    for i in range(params[f"num_{split}"]):
        sample = render_sample(sample_rng(params["seed"], split, i), params)
        name = f"{i:06d}.png"
        # Fixed PNG settings and no metadata chunks: identical bytes for identical pixels.
        Image.fromarray(sample["image"]).save(root / split / name, compress_level=6)
        n = params["image_size"]
        images.append(dict(id=i + 1, file_name=name, width=n, height=n))
        for obj in sample["objects"]:
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=i + 1,
                    category_id=obj["category_id"],
                    bbox=obj["bbox"],
                    area=obj["area"],
                    iscrowd=0,
                )
            )
    coco = dict(
        info=dict(description=f"{FORMAT_NAME} synthetic shapes, {split}", version=FORMAT_VERSION),
        licenses=[],
        images=images,
        annotations=anns,
        categories=[
            dict(id=k + 1, name=name, supercategory="shape") for k, name in enumerate(SHAPE_CLASSES)
        ],
    )
    _dump_json(root / "annotations" / f"instances_{split}.json", coco)
    return len(anns)


def _dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")


def check_target_dir(out_dir: str | os.PathLike) -> None:
    """Refuse to touch ``out_dir`` if it holds anything but a generated dataset."""
    check_replaceable(out_dir, _is_generated, "shapes dataset")


def _is_generated(root: Path) -> bool:
    return read_manifest(root) is not None


def generate_detection_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 6,
    min_size: int | None = None,
    max_size: int | None = None,
    max_occlusion: float = 0.4,
    clutter: float = 1.0,
) -> dict:
    """Write a COCO-format shapes detection dataset to ``out_dir`` and return its summary.

    Arguments are checked by :func:`resolve_params` (object sizes default to 10-60 px at
    128 px, scaled with ``image_size``). Layout: ``train/*.png``, ``val/*.png``,
    ``annotations/instances_{train,val}.json`` and ``manifest.json`` (written last).

    The set is built in a temporary sibling directory and then renamed into place, so
    ``out_dir`` is never half-written. An existing ``out_dir`` is only replaced if it is
    empty or a previously generated dataset (has a manifest); otherwise FileExistsError.
    """
    params = resolve_params(
        seed=seed,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        min_objects=min_objects,
        max_objects=max_objects,
        min_size=min_size,
        max_size=max_size,
        max_occlusion=max_occlusion,
        clutter=clutter,
    )

    def write(tmp: Path) -> dict:
        counts = {f"{s}_objects": _write_split(tmp, s, params) for s in SPLITS}
        counts.update({f"{s}_images": params[f"num_{s}"] for s in SPLITS})
        manifest = dict(
            format=FORMAT_NAME,
            format_version=FORMAT_VERSION,
            params=params,
            classes=list(SHAPE_CLASSES),
            counts=counts,
        )
        _dump_json(tmp / MANIFEST_NAME, manifest)
        return manifest

    manifest = write_dir_atomically(out_dir, write, _is_generated, "shapes dataset")
    return summary(out_dir, manifest)


def save_preview(
    root: str | os.PathLike,
    path: str | os.PathLike,
    *,
    split: str = "train",
    num_images: int = 8,
    columns: int = 4,
    scale: int = 3,
) -> None:
    """Save a mosaic of the first images of ``split`` with their boxes and class names."""
    coco = json.loads((Path(root) / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    tiles = []
    for im in coco["images"][:num_images]:
        tile = Image.open(Path(root) / split / im["file_name"]).convert("RGB")
        tile = tile.resize((im["width"] * scale, im["height"] * scale), Image.NEAREST)
        draw = ImageDraw.Draw(tile)
        for a in by_image.get(im["id"], []):
            x, y, w, h = (v * scale for v in a["bbox"])
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 255, 255))
            draw.rectangle([x - 1, y - 1, x + w, y + h], outline=(0, 0, 0))
            draw.text((x + 2, y + 1), names[a["category_id"]], fill=(255, 255, 255))
        tiles.append(tile)
    if not tiles:
        raise ValueError(f"no images in {root}/{split}")
    tw, th = tiles[0].size
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * (tw + 4), rows * (th + 4)), (40, 40, 40))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * (tw + 4) + 2, (k // columns) * (th + 4) + 2))
    sheet.save(path)
