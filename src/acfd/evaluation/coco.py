"""COCO box metrics through faster-coco-eval (reference numbers beside the official AP50).

COCO rules differ from the official iCartoonFace protocol: no +1 in IoU, greedy matching in
score order, 101-point interpolated AP, at most 100 detections per image (the highest-scoring
ones), and detections on a ground-truth image without faces count as false positives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

if TYPE_CHECKING:
    from acfd.data.formats import ImageRecord

logger = logging.getLogger(__name__)

#: Keys of the dict returned by :func:`coco_metrics`, in display order.
COCO_METRIC_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100")

# Index of each metric in COCOeval.stats for the default params (area ranges all/small/medium/
# large, maxDets [1, 10, 100]): AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100.
_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "AP_small": 3, "AP_medium": 4, "AP_large": 5, "AR100": 8}


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def build_coco_dicts(
    gt: Mapping[str, ImageRecord], pred: Mapping[str, ImageRecord]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build a COCO ground-truth dataset dict and a COCO results list, in memory.

    Args:
        gt: image key -> ground truth; every key becomes a COCO image (id 1, 2, ... in order).
        pred: image key -> predictions; images not in ``gt`` are dropped (COCO cannot score them).
            A record without scores gets score 1.0 per box.

    Returns:
        ``(dataset, results)``. Image width/height come from the record, or, when unknown, from
        the largest box coordinate of that image (GT and predictions), at least 1.
    """
    images, annotations, results = [], [], []
    ann_id = 0
    dropped = 0
    for img_id, (name, rec) in enumerate(gt.items(), start=1):
        g = _xywh(rec.boxes)
        p = pred.get(name)
        d = _xywh(p.boxes) if p is not None else np.zeros((0, 4))
        width, height = rec.width, rec.height
        if width is None or height is None:
            both = np.concatenate([g, d])
            max_x = float(np.max(both[:, 0] + both[:, 2], initial=1.0))
            max_y = float(np.max(both[:, 1] + both[:, 3], initial=1.0))
            width = width or max(1, math.ceil(max_x))
            height = height or max(1, math.ceil(max_y))
        images.append({"id": img_id, "file_name": name, "width": int(width), "height": int(height)})
        for box in g:
            ann_id += 1
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        if p is not None:
            scores = np.ones(len(d)) if p.scores is None else np.asarray(p.scores, dtype=np.float64)
            if scores.reshape(-1).shape[0] != len(d):
                raise ValueError(f"prediction {name!r}: {scores.size} scores for {len(d)} boxes")
            for box, score in zip(d, scores.reshape(-1), strict=True):
                results.append(
                    {
                        "image_id": img_id,
                        "category_id": 1,
                        "bbox": [float(v) for v in box],
                        "score": float(score),
                    }
                )
    for name in pred:
        if name not in gt:
            dropped += 1
    if dropped:
        logger.debug("COCO metrics: dropped predictions for %d images not in the ground truth", dropped)
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "face"}],
    }
    return dataset, results


def coco_metrics(gt: Mapping[str, ImageRecord], pred: Mapping[str, ImageRecord]) -> dict[str, float]:
    """COCO bbox metrics (faster-coco-eval), single class "face".

    Detections are capped at 100 per image (the 100 highest-scoring), as COCO does; COCO's area
    ranges are small < 32^2 <= medium < 96^2 <= large, with area = w * h.

    Args:
        gt: image key -> ground truth (all its images are evaluated, faces or not).
        pred: image key -> predictions (images not in ``gt`` are dropped).

    Returns:
        ``{"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"}`` in [0, 1];
        NaN where COCO reports -1 (no face in that range).
    """
    dataset, results = build_coco_dicts(gt, pred)
    if not dataset["annotations"]:
        logger.warning("COCO metrics: the ground truth has no face; every metric is undefined")
        return {k: float("nan") for k in COCO_METRIC_KEYS}
    coco_gt = COCO(dataset)
    coco_dt = coco_gt.loadRes(results)
    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=logger.debug)
    if list(ev.params.maxDets) != [1, 10, 100]:  # _STATS_INDEX relies on the defaults
        raise RuntimeError(f"unexpected COCO maxDets {ev.params.maxDets}")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    stats = np.asarray(ev.stats, dtype=np.float64)
    return {k: (float("nan") if stats[i] < 0 else float(stats[i])) for k, i in _STATS_INDEX.items()}
