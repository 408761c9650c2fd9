"""The official iCartoonFace detection protocol (AP at IoU 0.5, single class "face").

Written by hand on purpose: no library implements this protocol, and it differs from COCO / VOC
tools in ways that change the score:

* IoU uses the +1-pixel convention of py-faster-rcnn's ``bbox_overlaps``: box areas are
  ``(x2 - x1 + 1) * (y2 - y1 + 1)`` and intersections get the same +1.
* Matching is done per image in **file order** (the order the detections appear in the
  prediction records), not score order. Each detection is assigned to the ground-truth face it
  overlaps most; it is a false positive when that overlap is below the IoU threshold or when
  that face was already taken by an earlier detection (VOC-style: the detection does not fall
  back to its second-best face).
* Detections on images without ground truth are ignored (counted neither as TP nor FP).
* All counted detections are then sorted by score (descending, stable: ties keep prediction
  order) and AP is the VOC2010+ all-point area under the monotone precision envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from acfd.data.formats import ImageRecord

logger = logging.getLogger(__name__)

#: A face is "small" when sqrt(w * h) < SMALL_FACE_SIZE pixels, with w = x2 - x1 and h = y2 - y1
#: (the box extent, as COCO computes areas: this is COCO's ``area < 32**2`` "small" range).
SMALL_FACE_SIZE = 32.0
#: A face has an "extreme" aspect ratio when h / w > 2 or h / w < 0.5: the hard cases of the ACFD
#: paper ("about 10% of faces with ratios of larger than 2.0 or smaller than 0.5").
EXTREME_ASPECT_LOW = 0.5
EXTREME_ASPECT_HIGH = 2.0
#: Subsets reported by :func:`evaluate_breakdown` besides "all".
BREAKDOWN_SUBSETS = ("small", "extreme_aspect", "other")

# Per-detection labels produced by the matcher.
_IGNORED, _FP, _TP = -1, 0, 1


@dataclass(frozen=True)
class OfficialResult:
    """Outcome of the official protocol.

    Attributes:
        ap: VOC all-point average precision in [0, 1] (NaN when there is no ground-truth face).
        precision: (D,) precision after each counted detection, in ranked (score) order.
        recall: (D,) recall after each counted detection, in ranked order.
        scores: (D,) scores of the counted detections, in ranked order (descending).
        num_gt: number of ground-truth faces (not ignored) over all ground-truth images.
        num_det: number of counted detections (TP + FP; ignored ones excluded).
        tp: number of true positives.
        fp: number of false positives.
        iou_threshold: IoU threshold used for matching.
    """

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    num_gt: int
    num_det: int
    tp: int
    fp: int
    iou_threshold: float = 0.5

    @property
    def max_recall(self) -> float:
        """Recall with every counted detection kept (``tp / num_gt``; NaN without ground truth)."""
        return self.tp / self.num_gt if self.num_gt else float("nan")

    def summary(self) -> dict[str, Any]:
        """Scalar fields as a JSON-friendly dict (NaN becomes ``None``)."""

        def _num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            "ap": _num(self.ap),
            "recall": _num(self.max_recall),
            "num_gt": self.num_gt,
            "num_det": self.num_det,
            "tp": self.tp,
            "fp": self.fp,
            "iou_threshold": self.iou_threshold,
        }


def bbox_overlaps(boxes: np.ndarray, query_boxes: np.ndarray) -> np.ndarray:
    """IoU matrix with the +1-pixel convention of py-faster-rcnn ``bbox_overlaps``.

    Args:
        boxes: (N, 4) x1, y1, x2, y2.
        query_boxes: (K, 4) x1, y1, x2, y2.

    Returns:
        (N, K) float64 IoU, where areas are ``(x2 - x1 + 1) * (y2 - y1 + 1)`` and the
        intersection width/height also get +1 (clipped at 0), as in the official protocol.
    """
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(query_boxes, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)  # (N,)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)  # (K,)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)  # (N, K)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ all-point AP: area under the monotone (non-increasing) precision envelope.

    Same computation as py-faster-rcnn ``voc_ap(rec, prec, use_07_metric=False)``.

    Args:
        recall: (D,) recall after each ranked detection (non-decreasing).
        precision: (D,) precision after each ranked detection.

    Returns:
        AP in [0, 1]; 0.0 for no detections.
    """
    mrec = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, dtype=np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1])  # points where recall changes
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def face_subsets(boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the breakdown subsets for some boxes.

    Args:
        boxes: (N, 4) x1, y1, x2, y2. Width and height are ``x2 - x1`` and ``y2 - y1``.

    Returns:
        ``{"small", "extreme_aspect", "other"}`` -> (N,) bool. "small": sqrt(w * h) < 32 px;
        "extreme_aspect": h / w > 2 or h / w < 0.5 (a face may be both small and extreme);
        "other": neither.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2] - b[:, 0], 0.0)
    h = np.maximum(b[:, 3] - b[:, 1], 0.0)
    small = np.sqrt(w * h) < SMALL_FACE_SIZE
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = h / w  # inf for w == 0, NaN for a point box (then not "extreme")
    extreme = (ratio > EXTREME_ASPECT_HIGH) | (ratio < EXTREME_ASPECT_LOW)
    return {"small": small, "extreme_aspect": extreme, "other": ~small & ~extreme}


