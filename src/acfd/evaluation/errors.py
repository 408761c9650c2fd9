"""Where the AP50 is lost: the official protocol's false positives and misses, by kind.

The idea is TIDE's (Bolya et al., ECCV 2020, "TIDE: A General Toolbox for Identifying Object
Detection Errors"): label each error, then fix one kind at a time and report how much AP that fix
alone would add. TIDE itself (``tidecv``) runs COCO matching (score order, ``pycocotools``) and has
not been maintained since 2021, so it cannot say what the *official* iCartoonFace rules (file-order
matching, +1-pixel IoU, VOC all-point AP) lose; this module applies TIDE's single-class error kinds
on top of :mod:`acfd.evaluation.icartoonface`'s own matching.

Error kinds (``t`` = the matching IoU threshold, 0.5; ``t_b`` = TIDE's background threshold, 0.1):

* **duplicate**: a FP whose best face overlaps it at ``>= t`` but an earlier detection took that face.
* **localisation**: a FP whose best face overlaps it at ``t_b <= IoU < t``.
* **background**: a FP that overlaps no face at ``>= t_b``.
* **missed**: a face that no detection overlaps at ``>= t_b`` (found by nothing, not even a bad box).

Fixes (each applied alone to the official result):

* localisation: in score order, a localisation FP whose face no TP or earlier fix has taken
  becomes a TP (its box is "corrected"); the others are removed, as TIDE does.
* duplicate / background: those FPs are removed.
* missed: those faces are removed from the face count (the recall denominator), TIDE's "missed GT".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from acfd.evaluation.icartoonface import _FP, _TP, _as_boxes, _as_scores, _assign, _label, _result

if TYPE_CHECKING:
    from acfd.data.formats import ImageRecord

#: TIDE's background threshold: a FP overlapping no face at this IoU is a background error.
BACKGROUND_IOU = 0.1
#: The error kinds, in report order.
ERROR_KINDS = ("localisation", "duplicate", "background", "missed")

# Per-detection error kinds (TP and the three FP kinds).
_LOC, _DUP, _BKG = 2, 3, 4


@dataclass(frozen=True)
class ErrorAnalysis:
    """Errors of the official protocol by kind, and the AP50 each fix alone would reach.

    Attributes:
        ap: the official AP (the same as ``evaluate_official``'s), in [0, 1].
        counts: kind -> number of detections (faces for "missed") of that kind.
        fixed_ap: kind -> AP with only that kind of error fixed (see the module docstring).
    """

    ap: float
    counts: dict[str, int]
    fixed_ap: dict[str, float]

    def gain(self, kind: str) -> float:
        """AP points (a fraction) that fixing ``kind`` alone adds."""
        return self.fixed_ap[kind] - self.ap

    def summary(self) -> dict[str, Any]:
        """JSON-friendly: per kind, its count, the AP with it fixed and the gain (fractions)."""

        def _num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return {
            kind: {"count": self.counts[kind], "fixed_ap": _num(self.fixed_ap[kind]), "gain": _num(self.gain(kind))}
            for kind in ERROR_KINDS
        }


def _kinds(gt_boxes: np.ndarray, det: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per detection: official label refined into error kinds, and the index of its best face;
    per face: whether some detection overlaps it at >= BACKGROUND_IOU."""
    best, hit, iou = _assign(gt_boxes, det, iou_threshold)  # the protocol's matcher
    best_iou = iou[np.arange(det.shape[0]), best]
    labels = _label(best, hit, None, None)  # official TP / FP in file order
    touched = (iou >= BACKGROUND_IOU).any(axis=0)
    kinds = labels.astype(np.int8)
    fp = labels == _FP
    kinds[fp & hit] = _DUP
    kinds[fp & ~hit & (best_iou >= BACKGROUND_IOU)] = _LOC
    kinds[fp & (best_iou < BACKGROUND_IOU)] = _BKG
    return kinds, best, touched


def _fix_localisation(kinds: np.ndarray, best: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Labels with localisation errors corrected (TP if the face is free, else removed: -1)."""
    labels = np.where(kinds == _TP, _TP, _FP).astype(np.int8)
    taken = set(best[kinds == _TP].tolist())
    for i in np.argsort(-scores, kind="stable"):
        if kinds[i] != _LOC:
            continue
        if best[i] in taken:
            labels[i] = -1
        else:
            labels[i] = _TP
            taken.add(int(best[i]))
    return labels


def evaluate_errors(
    gt: Mapping[str, ImageRecord],
    pred: Mapping[str, ImageRecord],
    iou_threshold: float = 0.5,
) -> ErrorAnalysis:
    """TIDE-style error analysis of predictions under the official iCartoonFace protocol.

    Args:
        gt: image key -> ground-truth record (every face counts).
        pred: image key -> prediction record (boxes in file order, scores); images without a face
            in ``gt`` are ignored, as the protocol says.
        iou_threshold: the protocol's matching threshold (0.5).

    Returns:
        ErrorAnalysis (``ap`` NaN and every fixed AP NaN when ``gt`` has no face).

    Raises:
        ValueError: malformed boxes or scores (the message names the image).
    """
    variants = ("official", "localisation", "duplicate", "background")  # "missed" keeps the official labels
    scores: list[np.ndarray] = []
    labels: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    counts = dict.fromkeys(ERROR_KINDS, 0)
    gt_boxes_of = {name: _as_boxes(rec, "ground truth") for name, rec in gt.items()}
    num_gt = sum(b.shape[0] for b in gt_boxes_of.values())
    touched_faces = 0
    for name, rec in pred.items():
        det = _as_boxes(rec, "prediction")
        s = _as_scores(rec, det.shape[0])
        gt_boxes = gt_boxes_of.get(name)
        if gt_boxes is None or gt_boxes.shape[0] == 0 or det.shape[0] == 0:
            continue
        kinds, best, touched = _kinds(gt_boxes, det, iou_threshold)
        touched_faces += int(touched.sum())
        official = np.where(kinds == _TP, _TP, _FP).astype(np.int8)
        scores.append(s)
        labels["official"].append(official)
        labels["localisation"].append(_fix_localisation(kinds, best, s))
        labels["duplicate"].append(np.where(kinds == _DUP, -1, official).astype(np.int8))
        labels["background"].append(np.where(kinds == _BKG, -1, official).astype(np.int8))
        counts["localisation"] += int((kinds == _LOC).sum())
        counts["duplicate"] += int((kinds == _DUP).sum())
        counts["background"] += int((kinds == _BKG).sum())
    counts["missed"] = num_gt - touched_faces

    def _ap(variant: str) -> float:
        if num_gt == 0:
            return float("nan")
        fixed = labels["official" if variant == "missed" else variant]
        keep = [lab != -1 for lab in fixed]
        return _result(
            [s[k] for s, k in zip(scores, keep, strict=True)],
            [lab[k] for lab, k in zip(fixed, keep, strict=True)],
            num_gt - counts["missed"] if variant == "missed" else num_gt,
            iou_threshold,
        ).ap

    return ErrorAnalysis(ap=_ap("official"), counts=counts, fixed_ap={kind: _ap(kind) for kind in ERROR_KINDS})
