"""Margin binary classification loss and the DAM-weighted detection loss (paper eq. 1-3).

Where the margin acts: eq. 3 writes ``p^m = p - m`` for positives without saying whether ``p`` is the
probability or the network's raw output. We subtract ``m`` from the **logit** (``p`` = "the output of
the network"), as CosFace subtracts its margin from the score before the softmax: a positive must
then exceed the decision boundary by ``m`` to be classified with the same confidence. On the
probability, ``p - m`` leaves (0, 1) for any ``p < m``, its log is undefined and the loss could never
reach zero; on the logit the loss stays a smooth, numerically stable BCE-with-logits focal loss.
Negatives are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from acfd.config import LossConfig, MatchConfig
from acfd.detection.box_coder import BoxCoder
from acfd.detection.matcher import COMPENSATED, MATCHED, dynamic_anchor_match


def margin_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    margin: float = 0.2,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Element-wise focal loss (Lin et al., 2017) on margin-adjusted logits (paper eq. 3).

    Args:
        logits: raw classification outputs, any shape.
        targets: same shape, 1 for faces and 0 for background.
        margin: m, subtracted from the logits of positives only.
        alpha: focal-loss class balance for positives.
        gamma: focal-loss focusing parameter.

    Returns:
        The un-reduced loss, same shape as ``logits``.
    """
    targets = targets.to(logits.dtype)
    logits = logits - margin * targets
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


class MarginFocalLoss(nn.Module):
    """Thin module around :func:`margin_focal_loss` (sum reduction)."""

    def __init__(self, margin: float = 0.2, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.margin, self.alpha, self.gamma = margin, alpha, gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return margin_focal_loss(logits, targets, self.margin, self.alpha, self.gamma).sum()


class ACFDLoss:
    """Dynamic Anchor Match + the separately normalised losses of eq. 1 and 2.

    ``l_reg = 1/N1 sum_{psi1} SmoothL1 + lambda_reg/N2 sum_{psi2} SmoothL1``
    ``l_cls = 1/N1 sum_{not psi2} Focal(p^m) + lambda_cls/N2 sum_{psi2} Focal(p^m)``

    N1 and N2 count matched and compensated anchors over the whole batch (at least 1).
    Regression targets of compensated anchors are encoded relative to their anchor, like matched ones.

    Args:
        loss_cfg: margin, focal and weighting settings.
        match_cfg: T1, T2 and whether the second (dynamic) step is used.
        box_coder: the coder the head's deltas use.
    """

    def __init__(self, loss_cfg: LossConfig, match_cfg: MatchConfig, box_coder: BoxCoder) -> None:
        self.cfg = loss_cfg
        self.match_cfg = match_cfg
        self.box_coder = box_coder

    def __call__(
        self,
        cls_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        anchors: torch.Tensor,
        targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Losses for a batch.

        Args:
            cls_logits: ``(B, A)``.
            box_deltas: ``(B, A, 4)``.
            anchors: ``(A, 4)``.
            targets: per image, face boxes ``(G_i, 4)`` in input pixels (``G_i`` may be 0).

        Returns:
            ``loss`` (total), ``loss_cls``, ``loss_reg`` and the counts ``num_matched``,
            ``num_compensated``.
        """
        if cls_logits.dim() != 2 or box_deltas.dim() != 3:
            raise ValueError(
                f"expected cls_logits (B, A) and box_deltas (B, A, 4), got "
                f"{tuple(cls_logits.shape)} and {tuple(box_deltas.shape)}"
            )
        if len(targets) != cls_logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {cls_logits.shape[0]}")
        cfg = self.cfg
        labels_all, reg_targets_all = [], []
        with torch.no_grad():
            regressed = (
                self.box_coder.decode(box_deltas.detach(), anchors)
                if self.match_cfg.dynamic
                else None
            )
            for i, gt in enumerate(targets):
                gt = gt.to(anchors.device, anchors.dtype).reshape(-1, 4)
                res = dynamic_anchor_match(
                    anchors,
                    regressed[i] if regressed is not None else None,
                    gt,
                    self.match_cfg.iou_threshold,
                    self.match_cfg.regressed_iou_threshold,
                    self.match_cfg.low_quality_matches,
                )
                labels_all.append(res.labels)
                if gt.numel():
                    assigned = gt[res.matched_idxs.clamp(min=0)]
                    reg_targets_all.append(self.box_coder.encode(assigned, anchors))
                else:
                    reg_targets_all.append(torch.zeros_like(anchors))
        labels = torch.stack(labels_all)  # (B, A)
        reg_targets = torch.stack(reg_targets_all)  # (B, A, 4)
        psi1 = labels == MATCHED
        psi2 = labels == COMPENSATED
        count1, count2 = psi1.sum(), psi2.sum()
        n1 = count1.clamp(min=1).to(cls_logits.dtype)
        if cfg.compensated_norm == "n2":
            n2 = count2.clamp(min=1).to(cls_logits.dtype)
        elif cfg.compensated_norm == "n1":
            n2 = n1
        elif cfg.compensated_norm == "n1+n2":
            n1 = n2 = (count1 + count2).clamp(min=1).to(cls_logits.dtype)
        else:
            raise ValueError(f"compensated_norm must be 'n2', 'n1' or 'n1+n2', got {cfg.compensated_norm!r}")

        cls_target = (labels > 0).to(cls_logits.dtype)
        focal = margin_focal_loss(
            cls_logits.float(), cls_target, cfg.margin, cfg.focal_alpha, cfg.focal_gamma
        )
        cls_matched = focal[psi1].sum() / n1
        cls_negative = focal[labels == 0].sum() / n1
        cls_compensated = cfg.lambda_cls * focal[psi2].sum() / n2
        loss_cls = cls_matched + cls_negative + cls_compensated

        reg = F.smooth_l1_loss(
            box_deltas.float(), reg_targets, beta=cfg.smooth_l1_beta, reduction="none"
        ).sum(-1)
        reg_matched = reg[psi1].sum() / n1
        reg_compensated = cfg.lambda_reg * reg[psi2].sum() / n2
        loss_reg = reg_matched + reg_compensated
        return {
            "loss": loss_cls + cfg.reg_weight * loss_reg,
            "loss_cls": loss_cls.detach(),
            "loss_reg": loss_reg.detach(),
            # the parts, so that logs show which term moves (matched vs compensated anchors)
            "loss_cls_matched": cls_matched.detach(),
            "loss_cls_negative": cls_negative.detach(),
            "loss_cls_compensated": cls_compensated.detach(),
            "loss_reg_matched": reg_matched.detach(),
            "loss_reg_compensated": reg_compensated.detach(),
            "num_matched": count1.detach(),
            "num_compensated": count2.detach(),
        }