def _as_boxes(record: ImageRecord, what: str) -> np.ndarray:
    boxes = np.asarray(record.boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what} {record.filename!r}: boxes must have shape (N, 4), got {boxes.shape}")
    return boxes


def _as_scores(record: ImageRecord, n: int) -> np.ndarray:
    if record.scores is None:
        return np.ones(n, dtype=np.float64)
    scores = np.asarray(record.scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != n:
        raise ValueError(
            f"prediction {record.filename!r}: {scores.shape[0]} scores for {n} boxes (need one per box)"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"prediction {record.filename!r}: scores must be finite numbers")
    return scores


def _assign(
    gt_boxes: np.ndarray, det_boxes: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D,) index of each detection's most-overlapping face, (D,) whether that IoU >= threshold,
    and the (D, G) IoU matrix they come from."""
    iou = bbox_overlaps(det_boxes, gt_boxes)  # (D, G)
    best = iou.argmax(axis=1)
    hit = iou[np.arange(det_boxes.shape[0]), best] >= iou_threshold
    return best, hit, iou


def _label(
    best: np.ndarray, hit: np.ndarray, gt_ignore: np.ndarray | None, det_ignore: np.ndarray | None
) -> np.ndarray:
    """TP / FP / ignored labels from :func:`_assign`'s output (see :func:`match_image`)."""
    labels = np.full(best.shape[0], _FP, dtype=np.int8)
    if gt_ignore is not None:
        on_ignored = hit & gt_ignore[best]
        labels[on_ignored] = _IGNORED
        hit = hit & ~on_ignored
    # Sequential "first come, first served" in file order, vectorised: among the detections that
    # hit a face, the first one (lowest file index) per face is the TP; later ones are FPs.
    hit_idx = np.flatnonzero(hit)
    _, first = np.unique(best[hit_idx], return_index=True)
    labels[hit_idx[first]] = _TP
    if det_ignore is not None:
        labels[(labels == _FP) & det_ignore] = _IGNORED
    return labels


def match_image(
    gt_boxes: np.ndarray,
    det_boxes: np.ndarray,
    iou_threshold: float = 0.5,
    gt_ignore: np.ndarray | None = None,
    det_ignore: np.ndarray | None = None,
) -> np.ndarray:
    """Label one image's detections, in file order, under the official protocol.

    Args:
        gt_boxes: (G, 4) ground-truth faces.
        det_boxes: (D, 4) detections in prediction-file order.
        iou_threshold: a detection is a TP when its best-overlapping face has IoU >= this
            (+1-pixel IoU) and no earlier detection (file order) took that face.
        gt_ignore: optional (G,) bool; a detection whose best face is an ignored face with
            IoU >= threshold is ignored (COCO's handling of out-of-range faces).
        det_ignore: optional (D,) bool; an unmatched detection flagged here is ignored instead
            of being a FP (COCO's handling of out-of-range detections).

    Returns:
        (D,) int8 labels: 1 = TP, 0 = FP, -1 = ignored (all ignored when G == 0).
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    if gt_boxes.shape[0] == 0:
        return np.full(det_boxes.shape[0], _IGNORED, dtype=np.int8)
    best, hit, _ = _assign(gt_boxes, det_boxes, iou_threshold)
    return _label(best, hit, gt_ignore, det_ignore)


def _result(
    scores: list[np.ndarray], labels: list[np.ndarray], num_gt: int, iou_threshold: float
) -> OfficialResult:
    """Rank all counted detections by score and compute precision, recall and VOC AP."""
    s = np.concatenate(scores) if scores else np.zeros(0)
    lab = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int8)
    order = np.argsort(-s, kind="stable")  # descending, ties keep prediction order
    s, lab = s[order], lab[order]
    tp_cum = np.cumsum(lab == _TP)
    fp_cum = np.cumsum(lab == _FP)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    if num_gt > 0:
        recall = tp_cum / float(num_gt)
        ap = voc_ap(recall, precision)
    else:
        recall = np.full(s.shape, np.nan)
        ap = float("nan")
    return OfficialResult(
        ap=ap,
        precision=precision,
        recall=recall,
        scores=s,
        num_gt=num_gt,
        num_det=int(lab.shape[0]),
        tp=int(tp_cum[-1]) if tp_cum.size else 0,
        fp=int(fp_cum[-1]) if fp_cum.size else 0,
        iou_threshold=iou_threshold,
    )


def _evaluate(
    gt: Mapping[str, ImageRecord],
    pred: Mapping[str, ImageRecord],
    iou_threshold: float,
    subsets: Sequence[str | None] = (None,),
) -> dict[str | None, OfficialResult]:
    """Official protocol for several face subsets at once (None = all faces, nothing ignored)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    need_masks = any(sub is not None for sub in subsets)
    num_gt = dict.fromkeys(subsets, 0)
    gt_data: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for name, rec in gt.items():
        boxes = _as_boxes(rec, "ground truth")
        masks = face_subsets(boxes) if need_masks else {}
        gt_data[name] = (boxes, masks)
        for sub in subsets:
            num_gt[sub] += boxes.shape[0] if sub is None else int(masks[sub].sum())

    all_scores: dict[str | None, list[np.ndarray]] = {sub: [] for sub in subsets}
    all_labels: dict[str | None, list[np.ndarray]] = {sub: [] for sub in subsets}
    skipped_images = skipped_dets = 0
    for name, rec in pred.items():  # prediction order: defines tie-breaking in _result
        det = _as_boxes(rec, "prediction")
        scores = _as_scores(rec, det.shape[0])
        g = gt_data.get(name)
        if g is None or g[0].shape[0] == 0:  # official rule: detections here are not counted at all
            skipped_images += 1
            skipped_dets += det.shape[0]
            continue
        if det.shape[0] == 0:
            continue
        gt_boxes, gt_masks = g
        best, hit, _ = _assign(gt_boxes, det, iou_threshold)
        det_masks = face_subsets(det) if need_masks else {}
        for sub in subsets:
            if sub is None:
                labels = _label(best, hit, None, None)
            else:
                labels = _label(best, hit, ~gt_masks[sub], ~det_masks[sub])
            keep = labels != _IGNORED
            all_scores[sub].append(scores[keep])
            all_labels[sub].append(labels[keep])
    if skipped_dets:
        logger.debug(
            "ignored %d detections on %d images without ground truth", skipped_dets, skipped_images
        )
    return {sub: _result(all_scores[sub], all_labels[sub], num_gt[sub], iou_threshold) for sub in subsets}


def _warn_if_disjoint(gt: Mapping[str, ImageRecord], pred: Mapping[str, ImageRecord]) -> None:
    if pred and gt and set(gt).isdisjoint(pred):
        logger.warning(
            "no prediction image is in the ground truth: check that image names match "
            "(e.g. %r vs %r)", next(iter(pred)), next(iter(gt))
        )


def evaluate_official(
    gt: Mapping[str, ImageRecord],
    pred: Mapping[str, ImageRecord],
    iou_threshold: float = 0.5,
) -> OfficialResult:
    """Score predictions with the official iCartoonFace protocol (AP50).

    Args:
        gt: image key -> ground-truth record (boxes only). Every face of every image here counts.
        pred: image key -> prediction record (boxes in file order, scores). Images absent from
            ``gt`` (or with no face there) are ignored, as the protocol says. A record without
            scores gets score 1.0 for every box (ranking then falls back to prediction order).
        iou_threshold: matching threshold (the protocol uses 0.5; +1-pixel IoU).

    Returns:
        OfficialResult; ``ap`` is NaN when ``gt`` has no face.

    Raises:
        ValueError: malformed boxes or scores (the message names the image).
    """
    _warn_if_disjoint(gt, pred)
    return _evaluate(gt, pred, iou_threshold)[None]


def evaluate_breakdown(
    gt: Mapping[str, ImageRecord],
    pred: Mapping[str, ImageRecord],
    iou_threshold: float = 0.5,
) -> dict[str, OfficialResult]:
    """The official protocol restricted to subsets of faces, the way COCO handles area ranges.

    For a subset, ground-truth faces outside it become "ignore": a detection matched to one of
    them (IoU >= threshold with its best face, that face being out of the subset) counts neither
    as TP nor FP, and those faces do not count in recall. As in COCO, an unmatched detection whose
    own box is outside the subset is ignored too (so e.g. a false alarm on a large region does not
    hurt small-face AP). Otherwise the rules are those of :func:`evaluate_official`.

    Subsets (see :func:`face_subsets`): "small" (sqrt(w * h) < 32 px, w = x2 - x1, h = y2 - y1),
    "extreme_aspect" (h / w > 2 or < 0.5, the ACFD paper's hard cases), "other" (neither).
    "small" and "extreme_aspect" may overlap.

    Args:
        gt: image key -> ground-truth record.
        pred: image key -> prediction record (file order, scores).
        iou_threshold: matching threshold (+1-pixel IoU).

    Returns:
        ``{"all": evaluate_official(...), "small": ..., "extreme_aspect": ..., "other": ...}``;
        a subset with no face has ``ap`` NaN.
    """
    _warn_if_disjoint(gt, pred)
    res = _evaluate(gt, pred, iou_threshold, (None, *BREAKDOWN_SUBSETS))
    return {"all": res[None], **{name: res[name] for name in BREAKDOWN_SUBSETS}}
