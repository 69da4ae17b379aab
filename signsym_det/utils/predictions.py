"""Draw a detector's predictions on dataset images with detectron2's Visualizer."""

import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import Visualizer
from PIL import Image


@torch.no_grad()
def draw_predictions(cfg, model, dataset_name, out_png, num_images=6, score_thresh=0.2):
    """Save a grid of ``num_images`` images of ``dataset_name`` with predicted boxes."""
    metadata = MetadataCatalog.get(dataset_name)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    was_training = model.training
    model.eval()
    panels = []
    for record in DatasetCatalog.get(dataset_name)[:num_images]:
        rgb = read_image(record["file_name"], format="RGB")
        image = rgb if cfg.INPUT.FORMAT == "RGB" else rgb[:, :, ::-1]
        resized = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        height, width = rgb.shape[:2]
        (output,) = model([{"image": tensor, "height": height, "width": width}])
        instances = output["instances"].to("cpu")
        instances = instances[instances.scores >= score_thresh]
        drawing = Visualizer(rgb, metadata, scale=2.0).draw_instance_predictions(instances)
        panels.append(drawing.get_image())
    model.train(was_training)
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    h, w = panels[0].shape[:2]
    grid = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, cols)
        grid[r * h : r * h + panel.shape[0], c * w : c * w + panel.shape[1]] = panel
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    Image.fromarray(grid).save(out_png)
    return out_png
