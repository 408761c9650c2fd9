"""Score a model on an annotated image folder with the official iCartoonFace protocol."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from acfd.data.formats import ImageRecord
from acfd.evaluation.icartoonface import OfficialResult, evaluate_official
from acfd.predict.detector import Detector

logger = logging.getLogger(__name__)


@dataclass
class ModelEvaluation:
    """AP50 (official protocol), the predictions it was computed from and the files that failed."""

    result: OfficialResult
    predictions: dict[str, ImageRecord]
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ap50(self) -> float:
        return float(self.result.ap)


def evaluate_model(
    model: torch.nn.Module | str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    gt: Mapping[str, ImageRecord],
    names: Sequence[str] | None = None,
    scales: str | Iterable[str] | None = ("640x860",),
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    progress: bool = False,
    **detector_kwargs: Any,
) -> ModelEvaluation:
    """Run ``Detector.for_evaluation`` (the weights' evaluation preset: score > 0.08, top 1000 per
    view, top 100; its flip and NMS settings unless ``detector_kwargs`` say otherwise) and score it
    with the official protocol.

    Args:
        model: an ``ACFD`` module (evaluated as is), a variant name or a weights file.
        images_dir: folder of the images named in ``gt`` / ``names``.
        gt: ground truth records keyed by file name.
        names: images to evaluate (default: every image in ``gt``); images without faces count.
        scales: test scales (see :func:`acfd.predict.scales.parse_scales`).
        device: torch device.
        batch_size: images per network call.
        progress: show a progress bar.
        **detector_kwargs: other :meth:`Detector.for_evaluation` settings (``flip``, ``nms_thresh``).
    """
    names = list(names) if names is not None else sorted(gt)
    detector = Detector.for_evaluation(model, scales=scales, device=device, batch_size=batch_size, **detector_kwargs)
    root = Path(images_dir)
    preds: dict[str, ImageRecord] = {}
    failed: dict[str, str] = {}
    for path, det in detector.detect_paths(
        [root / n for n in names], batch_size=batch_size, progress=progress
    ):
        name = path.relative_to(root).as_posix()
        if isinstance(det, Exception):
            failed[name] = str(det)
            continue
        preds[name] = ImageRecord(name, det.boxes.astype(np.float32), det.scores.astype(np.float32))
    if failed:
        logger.warning("%d images could not be read during evaluation", len(failed))
    gt_subset = {
        n: gt.get(n, ImageRecord(n, np.zeros((0, 4), np.float32))) for n in names if n not in failed
    }
    return ModelEvaluation(evaluate_official(gt_subset, preds), preds, failed)
