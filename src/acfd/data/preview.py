"""A grid picture of augmented training samples with their boxes, to eyeball the augmentation."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, make_grid

from acfd.data.dataset import DetectionDataset, log_problems
from acfd.data.formats import read_annotations, read_split
from acfd.data.transforms import TrainTransform
from acfd.utils import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["save_preview"]

BOX_COLOUR = (0, 255, 0)


def _resolve_split(split: str | os.PathLike[str], images_dir: Path) -> Path:
    """A split file path, or a split name looked up as ``<images_dir>/../splits/<name>.txt``."""
    p = Path(split)
    if p.is_file():
        return p
    candidate = images_dir.parent / "splits" / f"{split}.txt"
    if candidate.is_file():
        return candidate
    raise ValueError(f"{split}: split file not found (also looked for {candidate})")


def save_preview(
    images_dir: str | os.PathLike[str],
    annotations_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    n: int = 16,
    seed: int = 0,
    size: int = 640,
    split: str | os.PathLike[str] | None = None,
) -> Path:
    """Save a PNG grid of ``n`` randomly chosen, augmented samples with their boxes drawn.

    The augmentation is :class:`~acfd.data.transforms.TrainTransform` with default settings (paper
    section 4.1), seeded with ``seed``; the same arguments give the same picture.

    Args:
        images_dir: image folder.
        annotations_path: annotations (iCartoonFace CSV, COCO JSON, VOC or YOLO folder).
        out_path: PNG file to write (atomically).
        n: number of samples (drawn with replacement when the dataset has fewer images).
        seed: seed of the sample choice and of the augmentation.
        size: side of each augmented sample (paper: 640).
        split: split file, or a split name (``train`` -> ``<images_dir>/../splits/train.txt``);
            default: every annotated image.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``n`` or ``size`` below 1, unreadable annotations or split, missing images folder.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    images_dir = Path(images_dir)
    records, problems = read_annotations(annotations_path, images_dir=images_dir)
    log_problems(problems)
    names = read_split(_resolve_split(split, images_dir)) if split is not None else None
    ds = DetectionDataset(images_dir, records, names=names, transform=TrainTransform(size=size, seed=seed))

    g = torch.Generator().manual_seed(seed)
    if n <= len(ds):
        indices = torch.randperm(len(ds), generator=g)[:n].tolist()
    else:
        indices = torch.randint(len(ds), (n,), generator=g).tolist()

    width = max(1, round(size / 213))  # 3 px at 640
    tiles = []
    for i in indices:
        image, target = ds[i]
        if len(target["boxes"]):  # draw_bounding_boxes warns on an empty box list
            image = draw_bounding_boxes(image, target["boxes"], colors=BOX_COLOUR, width=width)
        tiles.append(image)
    grid = make_grid(tiles, nrow=math.ceil(math.sqrt(n)), padding=max(2, width), pad_value=255)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).contiguous().numpy()).save(tmp, format="PNG")
    if ds.failed:
        logger.warning("%d unreadable images were replaced by others", ds.failed)
    logger.info("wrote %s (%d samples)", out, n)
    return out
