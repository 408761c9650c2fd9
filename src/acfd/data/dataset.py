"""Face detection dataset, batch collation and per-worker seeding for ``torch.utils.data``.

A sample is ``(image, target)``: a uint8 tensor ``(3, S, S)`` (after the transform; ``(3, H, W)``
without one) and ``{"boxes": float32 (N, 4) x1y1x2y2, "image_id": str, "orig_size": (H, W)}``.
Images listed without annotations have no faces. An unreadable image never stops a training run:
it is logged once, counted in :attr:`DetectionDataset.failed` and replaced by the next readable one.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from acfd.data.formats import ImageRecord, Problem, read_icartoon_csv, read_split
from acfd.data.image_io import ImageReadError, load_image

logger = logging.getLogger(__name__)

__all__ = ["DetectionDataset", "Target", "detection_collate", "log_problems", "worker_init_fn"]

#: ``(image uint8 (3, H, W), boxes float32 (N, 4)) -> (image uint8 (3, S, S), boxes float32 (M, 4))``
TransformFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Target = dict[str, Any]

# Problems logged one by one before switching to a summary.
_MAX_LOGGED_PROBLEMS = 20


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """Images and face boxes for training / validation (paper section 4.1).

    Args:
        images_dir: folder the image names are relative to.
        records: annotations, name -> :class:`~acfd.data.formats.ImageRecord`.
        names: images to use, in order (e.g. a split); default: every annotated image, sorted.
            Names absent from ``records`` are images without faces.
        transform: ``(image, boxes) -> (image, boxes)``, e.g.
            :class:`~acfd.data.transforms.TrainTransform`; ``None`` returns images as decoded.
        cache_max_side: keep every image decoded in memory, resized (INTER_AREA) so that its longer
            side is at most this many pixels (boxes scaled to match), instead of decoding it again at
            every epoch; :meth:`preload` fills the cache up front (before DataLoader workers fork,
            so they share it). ``None``: no cache.

    Attributes:
        failed: number of distinct images that could not be read (per process: each DataLoader
            worker counts its own).

    Raises:
        ValueError: ``images_dir`` is not a folder, or there are no images.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        records: Mapping[str, ImageRecord],
        names: Sequence[str] | None = None,
        transform: TransformFn | None = None,
        cache_max_side: int | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise ValueError(f"{self.images_dir}: images folder not found")
        self.records = records
        self.names: list[str] = sorted(records) if names is None else list(names)
        if not self.names:
            raise ValueError(f"{self.images_dir}: no images to load (empty annotations or split)")
        self.transform = transform
        self.failed = 0
        self._bad: set[int] = set()
        if cache_max_side is not None and cache_max_side < 1:
            raise ValueError(f"cache_max_side must be >= 1, got {cache_max_side}")
        self.cache_max_side = cache_max_side
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_csv(
        cls,
        images_dir: str | os.PathLike[str],
        csv_path: str | os.PathLike[str],
        split_path: str | os.PathLike[str] | None = None,
        transform: TransformFn | None = None,
    ) -> DetectionDataset:
        """Build from an iCartoonFace CSV (and optionally a split file); CSV problems are logged.

        Args:
            images_dir: image folder.
            csv_path: ``filename,x1,y1,x2,y2[,face[,score]]`` rows (iCartoonFace, section 4.1).
            split_path: file with one image name per line; default: every annotated image.
            transform: per-sample transform.

        Raises:
            ValueError: unreadable CSV / split file (``AnnotationError``), missing images folder,
                or no images.
        """
        records, problems = read_icartoon_csv(csv_path)
        log_problems(problems)
        names: list[str] | None = None
        if split_path is not None:
            names = read_split(split_path)
            unannotated = sum(1 for n in names if n not in records)
            if unannotated:
                logger.info(
                    "%s: %d of %d images have no boxes in %s (used as images without faces)",
                    split_path, unannotated, len(names), csv_path,
                )
        logger.info("%s: %d images, %d boxes", csv_path, len(records), sum(len(r) for r in records.values()))
        return cls(images_dir, records, names=names, transform=transform)

    def __len__(self) -> int:
        return len(self.names)

    def path(self, index: int) -> Path:
        """File of sample ``index``."""
        return self.images_dir / self.names[index]

    def boxes(self, index: int) -> np.ndarray:
        """Annotated boxes of sample ``index``, ``(N, 4)`` float32 (empty when unannotated)."""
        rec = self.records.get(self.names[index])
        if rec is None:
            return np.zeros((0, 4), np.float32)
        return np.asarray(rec.boxes, dtype=np.float32).reshape(-1, 4)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        n = len(self.names)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            i = (index + step) % n
            loaded = self._load(i)
            if loaded is not None:
                return self._sample(i, *loaded)
        raise ValueError(f"{self.images_dir}: none of the {n} images could be read")

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(image HxWx3 uint8, boxes)`` of sample ``i`` (from the cache when enabled), or ``None``."""
        if i in self._cache:
            return self._cache[i]
        if i in self._bad:
            return None
        try:
            array = load_image(self.path(i))
        except ImageReadError as err:
            self._bad.add(i)
            self.failed += 1
            logger.warning("skipping unreadable image %s (using another sample)", err)
            return None
        boxes = self.boxes(i)
        if self.cache_max_side is not None:
            h, w = array.shape[:2]
            factor = self.cache_max_side / max(h, w)
            if factor < 1:
                size = (max(1, round(w * factor)), max(1, round(h * factor)))
                array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
                boxes = boxes * np.array([size[0] / w, size[1] / h] * 2, np.float32)
            array = np.require(array, dtype=np.uint8, requirements=["C"])
            array.setflags(write=False)  # shared by every sample and forked worker: never modified
            self._cache[i] = (array, boxes)
        return array, boxes

    def preload(self, progress: bool = True) -> None:
        """Decode every image into the cache now (a no-op without ``cache_max_side``)."""
        if self.cache_max_side is None:
            return
        from tqdm import tqdm

        for i in tqdm(range(len(self.names)), desc="caching images", disable=not progress, leave=False):
            self._load(i)
        megabytes = sum(a.nbytes for a, _ in self._cache.values()) / 2**20
        logger.info("cached %d images (longer side <= %d px, %.0f MB)", len(self._cache), self.cache_max_side, megabytes)

    def _sample(self, i: int, array: np.ndarray, boxes: np.ndarray) -> tuple[torch.Tensor, Target]:
        orig_size = (int(array.shape[0]), int(array.shape[1]))
        if self.transform is not None and getattr(self.transform, "accepts_numpy", False):
            image, out_boxes = self.transform(array, boxes)  # fast path: no tensor round trip
        else:
            array = np.require(array, dtype=np.uint8, requirements=["C", "W"])  # copies a read-only array
            image = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)
            out_boxes = torch.from_numpy(boxes.copy())
            if self.transform is not None:
                image, out_boxes = self.transform(image, out_boxes)
        return image, {"boxes": out_boxes, "image_id": self.names[i], "orig_size": orig_size}


def log_problems(problems: Sequence[Problem]) -> None:
    """Log annotation problems (errors and warnings as warnings), the first 20 then a summary.

    Args:
        problems: from a reader of :mod:`acfd.data.formats`.
    """
    levels = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.WARNING}
    for p in problems[:_MAX_LOGGED_PROBLEMS]:
        logger.log(levels.get(p.severity, logging.WARNING), "%s", p)
    rest = problems[_MAX_LOGGED_PROBLEMS:]
    if rest:
        n_bad = sum(1 for p in rest if p.severity != "info")
        logger.warning("... and %d more annotation problems (%d warnings or errors)", len(rest), n_bad)


def detection_collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack images into ``(B, 3, S, S)`` uint8 and keep the targets as a list (N differs).

    Args:
        batch: samples of :class:`DetectionDataset` (all the same image size, i.e. transformed).

    Raises:
        ValueError: empty batch, or images of different sizes (no transform resized them).
    """
    if not batch:
        raise ValueError("detection_collate: empty batch")
    images = [img for img, _ in batch]
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:
        ids = [t.get("image_id") for _, t in batch]
        raise ValueError(
            f"detection_collate: images of different sizes {sorted(shapes)} (images {ids}); "
            "give the dataset a transform that resizes, e.g. TrainTransform or EvalTransform"
        )
    return torch.stack(images), [t for _, t in batch]


def worker_init_fn(worker_id: int) -> None:
    """Seed ``random``, numpy and the dataset's transform in a DataLoader worker.

    torch's global RNG is already seeded per worker (``base_seed + worker_id``, where
    ``base_seed`` comes from the DataLoader's ``generator`` or torch's global RNG). A transform with
    a private generator (``TrainTransform(seed=...)``) is reseeded from the same value: otherwise
    every worker, and every epoch, would replay the same augmentations.

    Args:
        worker_id: worker index (given by the DataLoader).
    """
    info = get_worker_info()
    if info is None:
        return
    seed = int(info.seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    dataset: Any = info.dataset
    while dataset is not None and not hasattr(dataset, "transform") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # torch.utils.data.Subset and similar wrappers
    transform = getattr(dataset, "transform", None)
    if getattr(transform, "generator", None) is not None and hasattr(transform, "manual_seed"):
        transform.manual_seed(seed)
    logger.debug("worker %d seeded with %d", worker_id, seed)
