"""Dynamic Anchor Match (paper section 3.4, Algorithm 1), vectorised over anchors and faces."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

NEGATIVE = 0
MATCHED = 1  # first step: the anchor itself overlaps a face (psi_1)
COMPENSATED = 2  # second step: the anchor's regressed box overlaps a face (psi_2)


@dataclass
class MatchResult:
    """Per-anchor labels (0, 1, 2) and the index of the assigned face (-1 for negatives)."""

    labels: torch.Tensor  # (A,) int64
    matched_idxs: torch.Tensor  # (A,) int64


def dynamic_anchor_match(
    anchors: torch.Tensor,
    regressed_boxes: torch.Tensor | None,
    gt_boxes: torch.Tensor,
    iou_threshold: float = 0.35,
    regressed_iou_threshold: float = 0.7,
    low_quality_matches: bool = False,
) -> MatchResult:
    """Algorithm 1: label 1 if ``max IoU(anchor, G) >= T1``; else 2 if ``max IoU(regressed, G) > T2``.

    With ``low_quality_matches`` each face's best anchor(s) (ties included) are also labelled 1 and
    assigned to that face, as torchvision's ``Matcher(allow_low_quality_matches=True)``: a face
    smaller or more elongated than every anchor at IoU T1 still gets a positive anchor.

    Args:
        anchors: ``(A, 4)`` predefined anchors (x1, y1, x2, y2).
        regressed_boxes: ``(A, 4)`` boxes decoded from the network's current regression for each
            anchor (detached), or ``None`` for the classic single-step match.
        gt_boxes: ``(G, 4)`` faces of the image; ``G == 0`` is valid (all anchors negative).
        iou_threshold: T1.
        regressed_iou_threshold: T2.
        low_quality_matches: see above.

    Returns:
        A :class:`MatchResult`.
    """
    num_anchors = anchors.shape[0]
    device = anchors.device
    labels = torch.zeros(num_anchors, dtype=torch.long, device=device)
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
    if gt_boxes.numel() == 0:
        return MatchResult(labels, matched)
    gt_boxes = gt_boxes.to(anchors.dtype)
    iou = box_iou(anchors, gt_boxes)  # (A, G)
    anchor_max, anchor_idx = iou.max(dim=1)  # (A,), (A,)
    first = anchor_max >= iou_threshold
    if low_quality_matches:
        best_per_gt = iou.max(dim=0, keepdim=True).values  # (1, G)
        is_best = (iou == best_per_gt) & (best_per_gt > 0)  # (A, G)
        anchor_ids, gt_ids = is_best.nonzero(as_tuple=True)
        first[anchor_ids] = True
        anchor_idx[anchor_ids] = gt_ids
    labels[first] = MATCHED
    matched[first] = anchor_idx[first]
    if regressed_boxes is not None:
        bbox_max, bbox_idx = box_iou(regressed_boxes.to(anchors.dtype), gt_boxes).max(dim=1)
        second = (~first) & (bbox_max > regressed_iou_threshold)
        labels[second] = COMPENSATED
        matched[second] = bbox_idx[second]
    return MatchResult(labels, matched)
