"""Post-processing (paper 4.1 "Inference"): score threshold, top-k, decode, clip, NMS, top-N.

Defaults are the paper's: per scale the top 1,000 boxes with score > 0.08, NMS at IoU 0.55 over all
scales, top 100 kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, nms

from acfd.detection.box_coder import BoxCoder
from acfd.detection.protocol import PAPER_MAX_DET, PAPER_NMS_THRESH, PAPER_SCORE_THRESH, PAPER_TOPK


def postprocess_detections(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    box_coder: BoxCoder,
    image_sizes: Sequence[tuple[int, int]],
    score_thresh: float = PAPER_SCORE_THRESH,
    topk: int = PAPER_TOPK,
    nms_thresh: float | None = PAPER_NMS_THRESH,
    max_det: int = PAPER_MAX_DET,
) -> list[dict[str, torch.Tensor]]:
    """Detections per image in network-input pixels.

    Args:
        cls_logits: ``(B, A)`` raw logits.
        box_deltas: ``(B, A, 4)``.
        anchors: ``(A, 4)``.
        box_coder: decodes the deltas.
        image_sizes: ``(h, w)`` per image of the valid (unpadded) input region; boxes are clipped to it.
        score_thresh: keep scores strictly above this.
        topk: keep at most this many boxes per image before NMS.
        nms_thresh: NMS IoU threshold (``None`` skips NMS, e.g. before a multi-scale merge).
        max_det: keep at most this many boxes per image after NMS.

    Returns:
        One dict per image with ``boxes (K, 4)`` and ``scores (K,)``, scores descending.
    """
    if len(image_sizes) != cls_logits.shape[0]:
        raise ValueError(f"got {len(image_sizes)} image sizes for {cls_logits.shape[0]} images")
    results = []
    scores_all = torch.sigmoid(cls_logits.float())
    for i, (h, w) in enumerate(image_sizes):
        scores = scores_all[i]
        keep = scores > score_thresh
        idx = keep.nonzero().squeeze(1)
        if idx.numel() > topk:
            top = scores[idx].topk(topk).indices
            idx = idx[top]
        boxes = box_coder.decode(box_deltas[i, idx], anchors[idx])
        boxes = clip_boxes_to_image(boxes, (int(h), int(w)))
        sc = scores[idx]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, sc = boxes[valid], sc[valid]
        if nms_thresh is not None:
            kept = nms(boxes, sc, nms_thresh)[:max_det]
        else:
            kept = sc.argsort(descending=True)
        results.append({"boxes": boxes[kept], "scores": sc[kept]})
    return results


def view_agreement_scores(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    per_view: Sequence[dict[str, torch.Tensor]],
    iou_thresh: float,
    weight: float = 0.5,
) -> torch.Tensor:
    """Rescore merged boxes by how consistently the test views found them.

    ``new = (1 - weight) * score + weight * mean over views of (that view's best score among its
    boxes at IoU >= iou_thresh with the merged box; 0 when it has none)``. This is the confidence
    rule of weighted boxes fusion (Solovyev et al., "Weighted boxes fusion", 2021: a box found by
    few of the views scores lower), kept apart from WBF's coordinate averaging, which lowered the
    shipped model's dev AP50 (docs/experiments/detector.md, "Test settings"). No library offers the rule alone, hence by hand.

    Args:
        boxes: ``(K, 4)`` merged boxes (e.g. NMS survivors of all views).
        scores: ``(K,)`` their scores.
        per_view: each view's ``{"boxes", "scores"}`` (the merge's input).
        iou_thresh: a view's box counts for a merged box at IoU >= this.
        weight: share of the agreement term in the new score.

    Returns:
        ``(K,)`` new scores in [0, 1].
    """
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"agreement IoU threshold must be in (0, 1], got {iou_thresh}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"agreement weight must be in [0, 1], got {weight}")
    if boxes.numel() == 0 or not per_view:
        return scores
    agreement = torch.zeros_like(scores)
    for view in per_view:
        view_boxes, view_scores = view["boxes"].reshape(-1, 4).float(), view["scores"].reshape(-1).float()
        if view_scores.numel() == 0:
            continue
        overlapping = box_iou(boxes, view_boxes) >= iou_thresh
        agreement += torch.where(overlapping, view_scores[None], torch.zeros(())).amax(1)
    return (1.0 - weight) * scores + weight * agreement / len(per_view)


def merge_multiscale(
    per_scale: Sequence[dict[str, torch.Tensor]],
    nms_thresh: float = PAPER_NMS_THRESH,
    max_det: int = PAPER_MAX_DET,
    agreement_iou: float | None = None,
) -> dict[str, torch.Tensor]:
    """Merge one image's detections from several test scales / views (already in original pixels).

    All boxes are pooled, suppressed by NMS at ``nms_thresh``; with ``agreement_iou`` the survivors
    are rescored by :func:`view_agreement_scores` (not part of the paper); the top ``max_det`` are
    kept, scores descending.
    """
    if not per_scale:
        raise ValueError("merge_multiscale needs at least one scale's detections")
    boxes = torch.cat([d["boxes"].reshape(-1, 4).float() for d in per_scale])
    scores = torch.cat([d["scores"].reshape(-1).float() for d in per_scale])
    # one class: batched_nms with a single group equals nms; kept for the multi-class future.
    keep = batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), nms_thresh)
    boxes, scores = boxes[keep], scores[keep]
    if agreement_iou is not None:
        scores = view_agreement_scores(boxes, scores, per_scale, agreement_iou)
        order = scores.argsort(descending=True, stable=True)
        boxes, scores = boxes[order], scores[order]
    return {"boxes": boxes[:max_det], "scores": scores[:max_det]}
